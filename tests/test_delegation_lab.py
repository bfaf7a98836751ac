"""Delegated prefixes learned from the LAN's addresses, not typed: the kernel's part (root).

A LAN interface named by `delegated_to:` holds dynamic addresses numbered from
its ISP's delegation, as any DHCPv6-PD client leaves them; the daemon learns
their prefixes, routes each by its ISP (BCP38 at every ISP counts a foreign
source), follows a renumbering, and keeps an old prefix's rule as long as its
hosts' addresses are valid.  The real managers' part: test_pd_managers_lab.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import DaemonProc, Router, prefix_rules, wait_for

from wanhooks import constants as c
from wanhooks.lab import Lab

pytestmark = pytest.mark.kernel


@pytest.fixture
def lab3() -> Iterator[object]:
    with Lab(3, router_nat=False, antispoof=True) as lab:  # routed IPv6, BCP38 at every ISP
        yield lab


def ifindex(lab: Lab, name: str) -> int:
    return int(lab.ip_json(lab.router, "link", "show", "dev", name)[0]["ifindex"])


def on_lan(lab: Lab) -> dict[str, str]:
    """wanhooks' on-link routes for the learned prefixes: prefix -> LAN interface."""
    routes = lab.ip_json(lab.router, "-6", "route", "show", "table", str(c.TABLE_LAN_PREFIXES))
    return {r["dst"]: r["dev"] for r in routes}


def numbered(lab: Lab, ns: str, dev: str, address: str, valid: int, preferred: int) -> None:
    """A dynamic address, as a DHCPv6-PD client (router) or SLAAC (host) leaves it."""
    lab.ns_exec(ns, ["ip", "addr", "add", f"{address}/64", "dev", dev, "nodad",
                     "valid_lft", str(valid), "preferred_lft", str(preferred)])  # fmt: skip


def test_prefixes_numbered_on_a_lan_interface_leave_by_their_isp_and_follow_a_renumbering(
    router: Router, daemon_factory: Callable[..., DaemonProc]
) -> None:
    lab = router.lab
    w1, w2 = (c.link_table(ifindex(lab, f"w{i}")) for i in (1, 2))
    configured = lab.delegate(2)  # ISP 2's prefix typed in the config, forever: one beside the other
    router.write_config(
        "links:\n"
        "  - {interface: w1, gateway: [100.64.1.1, 'fe80::1'], delegated_to: lan0}\n"
        "  - {interface: w2, gateway: [100.64.2.1, 'fe80::1'], delegated: 'fd00:2:100::/56'}\n"
        "  - {interface: w3, gateway: [100.64.3.1, 'fe80::1']}\n"
    )
    daemon = daemon_factory()
    assert prefix_rules(lab) == {"fd00:2:100::/56": w2}  # lan0's static ULA is nobody's delegation
    # ISP 1 delegates fd00:1:100::/56; the router numbers lan0 from it, a host from the RA
    started = time.monotonic()
    numbered(lab, lab.router, "lan0", "fd00:1:100:1::1", valid=15, preferred=10)
    old_end = time.monotonic() + 15
    wait_for(lambda: prefix_rules(lab).get("fd00:1:100:1::/64") == w1, 2, "the learned prefix's rule")
    learned_in = time.monotonic() - started
    numbered(lab, lab.lan, "eth0", "fd00:1:100:1::2", valid=15, preferred=10)
    daemon.wait_log("delegated prefix fd00:1:100:1::/64 learned: lan0 is numbered from w1's delegation")
    for sport, client in ((20000, "fd00:1:100:1::2"), (21000, configured)):
        lab.send_udp_flows(lab.lan, None, 40, family=6, bind=client, sport_base=sport)
    keys = lab.flow_keys_per_link(6)
    assert {i: {k.saddr for k in keys[i]} for i in (1, 2, 3)} == {
        1: {"fd00:1:100:1::2"}, 2: {configured}, 3: set()
    }  # fmt: skip
    assert sum(lab.spoofed_per_link(6).values()) == 0

    # the ISP renumbers: the router's old address goes at once, the host's stays valid, deprecated
    lab.ns_exec(lab.router, ["ip", "addr", "del", "fd00:1:100:1::1/64", "dev", "lan0"])
    started = time.monotonic()
    numbered(lab, lab.router, "lan0", "fd00:1:100:2::1", valid=60, preferred=50)
    wait_for(lambda: prefix_rules(lab).get("fd00:1:100:2::/64") == w1, 2, "the new prefix's rule")
    moved_in = time.monotonic() - started
    numbered(lab, lab.lan, "eth0", "fd00:1:100:2::2", valid=60, preferred=50)
    assert prefix_rules(lab).get("fd00:1:100:1::/64") == w1  # kept for the host's old address
    # and on-link on lan0 still (the kernel took the prefix route with the address): answers reach it
    assert on_lan(lab) == {"fd00:1:100:1::/64": "lan0", "fd00:1:100:2::/64": "lan0"}
    daemon.wait_log("delegated prefix fd00:1:100:1::/64 left lan0: kept on w1")
    doc = json.loads(router.wanhooks("status", "--json").stdout)
    delegated = {link["name"]: link["delegated"] for link in doc["links"]}
    assert [(p["prefix"], p["source"], p["present"]) for p in delegated["w2"]] == [
        ("fd00:2:100::/56", "config", True)
    ]
    mine = {p["prefix"]: p for p in delegated["w1"]}
    assert (mine["fd00:1:100:2::/64"]["lan"], mine["fd00:1:100:2::/64"]["source"]) == ("lan0", "delegated_to")
    assert 40 < mine["fd00:1:100:2::/64"]["valid_s"] <= 60
    assert not mine["fd00:1:100:1::/64"]["present"] and 0 < mine["fd00:1:100:1::/64"]["valid_s"] <= 15
    text = router.wanhooks("status").stdout
    assert "IPv6 delegated to w1: fd00:1:100:2::/64 on lan0 (delegated_to; preferred " in text, text
    assert "; fd00:1:100:1::/64 (delegated_to; gone from lan0, kept for its hosts " in text
    lab.reset_flows()
    lab.send_udp_flows(lab.lan, None, 20, family=6, bind="fd00:1:100:1::2", sport_base=22000)  # still valid
    lab.send_udp_flows(lab.lan, None, 20, family=6, bind="fd00:1:100:2::2", sport_base=23000)
    keys = lab.flow_keys_per_link(6)
    assert {k.saddr for k in keys[1]} == {"fd00:1:100:1::2", "fd00:1:100:2::2"} and not keys[2] | keys[3]
    # the daemon restarts (an upgrade) while the old prefix is kept: the new one keeps it too
    daemon.stop()
    daemon = daemon_factory()
    assert "delegated prefix fd00:1:100:1::/64 (w1's) from the last run: valid" in daemon.text()
    assert prefix_rules(lab) == {"fd00:1:100:1::/64": w1, "fd00:1:100:2::/64": w1, "fd00:2:100::/56": w2}
    # its hosts' addresses expire: so does the rule, and nothing stale stays
    wait_for(lambda: "fd00:1:100:1::/64" not in prefix_rules(lab), max(0.0, old_end - time.monotonic()) + 3,
             "the old prefix's rule gone when its lifetime ended")  # fmt: skip
    late = time.monotonic() - old_end
    print(
        f"\nrule for a learned prefix in {learned_in * 1000:.0f} ms (ip addr add to ip rule seen), a new "
        f"prefix's in {moved_in * 1000:.0f} ms; the old one's gone {late:+.2f} s after its valid lifetime"
    )
    daemon.wait_log("delegated prefix fd00:1:100:1::/64 (w1's) expired: its rule is removed")
    assert prefix_rules(lab) == {"fd00:1:100:2::/64": w1, "fd00:2:100::/56": w2}
    assert on_lan(lab) == {"fd00:1:100:2::/64": "lan0"}
    assert sum(lab.spoofed_per_link(6).values()) == 0
