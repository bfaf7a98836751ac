"""NAT and sticky connections against the real kernel and nft (root only).

The lab's router does no NAT of its own here, and every ISP drops foreign
source addresses (BCP38): only wanhooks' masquerade gets LAN traffic out.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import DaemonProc, Router, group_members, wait_for

from wanhooks.lab import SERVER6, Lab

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
    assert 'oifname "w2" meta nfproto ipv4 masquerade' in table
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


def test_the_daemon_restores_its_table_when_another_program_removes_it(
    router: Router, daemon_factory: Start
) -> None:
    """No event tells of an nftables change: the daemon re-reads its table on a timer (and
    rounds trust their last read meanwhile), so a firewall reload's `nft flush ruleset` is
    undone within FIREWALL_VERIFY_S, without anything else happening."""
    from wanhooks import constants as c

    lab = router.lab
    router.write_config(CONFIG.replace("GROUP", ""))
    daemon = daemon_factory()
    masquerade = 'oifname "w2" meta nfproto ipv4 masquerade'
    assert masquerade in lab.ns_exec(lab.router, ["nft", "list", "table", "inet", "wanhooks"]).stdout
    lab.ns_exec(lab.router, ["nft", "delete", "table", "inet", "wanhooks"])
    assert "inet wanhooks" not in _tables(lab)
    wait_for(lambda: "inet wanhooks" in _tables(lab), c.FIREWALL_VERIFY_S + 5, "the table restored")
    assert masquerade in lab.ns_exec(lab.router, ["nft", "list", "table", "inet", "wanhooks"]).stdout
    daemon.wait_log("nftables: table inet wanhooks was changed by another program")
    lab.send_udp_flows(lab.lan, None, 300, family=4)
    assert sum(lab.spoofed_per_link(4).values()) == 0  # NATed again, out of every link


def _tables(lab: Lab) -> list[str]:
    doc = lab.nft_json(lab.router, "list", "tables")
    return [f"{t['table']['family']} {t['table']['name']}" for t in doc["nftables"] if "table" in t]


@pytest.mark.parametrize("group", ["legacy", "resilient"])
def test_sticky_connections_survive_group_changes(router: Router, daemon_factory: Start, group: str) -> None:
    """A legacy multipath route rehashes every flow when a member leaves or returns; a resilient
    group moves only the leaving member's buckets (and idle ones when it returns).  The mark
    keeps every connection on its link either way, the drained link's own included."""
    lab = router.lab
    router.write_config(CONFIG.replace("GROUP", f"group: {group}\nsticky: true\n"))
    daemon_factory()

    def members() -> int:
        if group == "legacy":
            return lab.ip(lab.router, "route", "show", "table", "2000000000").count("nexthop via")
        shown = lab.ip(lab.router, "nexthop", "show", "id", "2000000000", check=False)
        return shown.split(" group ")[1].split()[0].count("/") + 1 if " group " in shown else 0

    wait_for(lambda: members() == 3, 5, "a 3-way group")
    echo = lab.spawn(lab.internet, "tcp-echo", "--port", "9200", "--seconds", "60")
    assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
    hold = lab.spawn(lab.lan, "tcp-hold", "--dst", "203.0.113.10", "--flows", "30", "--seconds", "8")
    assert hold.stdout is not None and hold.stdout.readline().strip() == "started"
    for _ in range(3):  # w3 leaves and returns three times: the group is rebuilt each time
        router.wanhooks("link", "drain", "w3")  # out of the group, its connections kept
        wait_for(lambda: members() == 2, 3, "w3 out of the group")
        router.wanhooks("link", "enable", "w3")
        wait_for(lambda: members() == 3, 3, "w3 back")
    results = json.loads(hold.stdout.readline())
    hold.wait(10)
    echo.terminate()
    broken = [r for r in results if r["error"] is not None or r["max_gap"] >= 1.0]
    assert broken == [], broken
    marked = lab.ns_exec(lab.router, ["conntrack", "-L", "-p", "tcp", "--dport", "9200"], check=False).stdout
    assert "mark=" in marked and "mark=0 " not in marked  # every connection carries its link's mark


@pytest.mark.serial  # rates measured: run alone
def test_a_returning_link_gets_its_share_of_new_connections_on_a_busy_router(
    router: Router, daemon_factory: Start
) -> None:
    """300 new connections a second keep every hash bucket busy: before #15 (idle_timer 5 s,
    no forced move) a returning link got none of them back (bench/busy_router.py).  With
    sticky connections the group forces the move after 1 s, and the established connections,
    following their marks, do not notice."""
    lab = router.lab
    router.write_config(CONFIG.replace("GROUP", "health: {enabled: false}\n"))
    daemon_factory()
    wait_for(lambda: set(group_members(lab)) == {"w1", "w2", "w3"}, 5, "a 3-way group")
    echo = lab.spawn(lab.internet, "tcp-echo", "--port", "9200", "--seconds", "60")
    assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
    churn = lab.spawn(lab.lan, "udp-rate", "--dst", "203.0.113.10", "--rate", "300", "--seconds", "25")
    assert churn.stdout is not None and churn.stdout.readline().strip() == "started"
    time.sleep(4)  # every bucket busy
    lab.carrier_off(3)
    wait_for(lambda: "w3" not in group_members(lab), 3, "w3 out of the group")
    hold = lab.spawn(lab.lan, "tcp-hold", "--dst", "203.0.113.10", "--flows", "40", "--seconds", "12")
    assert hold.stdout is not None and hold.stdout.readline().strip() == "started"
    time.sleep(2)
    lab.carrier_on(3)
    wait_for(lambda: "w3" in group_members(lab), 3, "w3 back in the group")
    time.sleep(4)
    before = lab.churn_packets()
    time.sleep(3)
    after = lab.churn_packets()
    moved = {i: after[i] - before[i] for i in after}
    assert sum(moved.values()) > 600, moved  # the churn really ran at about 300 a second
    assert 0.8 * 0.25 <= moved[3] / sum(moved.values()) <= 0.35, moved  # weight 1 of 4
    results = json.loads(hold.stdout.readline())
    broken = [r for r in results if r["error"] is not None or r["max_gap"] >= 1.0]
    assert len(results) == 40 and broken == [], broken
    for proc in (hold, churn, echo):
        proc.terminate()


PINNED = "203.0.113.77"  # the internet answers the whole 203.0.113.0/24


@pytest.mark.parametrize("when_down", ["fallback", "fail"])
def test_a_pinned_destination_uses_its_link_then_falls_back_or_fails_closed(
    router: Router, when_down: str
) -> None:
    lab = router.lab
    pins = (
        f"pins:\n  - {{to: {PINNED}, link: w2, when_down: {when_down}}}\n"
        "  - {proto: udp, port: 9500, link: w3}\n"
    )
    router.write_config(CONFIG.replace("GROUP", pins))
    router.wanhooks("apply")
    assert "nothing to change" in router.wanhooks("apply").stdout  # pin rules read back as planned
    lab.send_udp_flows(lab.lan, PINNED, 60, family=4)
    lab.send_udp_flows(lab.lan, None, 60, family=4, dport=9500, sport_base=30000)
    keys = lab.flow_keys_per_link(4)
    assert {k.daddr for k in keys[2]} == {PINNED} and len(keys[2]) == 60  # all pinned flows, nothing else
    assert {k.dport for k in keys[3]} == {9500} and len(keys[3]) == 60
    assert keys[1] == set()
    assert {k.saddr for k in keys[2]} == {"100.64.2.2"}  # NATed to w2's own address
    status = router.wanhooks("status").stdout
    assert f"pin (line 7) to {PINNED}/32 -> w2: now ipv4: w2" in status, status
    assert "nftables (inet wanhooks): NAT out of w1, w2, w3; sticky connections" in status
    # w2 fails (its carrier is lost): the pin falls back to the balance, or refuses the traffic
    lab.reset_flows()
    lab.carrier_off(2)
    try:
        router.wanhooks("apply")
        assert "nothing to change" in router.wanhooks("apply").stdout  # an unreachable rule too
        lab.send_udp_flows(lab.lan, PINNED, 60, family=4, sport_base=21000, check=False)
        keys = lab.flow_keys_per_link(4)
        counts = {i: len(k) for i, k in keys.items()}
        pin = json.loads(router.wanhooks("status", "--json").stdout)["pins"][0]
        assert pin["now"] == {"ipv4": "balance" if when_down == "fallback" else "refused"}
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


def test_each_delegated_prefix_leaves_by_its_isp_and_nat66_balances(router: Router) -> None:
    """BCP38 everywhere: a PD source that left by another ISP would be dropped and counted."""
    lab = router.lab
    clients = {i: lab.delegate(i) for i in (1, 2)}
    links = (
        "".join(
            f"  - {{interface: w{i}, gateway: [100.64.{i}.1, 'fe80::1'], delegated: 'fd00:{i}:100::/56'}}\n"
            for i in (1, 2)
        )
        + "  - {interface: w3, gateway: [100.64.3.1, 'fe80::1']}\n"
    )
    router.write_config(f"links:\n{links}nat: masquerade\n")
    router.wanhooks("apply")
    for i, client in clients.items():
        lab.send_udp_flows(lab.lan, None, 100, family=6, bind=client, sport_base=20000 + 1000 * i)
    keys = lab.flow_keys_per_link(6)
    assert {i: {k.saddr for k in keys[i]} for i in (1, 2, 3)} == {1: {clients[1]}, 2: {clients[2]}, 3: set()}
    assert {i: len(keys[i]) for i in (1, 2)} == {1: 100, 2: 100}
    assert sum(lab.spoofed_per_link(6).values()) == 0
    # without NAT66, a LAN source from no ISP's prefix (the ULA fd00:aa::/64) dies at BCP38
    table = lab.ns_exec(lab.router, ["nft", "list", "table", "inet", "wanhooks"]).stdout
    assert "nfproto ipv6" not in table
    # NAT66 opted in: the ULA clients are balanced, each flow translated to its link's address;
    # a delegated source that happens to leave by its own ISP keeps its address
    router.write_config(f"links:\n{links}nat: masquerade\nnat66: true\n")
    router.wanhooks("apply")
    lab.reset_flows()
    lab.send_udp_flows(lab.lan, None, 300, family=6, bind=lab.lan_addr(1, 6), sport_base=30000)
    lab.send_udp_flows(lab.lan, None, 300, family=6, bind=clients[1], sport_base=40000)
    keys = lab.flow_keys_per_link(6)
    counts = {i: len(k) for i, k in keys.items()}
    assert sum(counts.values()) == 600 and min(counts.values()) > 100, counts
    own = {i: lab.link(i).router6 for i in (1, 2, 3)}
    assert {k.saddr for k in keys[1]} == {own[1], clients[1]}
    assert {k.saddr for k in keys[2]} == {own[2]} and {k.saddr for k in keys[3]} == {own[3]}
    assert sum(lab.spoofed_per_link(6).values()) == 0


def ifindex(lab: Lab, name: str) -> int:
    return int(lab.ip_json(lab.router, "link", "show", "dev", name)[0]["ifindex"])


def test_a_wan_with_only_a_link_local_address_carries_its_delegated_prefix(router: Router) -> None:
    lab = router.lab
    client = lab.delegate(3)
    a = lab.link(3)
    lab.r(["ip", "addr", "del", f"{a.router6}/64", "dev", "w3"])
    ll = next(
        info["local"]
        for info in lab.ip_json(lab.router, "-6", "addr", "show", "dev", "w3")[0]["addr_info"]
        if info["scope"] == "link"
    )
    lab.ns_exec(lab.isp(3), ["ip", "route", "replace", a.delegated6, "via", ll, "dev", "c"])
    links = "".join(f"  - {{interface: w{i}, gateway: [100.64.{i}.1, 'fe80::1']}}\n" for i in (1, 2))
    links += "  - {interface: w3, gateway: [100.64.3.1, 'fe80::1'], delegated: 'fd00:3:100::/56'}\n"
    router.write_config(f"links:\n{links}nat: masquerade\n")
    router.wanhooks("apply")
    w3 = next(
        link
        for link in json.loads(router.wanhooks("status", "--json").stdout)["links"]
        if link["name"] == "w3"
    )
    assert not w3["ipv6"]["in_balance"] and "delegated prefix only" in w3["ipv6"]["reason"], w3
    assert f"from {a.delegated6} lookup {2000000000 + ifindex(lab, 'w3')}" in lab.ip(lab.router, "-6", "rule")
    lab.send_udp_flows(lab.lan, None, 50, family=6, bind=client)
    assert lab.flows_per_link(6) == {1: 0, 2: 0, 3: 50}
    assert lab.ping(lab.lan, SERVER6, bind=client)  # and the answers come back
    assert sum(lab.spoofed_per_link(6).values()) == 0


PORT_FORWARD = """\
table ip adminfwd {
  chain pre {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "w2" tcp dport 8080 dnat to 100.64.100.2:9300
  }
}
"""


@pytest.mark.parametrize("sticky", [True, False])
def test_a_port_forward_on_link_2_answers_by_link_2(router: Router, sticky: bool) -> None:
    """The admin's own DNAT (a table wanhooks must leave alone) sends link 2's port 8080 to a LAN
    server.  The replies would be balanced over all links, and die at the other ISPs' BCP38 with
    link 2's address; the connection's mark sends them back by link 2."""
    lab = router.lab
    a = lab.link(2)
    lab.ns_exec(lab.router, ["nft", "-f", "-"], input=PORT_FORWARD)
    lab.ns_exec(lab.internet, ["ip", "route", "add", a.prefix4, "via", a.isp_up4])
    router.write_config(CONFIG.replace("GROUP", f"sticky: {str(sticky).lower()}\n"))
    router.wanhooks("apply")
    echo = lab.spawn(lab.lan, "tcp-echo", "--port", "9300", "--seconds", "30")
    assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
    hold = lab.traffic(
        lab.internet, "tcp-hold", "--dst", a.router4, "--port", "8080", "--flows", "16", "--seconds", "1"
    )
    echo.terminate()
    results = json.loads(hold.stdout.splitlines()[-1])  # after its "started" line
    broken = [r for r in results if r["error"] is not None]
    if sticky:
        assert broken == [], broken
        assert sum(lab.spoofed_per_link(4).values()) == 0
        assert "table ip adminfwd" in lab.ns_exec(lab.router, ["nft", "list", "tables"]).stdout
    else:  # the contrast that shows the mark is what answers by link 2
        assert broken and sum(lab.spoofed_per_link(4).values()) > 0, results
