"""wanhooks against the real kernel, in a lab of network namespaces (root only).

Each test builds its own lab (router, 3 ISPs, internet, LAN), runs the
`wanhooks` CLI inside the router namespace and checks what the kernel holds
and where packets actually leave (counted at each ISP).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Router

from wanhooks import constants as c
from wanhooks.lab import SERVER4, SERVER6, Lab, link_addrs, parallel_map

pytestmark = pytest.mark.kernel

WEIGHTS_121 = """\
links:
  - interface: w1
    weight: 1
    gateway: [100.64.1.1, "fe80::1"]
  - interface: w2
    weight: 2
    gateway: [100.64.2.1, "fe80::1"]
  - interface: w3
    weight: 1
    gateway: [100.64.3.1, "fe80::1"]
balance: {balance}
group: {group}
"""


def config(balance: str = "per-connection", group: str = "auto") -> str:
    return WEIGHTS_121.format(balance=balance, group=group)


def shares(counts: dict[int, int]) -> dict[int, float]:
    total = sum(counts.values())
    assert total > 0, counts
    return {i: 100.0 * n / total for i, n in counts.items()}


def assert_split(counts: dict[int, int], expected: dict[int, float], tolerance: float = 5.0) -> None:
    got = shares(counts)
    for i, want in expected.items():
        assert abs(got[i] - want) <= tolerance, f"link {i}: {got[i]:.1f}% vs {want}% ({counts})"


# --------------------------------------------------------------------------
# Balancing
# --------------------------------------------------------------------------


@pytest.mark.parametrize("family", [4, 6])
def test_split_by_weight_from_the_router_and_from_the_lan(router: Router, family: int) -> None:
    lab = router.lab
    router.write_config(config())
    router.wanhooks("apply")
    server = SERVER4 if family == 4 else SERVER6
    lab.send_udp_flows(lab.router, server, 3000)
    local = lab.flows_per_link(family)
    assert_split(local, {1: 25, 2: 50, 3: 25})
    assert sum(local.values()) == 3000
    lab.reset_flows()
    lab.send_udp_flows(lab.lan, server, 3000, sport_base=30000)
    forwarded = lab.flows_per_link(family)
    assert_split(forwarded, {1: 25, 2: 50, 3: 25})
    assert sum(forwarded.values()) == 3000


@pytest.mark.parametrize("family", [4, 6])
def test_a_socket_bound_to_a_link_address_leaves_by_that_link(router: Router, family: int) -> None:
    lab = router.lab
    router.write_config(config())
    router.wanhooks("apply")
    for i in (1, 2, 3):
        lab.reset_flows()
        lab.send_udp_flows(lab.router, None, 300, family=family, bind=link_addrs(i).router(family))
        assert lab.flows_per_link(family) == {j: (300 if j == i else 0) for j in (1, 2, 3)}


def test_per_destination_keeps_each_destination_on_one_link(router: Router) -> None:
    lab = router.lab
    router.write_config(config(balance="per-destination"))
    router.wanhooks("apply")
    # 1200 flows to 240 destinations: every destination's 5 flows share one link
    lab.send_udp_flows(lab.router, SERVER4, 1200, dsts=240)
    links_of: dict[str, set[int]] = {}
    for i, keys in lab.flow_keys_per_link(4).items():
        for key in keys:
            links_of.setdefault(key.daddr, set()).add(i)
    assert len(links_of) == 240
    assert all(len(links) == 1 for links in links_of.values())
    per_link = {i: sum(1 for s in links_of.values() if i in s) for i in (1, 2, 3)}
    assert_split(per_link, {1: 25, 2: 50, 3: 25}, tolerance=10)  # 240 destinations: coarser


def test_per_client_keeps_each_lan_client_on_one_link(tmp_path: Path) -> None:
    with Lab(3, lan_clients=60) as lab:
        r = Router(lab, tmp_path)
        r.write_config(config(balance="per-client"))
        r.wanhooks("apply")
        lab.reset_flows()

        def send(k: int) -> None:  # client k's ten flows leave from its own ports: 20000 + 10 k ..
            lab.send_udp_flows(lab.lan, SERVER4, 10, bind=lab.lan_addr(k), sport_base=20000 + 10 * k)

        parallel_map(send, range(1, 61))
        links_of_client: dict[int, set[int]] = {k: set() for k in range(1, 61)}
        for i, keys in lab.flow_keys_per_link(4).items():
            for key in keys:
                links_of_client[(key.sport - 20000) // 10].add(i)
        assert all(len(links) == 1 for links in links_of_client.values()), links_of_client
        clients_per_link = {i: sum(1 for s in links_of_client.values() if i in s) for i in (1, 2, 3)}
        assert all(n > 0 for n in clients_per_link.values()), clients_per_link
        assert clients_per_link[2] > max(clients_per_link[1], clients_per_link[3]) * 0.9


# --------------------------------------------------------------------------
# Flows staying put when the group changes
# --------------------------------------------------------------------------


def egress_by_sport(lab: Lab) -> dict[int, int]:
    """Source port -> link, for the router's own flows (sports are reproducible)."""
    out: dict[int, int] = {}
    for i, keys in lab.flow_keys_per_link(4).items():
        for key in keys:
            out[int(key.sport)] = i
    return out


def moved_flows(router: Router, group: str) -> tuple[int, int, int]:
    """(flows on surviving links, of them moved when link 1 left, moved when it came back).

    Link 1, not 2: with hash-threshold the middle member leaving moves no
    survivor (the bounds on both sides stay); an edge member shows the cost.
    """
    lab = router.lab
    # Every flow here is under a minute old: with an idle timer of a minute none is idle, so
    # this shows what the group does to flows in use (an idle one may move: that is the
    # timer's job, and tests/test_nat_lab.py's busy-router test measures it).
    timers = "resilient: {idle_timer: 60, unbalanced_timer: 0}\n" if group == "resilient" else ""
    router.write_config(config(group=group) + timers)
    router.wanhooks("apply")
    lab.send_udp_flows(lab.router, SERVER4, 2000)
    before = egress_by_sport(lab)
    survivors = {p for p, i in before.items() if i != 1}
    lab.carrier_off(1)
    router.wanhooks("apply")
    lab.reset_flows()
    lab.send_udp_flows(lab.router, SERVER4, 2000)
    during = egress_by_sport(lab)
    assert not any(i == 1 for i in during.values())
    moved_leave = sum(1 for p in survivors if during[p] != before[p])
    lab.carrier_on(1)
    router.wanhooks("apply")
    lab.reset_flows()
    lab.send_udp_flows(lab.router, SERVER4, 2000)
    after = egress_by_sport(lab)
    moved_return = sum(1 for p in survivors if after[p] != during[p])
    return len(survivors), moved_leave, moved_return


def test_resilient_group_moves_no_surviving_flow(router: Router) -> None:
    survivors, moved_leave, moved_return = moved_flows(router, "resilient")
    assert survivors > 900
    assert moved_leave == 0
    assert moved_return == 0


def test_legacy_multipath_moves_surviving_flows(router: Router, capsys: pytest.CaptureFixture[str]) -> None:
    survivors, moved_leave, moved_return = moved_flows(router, "legacy")
    with capsys.disabled():
        print(
            f"\n  legacy multipath: of {survivors} flows on surviving links, {moved_leave} "
            f"({100 * moved_leave / survivors:.1f}%) moved when link 1 left, "
            f"{moved_return} ({100 * moved_return / survivors:.1f}%) when it returned"
        )
    assert moved_leave > 0  # the figure the resilient group brings to zero


# --------------------------------------------------------------------------
# The kernel deletes; the next apply restores
# --------------------------------------------------------------------------


def owned_text(router: Router) -> str:
    lab, r = router.lab, router.lab.router
    return "\n".join(
        [
            lab.ip(r, "nexthop", "show", "protocol", str(c.RTPROT_WANHOOKS)),
            lab.ip(r, "-4", "route", "show", "table", "all", "proto", str(c.RTPROT_WANHOOKS)),
            lab.ip(r, "-6", "route", "show", "table", "all", "proto", str(c.RTPROT_WANHOOKS)),
        ]
    )


@pytest.mark.parametrize("fault", ["admin", "carrier"])
def test_routes_the_kernel_deleted_come_back_after_the_next_apply(router: Router, fault: str) -> None:
    lab = router.lab
    router.write_config(config())
    router.wanhooks("apply")
    full = owned_text(router)
    down, up = (lab.link_down, lab.link_up) if fault == "admin" else (lab.carrier_off, lab.carrier_on)
    down(2)
    assert "dev w2" not in lab.ip(lab.router, "nexthop", "show")  # the kernel dropped them
    router.wanhooks("apply")
    up(2)
    router.wanhooks("apply")
    assert owned_text(router) == full
    lab.reset_flows()
    lab.send_udp_flows(lab.router, SERVER4, 600)
    assert lab.flows_per_link(4)[2] > 0


# --------------------------------------------------------------------------
# Gateways learned from the main table (as NetworkManager/networkd put them)
# --------------------------------------------------------------------------


def test_gateways_learned_from_main_table_defaults(router: Router) -> None:
    lab = router.lab
    router.write_config("links:\n  - interface: w1\n  - interface: w2\n  - interface: w3\n")
    lab.set_main_default(1, 4)
    lab.set_main_default(1, 6)
    lab.set_main_default(2, 4)
    router.wanhooks("apply")
    nexthops = lab.ip(lab.router, "nexthop", "show")
    assert re.search(r"via 100\.64\.1\.1 dev w1 .*proto 87", nexthops)
    assert re.search(r"via fe80::1 dev w1 .*proto 87", nexthops)
    assert re.search(r"via 100\.64\.2\.1 dev w2 .*proto 87", nexthops)
    assert "dev w3" not in nexthops  # no gateway anywhere for w3
    status = json.loads(router.wanhooks("status", "--json").stdout)
    w3 = next(link for link in status["links"] if link["name"] == "w3")
    assert "no IPv4 gateway" in w3["ipv4"]["reason"]
    # the manager's DHCP gives w3 a gateway later: the next apply follows
    lab.set_main_default(3, 4)
    router.wanhooks("apply")
    assert re.search(r"via 100\.64\.3\.1 dev w3", lab.ip(lab.router, "nexthop", "show"))
    lab.reset_flows()
    lab.send_udp_flows(lab.router, SERVER6, 200)
    assert lab.flows_per_link(6) == {1: 200, 2: 0, 3: 0}


def test_a_full_tunnel_vpn_default_in_main_keeps_traffic_in_the_vpn(
    router: Router, hold_tun: Callable[[str], object]
) -> None:
    lab = router.lab
    router.write_config(config())
    router.wanhooks("apply")
    hold_tun("tun0")  # the VPN client
    lab.r(["ip", "addr", "add", "100.80.0.2/32", "dev", "tun0"])
    lab.r(["ip", "link", "set", "tun0", "up"])
    lab.r(["ip", "route", "add", "default", "dev", "tun0", "metric", "50"])
    out = router.wanhooks("apply").stdout
    assert "not a managed link" in out
    rules = lab.ip(lab.router, "-4", "rule", "show")
    assert f"lookup {c.TABLE_BALANCE}" not in rules
    assert "dev tun0" in lab.ip(lab.router, "-4", "route", "get", SERVER4)
    # bound sockets still leave by their link (probes keep working)
    assert "dev w1" in lab.ip(lab.router, "-4", "route", "get", SERVER4, "from", "100.64.1.2")
    lab.r(["ip", "route", "del", "default", "dev", "tun0"])
    router.wanhooks("apply")
    assert f"lookup {c.TABLE_BALANCE}" in lab.ip(lab.router, "-4", "rule", "show")


def test_a_wg_quick_style_tunnel_in_its_own_table_keeps_traffic_in_the_vpn(
    router: Router, hold_tun: Callable[[str], object]
) -> None:
    lab = router.lab
    router.write_config(config())
    lab.set_main_default(1, 4)  # the network manager's own default, which the tunnel rides on
    router.wanhooks("apply")
    hold_tun("wg0")
    for argv in (
        ["ip", "addr", "add", "100.80.0.2/32", "dev", "wg0"],
        ["ip", "link", "set", "wg0", "up"],
        ["ip", "route", "add", "default", "dev", "wg0", "table", "51820"],
        ["ip", "rule", "add", "not", "fwmark", "0xca6c", "table", "51820", "pref", "32765"],
        ["ip", "rule", "add", "table", "main", "suppress_prefixlength", "0", "pref", "32764"],
    ):
        lab.r(argv)
    out = router.wanhooks("apply").stdout
    assert "table 51820" in out and "full-tunnel" in out
    assert "dev wg0" in lab.ip(lab.router, "-4", "route", "get", SERVER4)
    # the tunnel's own packets (marked) still leave by a real link
    assert "dev w1" in lab.ip(lab.router, "-4", "route", "get", SERVER4, "mark", "0xca6c")
    lab.r(["ip", "rule", "del", "pref", "32765"])
    router.wanhooks("apply")
    assert "dev wg0" not in lab.ip(lab.router, "-4", "route", "get", SERVER4)


# --------------------------------------------------------------------------
# Idempotence, cleanup, foreign state, rp_filter
# --------------------------------------------------------------------------


def test_100_applies_leave_byte_identical_state(router: Router) -> None:
    lab = router.lab
    router.write_config(config())
    router.wanhooks("apply")
    first = router.snapshot()
    args = ["-c", str(router.config), "--run-dir", str(router.run_dir), "apply"]
    script = f"from wanhooks.cli import main\nfor _ in range(100):\n    assert main({args!r}) == 0\n"
    proc = lab.ns_exec(lab.router, [sys.executable, "-c", script], check=False, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("nothing to change") == 100
    assert router.snapshot() == first


FOREIGN = [
    ["ip", "rule", "add", "pref", "20150", "from", "100.64.9.9", "lookup", "100"],
    ["ip", "-6", "rule", "add", "pref", "20300", "from", "fd00:9::9", "lookup", "100"],
    ["ip", "route", "add", "198.51.100.0/30", "via", "100.64.1.1", "table", "100"],
    ["ip", "route", "add", "203.0.113.99/32", "via", "100.64.1.1", "table", str(c.TABLE_BALANCE)],
    ["ip", "nexthop", "add", "id", "77", "via", "100.64.1.1", "dev", "w1"],
    ["ip", "nexthop", "add", "id", str(c.link_nexthop_id(4, 999)), "via", "100.64.2.1", "dev", "w2"],
]


@pytest.mark.parametrize("rp_filter", ["1", "2"])
def test_cleanup_restores_everything_and_foreign_state_is_never_touched(
    router: Router, rp_filter: str
) -> None:
    lab = router.lab
    lab.router_sysctl("net.ipv4.conf.all.rp_filter", rp_filter)
    for argv in FOREIGN:
        lab.r(argv)
    before = router.snapshot()
    router.write_config(config())
    router.wanhooks("apply")
    during = router.snapshot()
    for needle in (
        "from 100.64.9.9 lookup 100",
        "198.51.100.0/30 via 100.64.1.1",
        "id 77 via",
        "203.0.113.99 via 100.64.1.1",
        "from fd00:9::9 lookup 100",
    ):
        assert needle in during
    # with strict or loose rp_filter, every link answers, bound or balanced
    for i in (1, 2, 3):
        assert lab.ping(lab.router, SERVER4, bind=link_addrs(i).router4, timeout=2), f"link {i}"
        assert lab.ping(lab.router, SERVER6, bind=link_addrs(i).router6, timeout=2), f"link {i}"
    assert lab.ping(lab.lan, SERVER4, timeout=2) and lab.ping(lab.lan, SERVER6, timeout=2)
    out = router.wanhooks("cleanup").stdout
    assert "sysctl" in out
    assert router.snapshot() == before
    # cleanup needs no config and no state: a second one finds nothing
    assert "nothing to change" in router.wanhooks("cleanup").stdout


# --------------------------------------------------------------------------
# Exclusions
# --------------------------------------------------------------------------


def test_links_without_carrier_address_or_gateway_are_excluded(router: Router) -> None:
    lab = router.lab
    router.write_config(
        "links:\n  - interface: w1\n    gateway: 100.64.1.1\n  - interface: w2\n    gateway: 100.64.2.1\n"
        "  - interface: w3\n"
    )
    lab.r(["ip", "-4", "addr", "flush", "dev", "w2"])
    router.wanhooks("apply")
    status = json.loads(router.wanhooks("status", "--json").stdout)
    by_name = {link["name"]: link for link in status["links"]}
    assert by_name["w1"]["ipv4"]["in_balance"]
    assert by_name["w2"]["ipv4"]["reason"] == "no IPv4 address"
    assert "no IPv4 gateway" in by_name["w3"]["ipv4"]["reason"]
    assert status["balance"]["ipv4"]["members"] == [{"link": "w1", "weight": 1}]
    lab.send_udp_flows(lab.router, SERVER4, 100)
    assert lab.flows_per_link(4) == {1: 100, 2: 0, 3: 0}


def test_no_eligible_link_means_no_balance_route_and_mains_default_is_used(router: Router) -> None:
    lab = router.lab
    router.write_config(
        config().replace('  - interface: w3\n    weight: 1\n    gateway: [100.64.3.1, "fe80::1"]\n', "")
    )
    router.wanhooks("apply")
    lab.set_main_default(3, 4)  # w3 is not managed: the host's own uplink, say
    lab.carrier_off(1)
    lab.carrier_off(2)
    router.wanhooks("apply")
    assert lab.ip(lab.router, "-4", "route", "show", "table", str(c.TABLE_BALANCE)).strip() == ""
    assert lab.ip(lab.router, "nexthop", "show", "protocol", "87").strip() == ""
    lab.send_udp_flows(lab.router, SERVER4, 100)
    assert lab.flows_per_link(4) == {1: 0, 2: 0, 3: 100}
    lab.carrier_on(1)
    router.wanhooks("apply")
    assert "dev w1" in lab.ip(lab.router, "nexthop", "show")


# --------------------------------------------------------------------------
# Config formats and errors, against the kernel
# --------------------------------------------------------------------------

SEED = """\
# generic-balancer.sh columns
WANIFACE=" w1 w2 w3"
GATEWAYS=" 100.64.1.1 100.64.2.1 100.64.3.1"
NETWORKS=" 100.64.1.0/24 100.64.2.0/24 100.64.3.0/24"
WEIGHTS=" 1 2 1"
"""
SEED_AS_YAML = """\
balance: per-destination   # the 2011 script's, which a column file keeps
links:
  - {interface: w1, weight: 1, gateway: 100.64.1.1, network: 100.64.1.0/24}
  - {interface: w2, weight: 2, gateway: 100.64.2.1, network: 100.64.2.0/24}
  - {interface: w3, weight: 1, gateway: 100.64.3.1, network: 100.64.3.0/24}
"""


def test_seed_columns_and_their_yaml_give_identical_kernel_state(router: Router) -> None:
    seed = router.write_config(SEED, "generic-balancer.conf")
    router.wanhooks("apply", config=seed)
    from_seed = router.snapshot()
    router.wanhooks("cleanup")
    router.wanhooks("apply", config=router.write_config(SEED_AS_YAML))
    assert router.snapshot() == from_seed
    converted = router.wanhooks("convert", str(seed)).stdout
    router.wanhooks("cleanup")
    router.wanhooks("apply", config=router.write_config(converted, "converted.yaml"))
    assert router.snapshot() == from_seed


BAD_CONFIGS = [
    ("weight: 0", "links:\n  - interface: w1\n    weight: 0\n", 3, "links[1].weight"),
    ("weight: 300", "links:\n  - interface: w1\n    weight: 300\n", 3, "links[1].weight"),
    ("weight string", "links:\n  - interface: w1\n    weight: '2'\n", 3, "links[1].weight"),
    ("unknown key", "links:\n  - interface: w1\n    wieght: 2\n", 3, "links[1].wieght"),
    ("bad gateway", "links:\n  - interface: w1\n    gateway: 100.64.1.300\n", 3, "links[1].gateway"),
    ("host bits", "links:\n  - interface: w1\n    network: 100.64.1.1/24\n", 3, "links[1].network"),
    ("duplicate", "links:\n  - interface: w1\n  - interface: w1\n", 3, "links[2].interface"),
    ("bad name", "links:\n  - interface: a/b\n", 2, "links[1].interface"),
    ("long name", "links:\n  - interface: abcdefghijklmnopq\n", 2, "links[1].interface"),
    ("yaml syntax", "links:\n  - interface: [w1\n", 3, ""),
    ("no links", "balance: per-connection\n", 1, "links"),
    ("bad balance", "links:\n  - interface: w1\nbalance: round-robin\n", 3, "balance"),
    ("unequal columns", 'WANIFACE="w1 w2 w3"\nGATEWAYS="100.64.1.1 100.64.2.1"\n', 2, "GATEWAYS"),
    ("seed bad weight", 'WANIFACE="w1 w2"\nWEIGHTS="1 0"\n', 2, "WEIGHTS[2]"),
    ("seed expansion", 'WANIFACE="$(reboot)"\n', 1, "WANIFACE"),
    ("seed unknown", 'WANIFACE="w1"\nGATEWAY="100.64.1.1"\n', 2, "GATEWAY"),
]


def test_bad_configs_exit_2_with_file_line_key_and_leave_the_kernel_alone(router: Router) -> None:
    router.write_config(config())
    router.wanhooks("apply")
    before = router.snapshot()
    failures = []
    for name, text, line, key in BAD_CONFIGS:
        path = router.write_config(text, "bad.conf")
        proc = router.wanhooks("apply", config=path, check=False)
        first = proc.stderr.strip().splitlines()[0] if proc.stderr.strip() else ""
        expected = f"{path}:{line}: {key}"
        if proc.returncode != 2 or not first.startswith(f"wanhooks: {expected}"):
            failures.append(f"{name}: rc={proc.returncode} {first!r}, expected {expected!r}")
    for text, what in ((b"\x00\x01\x02garbage\xff", "binary"), (b"", "empty")):
        path = router.tmp / "raw.conf"
        path.write_bytes(text)
        proc = router.wanhooks("apply", config=path, check=False)
        if proc.returncode != 2 or str(path) not in proc.stderr:
            failures.append(f"{what}: rc={proc.returncode} {proc.stderr!r}")
    assert not failures, "\n".join(failures)
    assert router.snapshot() == before
