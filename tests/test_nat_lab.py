"""NAT and sticky connections against the real kernel and nft (root only).

The lab's router does no NAT of its own here, and every ISP drops foreign
source addresses (BCP38): only wanhooks' masquerade gets LAN traffic out.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator

import pytest
from conftest import DaemonProc, Router, wait_for

from wanhooks.lab import Lab

pytestmark = pytest.mark.kernel
Start = Callable[..., DaemonProc]


@pytest.fixture
def lab3() -> Iterator[object]:
    with Lab(3, router_nat=False, antispoof=True) as lab:
        yield lab


CONFIG = """\
links:
  - {interface: w1, gateway: 100.64.1.1}
  - {interface: w2, gateway: 100.64.2.1, weight: 2}
  - {interface: w3, gateway: 100.64.3.1}
nat: masquerade
GROUP
"""


def test_lan_flows_leave_natted_to_each_links_own_address(router: Router) -> None:
    lab = router.lab
    router.write_config(CONFIG.replace("GROUP", ""))
    router.wanhooks("apply")
    table = lab.ns_exec(lab.router, ["nft", "list", "table", "inet", "wanhooks"]).stdout
    assert 'oifname "w2" masquerade' in table
    lab.send_udp_flows(lab.lan, None, 400, family=4)
    keys = lab.flow_keys_per_link(4)
    counts = {i: len(k) for i, k in keys.items()}
    assert sum(counts.values()) == 400 and all(n > 40 for n in counts.values()), counts
    for i, flows in keys.items():
        assert {f.saddr for f in flows} == {f"100.64.{i}.2"}  # the link's own address, nothing else
    assert sum(lab.spoofed_per_link(4).values()) == 0
    # cleanup removes wanhooks' table and leaves the lab's own tables alone
    before = set(_tables(lab))
    router.wanhooks("cleanup")
    assert set(_tables(lab)) == before - {"inet wanhooks"}


def _tables(lab: Lab) -> list[str]:
    doc = lab.nft_json(lab.router, "list", "tables")
    return [f"{t['table']['family']} {t['table']['name']}" for t in doc["nftables"] if "table" in t]


def test_sticky_connections_survive_group_changes_on_a_legacy_route(
    router: Router, daemon_factory: Start
) -> None:
    """A legacy multipath route rehashes flows when a member leaves; the mark keeps them home."""
    lab = router.lab
    router.write_config(CONFIG.replace("GROUP", "group: legacy\nsticky: true\n"))
    daemon_factory()
    route = lambda: lab.ip(lab.router, "route", "show", "table", "2000000000")  # noqa: E731
    wait_for(lambda: route().count("nexthop via") == 3, 5, "a 3-way legacy multipath route")
    echo = lab.spawn(lab.internet, "tcp-echo", "--port", "9200", "--seconds", "60")
    assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
    hold = lab.spawn(lab.lan, "tcp-hold", "--dst", "203.0.113.10", "--flows", "30", "--seconds", "8")
    assert hold.stdout is not None and hold.stdout.readline().strip() == "started"
    for _ in range(3):  # w3 leaves and returns three times: the route is rebuilt each time
        router.wanhooks("link", "drain", "w3")  # out of the route, its connections kept
        wait_for(lambda: "w3" not in route(), 3, "w3 out of the route")
        router.wanhooks("link", "enable", "w3")
        wait_for(lambda: route().count("nexthop via") == 3, 3, "w3 back")
    results = json.loads(hold.stdout.readline())
    hold.wait(10)
    echo.terminate()
    broken = [r for r in results if r["error"] is not None or r["max_gap"] >= 1.0]
    assert broken == [], broken
    marked = lab.ns_exec(lab.router, ["conntrack", "-L", "-p", "tcp", "--dport", "9200"], check=False).stdout
    assert "mark=" in marked and "mark=0 " not in marked  # every connection carries its link's mark


PINNED = "203.0.113.77"  # the internet answers the whole 203.0.113.0/24


@pytest.mark.parametrize("when_down", ["fallback", "fail"])
def test_a_pinned_destination_uses_its_link_then_falls_back_or_fails_closed(
    router: Router, when_down: str
) -> None:
    lab = router.lab
    pins = f"pins:\n  - {{to: {PINNED}, link: w2, when_down: {when_down}}}\n  - {{proto: udp, port: 9500, link: w3}}\n"
    router.write_config(CONFIG.replace("GROUP", pins))
    router.wanhooks("apply")
    lab.send_udp_flows(lab.lan, PINNED, 60, family=4)
    lab.send_udp_flows(lab.lan, None, 60, family=4, dport=9500, sport_base=30000)
    keys = lab.flow_keys_per_link(4)
    assert {k.daddr for k in keys[2]} == {PINNED} and len(keys[2]) == 60  # all pinned flows, nothing else
    assert {k.dport for k in keys[3]} == {9500} and len(keys[3]) == 60
    assert keys[1] == set()
    assert {k.saddr for k in keys[2]} == {"100.64.2.2"}  # NATed to w2's own address
    # w2 fails (its carrier is lost): the pin falls back to the balance, or refuses the traffic
    lab.reset_flows()
    lab.carrier_off(2)
    try:
        router.wanhooks("apply")
        lab.send_udp_flows(lab.lan, PINNED, 60, family=4, sport_base=21000, check=False)
        keys = lab.flow_keys_per_link(4)
        counts = {i: len(k) for i, k in keys.items()}
        if when_down == "fallback":
            assert counts[2] == 0 and counts[1] + counts[3] == 60 and min(counts[1], counts[3]) > 5, counts
            assert lab.spoofed_per_link(4) == {1: 0, 2: 0, 3: 0}
        else:
            assert counts == {1: 0, 2: 0, 3: 0}
            rules = lab.ip(lab.router, "rule", "show")
            assert f"to {PINNED} unreachable" in rules, rules
    finally:
        lab.carrier_on(2)
    router.wanhooks("apply")
    lab.reset_flows()
    lab.send_udp_flows(lab.lan, PINNED, 20, family=4, sport_base=22000)
    assert lab.flows_per_link(4) == {1: 0, 2: 20, 3: 0}  # back on its link
