"""A pair of routers (wanhooks/ha.py, `wanhooks vrrp`): keepalived's check and notify, pure."""

from __future__ import annotations

import ipaddress
from dataclasses import replace
from pathlib import Path
from typing import Any

from fakes import lab_config, lab_kernel

from wanhooks import ha
from wanhooks.events import VrrpChanged
from wanhooks.model import Address
from wanhooks.observe.status import WAITING, render_status, status_json
from wanhooks.plan.planner import plan, resolve_group_kind
from wanhooks.reconcile.diff import diff
from wanhooks.service import requests

VIP = ipaddress.IPv4Address("100.64.1.10")


def doc_of(*, vip_here: bool, w2_tier: int = 1) -> dict[str, Any]:
    """The status document of a router whose w1 NATs to a shared address."""
    config = lab_config((1, 1, 1))
    w1, w2, w3 = config.links
    config = replace(config, links=(replace(w1, nat_address=VIP), replace(w2, tier=w2_tier), w3))
    kernel = lab_kernel()
    if vip_here:
        link = next(link for link in kernel.links if link.name == "w1")
        kernel.set_link(replace(link, addresses=(*link.addresses, Address(4, VIP, 24, secondary=True))))
    observed = kernel.observe()
    desired = plan(config, observed)
    owned = kernel.dump_owned()
    kind, _ = resolve_group_kind(config, observed)
    return status_json(config, observed, desired, owned, kind, diff(desired, owned))


def test_a_link_waiting_for_its_shared_address_is_usable_for_the_check() -> None:
    backup = doc_of(vip_here=False)
    w1 = next(link for link in backup["links"] if link["name"] == "w1")
    assert w1["ipv4"]["out"] == WAITING and not w1["ipv4"]["eligible"]
    # w1 alone, IPv4 only: usable here because the other router holds its address
    alone = dict(backup, links=[dict(w1, ipv6=dict(w1["ipv6"], eligible=False, out="no_address"))])
    usable, said = ha.usable_here(alone)
    assert usable and said == "usable tier-1 link(s): w1"
    # probed and failed, it is not
    alone["links"][0]["ipv4"] = dict(w1["ipv4"], health={"state": "down"})
    assert not ha.usable_here(alone)[0]


def test_the_check_fails_without_a_healthy_link_of_the_best_tier() -> None:
    doc = doc_of(vip_here=True, w2_tier=2)
    for link in doc["links"]:  # every tier-1 link's probes fail; w2 (tier 2) answers
        health = {"state": "up" if link["name"] == "w2" else "down"}
        for f in (4, 6):
            link[f"ipv{f}"]["health"] = health
    usable, said = ha.usable_here(doc)
    assert not usable and "no usable tier-1 link" in said and "w1" in said and "w3" in said
    assert ha.usable_here({"links": []}) == (False, "no managed link is present")


def test_conntrackds_steps_are_its_primary_backup_scripts() -> None:
    master = ha.conntrackd_commands("MASTER", "/usr/sbin/conntrackd", "/etc/conntrackd/conntrackd.conf")
    assert [argv[-1] for argv, _why in master] == ["-c", "-f", "-R", "-B"]
    assert master[0][0][:3] == ["/usr/sbin/conntrackd", "-C", "/etc/conntrackd/conntrackd.conf"]
    assert [argv for argv, _ in ha.conntrackd_commands("BACKUP", "conntrackd", None)] == [
        ["conntrackd", "-t"],
        ["conntrackd", "-n"],
    ]
    assert [argv for argv, _ in ha.conntrackd_commands("FAULT", "conntrackd", None)] == [["conntrackd", "-t"]]
    assert ha.conntrackd_commands("STOP", "conntrackd", None) == []


def test_keepalived_notices_are_checked() -> None:
    assert requests.vrrp_notice({"instance": "LAN", "state": "MASTER"}) == VrrpChanged("LAN", "MASTER")
    for bad in ({"instance": "LAN", "state": "BOSS"}, {"instance": "a b\n", "state": "MASTER"}, {}):
        refused = requests.vrrp_notice(bad)
        assert isinstance(refused, requests.Refused), bad


def test_status_shows_the_role_and_the_links_waiting_for_their_address() -> None:
    doc = doc_of(vip_here=False)
    doc["daemon"] = {
        "pid": 1, "rounds": 3, "disabled": [], "draining": [], "held_gateways": [],
    }  # fmt: skip
    doc["vrrp"] = [{"instance": "LAN", "state": "BACKUP", "since_s": 12.0}]
    text = render_status(doc)
    assert "vrrp: this router is BACKUP in LAN (12s); waiting for their shared address: w1" in text
    assert "waiting for its shared address 100.64.1.10 (the other router holds it)" in text


def test_waiting_for_a_shared_address_is_the_last_gate() -> None:
    """On the backup a lower tier does not take over the links that wait for their shared
    address, and a link out for another reason (the admin's) says that reason."""
    from wanhooks.model import Overrides
    from wanhooks.plan.verdicts import Out

    config = lab_config((1, 1, 1))
    w1, w2, w3 = config.links
    vip2 = ipaddress.IPv4Address("100.64.2.10")
    config = replace(
        config, links=(replace(w1, nat_address=VIP), replace(w2, nat_address=vip2), replace(w3, tier=2))
    )
    desired = plan(config, lab_kernel().observe(), Overrides(disabled=frozenset({"w1"})))
    reasons = {lp.name: lp.reasons[4] for lp in desired.links}
    assert {name: r.out if r else None for name, r in reasons.items()} == {
        "w1": Out.DISABLED,
        "w2": Out.SHARED_ADDRESS_ABSENT,
        "w3": Out.STANDBY,  # the tier-1 link waiting for its address counts as present
    }


def test_conntrackd_missing_or_failing_is_said_not_hidden(tmp_path: Path) -> None:
    """vrrp notify goes on to tell the daemon; what conntrackd did not do is said, a line each."""
    assert ha.run_conntrackd("MASTER", str(tmp_path / "no-conntrackd"), None)[0].startswith("no ")
    fails = tmp_path / "conntrackd"
    fails.write_text("#!/bin/sh\necho \"cannot reach the daemon: $*\" >&2\nexit 1\n")
    fails.chmod(0o755)
    said = ha.run_conntrackd("BACKUP", str(fails), "/etc/c.conf")
    assert len(said) == 2 and "-t" in said[0] and "cannot reach the daemon" in said[1], said
    assert ha.run_conntrackd("STOP", str(fails), None) == []
