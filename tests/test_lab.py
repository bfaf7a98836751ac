"""The namespace lab (wanhooks.lab): addressing, reachability, flow counting, failure knobs, teardown.

Needs root: every test builds or uses real network namespaces (never the root one).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from wanhooks.lab import (
    SERVER4,
    SERVER6,
    FlowKey,
    Lab,
    LabError,
    lan_addr,
    link_addrs,
    netns_names,
    parse_flow_set,
    tbf_args,
)


def _cannot_run() -> str | None:
    if os.geteuid() != 0:
        return "the lab tests need root: they create network namespaces"
    missing = [tool for tool in ("ip", "nft", "tc", "sysctl") if shutil.which(tool) is None]
    return f"the lab tests need {', '.join(missing)}" if missing else None


if (_reason := _cannot_run()) is not None:
    pytest.skip(_reason, allow_module_level=True)

pytestmark = pytest.mark.kernel

SERVER = {4: SERVER4, 6: SERVER6}


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    """One 3-link lab with two LAN clients, shared by the tests that leave it as they found it."""
    with Lab(3, lan_clients=2) as shared:
        yield shared


def operstate(lab: Lab, ns: str, dev: str) -> str:
    [link] = lab.ip_json(ns, "link", "show", "dev", dev)
    return str(link["operstate"])


# --- pure parts ------------------------------------------------------------------


def test_addressing_follows_the_plan() -> None:
    a = link_addrs(10)
    assert (a.router4, a.gateway4, a.router6, a.gateway6) == (
        "100.64.10.2",
        "100.64.10.1",
        "fd00:a::2",
        "fd00:a::1",
    )
    assert (a.isp_up4, a.net_up4, a.isp_up6, a.net_up6) == (
        "198.51.100.37",
        "198.51.100.38",
        "fd00:99:a::1",
        "fd00:99:a::2",
    )
    assert link_addrs(64).net_up4 == "198.51.100.254"
    assert (lan_addr(1), lan_addr(1, 6), lan_addr(3, 6)) == ("100.64.100.2", "fd00:aa::2", "fd00:aa::4")
    with pytest.raises(ValueError):
        link_addrs(65)


def test_constructor_rejects_what_it_cannot_build() -> None:
    for bad in ({"links": 0}, {"links": 65}, {"shape_mbit": [1.0]}, {"prefix": "a b"}, {"prefix": "-x"}):
        with pytest.raises(ValueError):
            Lab(**bad)


def test_flow_set_parsing_accepts_bare_and_wrapped_elements() -> None:
    data = {
        "nftables": [
            {"metainfo": {}},
            {
                "set": {
                    "name": "flows4",
                    "elem": [
                        {"concat": ["udp", "100.64.2.2", 20000, "203.0.113.10", 9000]},
                        {
                            "elem": {
                                "val": {"concat": [6, "100.64.2.2", 20001, "203.0.113.10", 9001]},
                                "expires": 5,
                            }
                        },
                    ],
                }
            },
        ]
    }
    assert parse_flow_set(data) == {
        FlowKey("udp", "100.64.2.2", 20000, "203.0.113.10", 9000),
        FlowKey("tcp", "100.64.2.2", 20001, "203.0.113.10", 9001),
    }


def test_tbf_burst_is_ten_milliseconds_but_at_least_ten_packets() -> None:
    assert tbf_args("w1", 100)[-4:] == ["burst", "125000", "latency", "50ms"]
    assert tbf_args("w1", 2.5)[6:10] == ["rate", "2.5mbit", "burst", "15000"]


# --- the shared lab --------------------------------------------------------------


def test_namespaces_have_the_lab_names(lab: Lab) -> None:
    assert re.fullmatch(r"wh[0-9a-f]{6}", lab.prefix)
    p = lab.prefix
    assert (lab.router, lab.internet, lab.lan) == (f"{p}-r", f"{p}-net", f"{p}-lan")
    assert lab.isps == [f"{p}-isp1", f"{p}-isp2", f"{p}-isp3"]
    assert set(lab.namespaces) <= netns_names()


def test_router_starts_without_defaults_or_policy_rules(lab: Lab) -> None:
    assert lab.ip_json(lab.router, "-4", "route", "show", "default") == []
    assert lab.ip_json(lab.router, "-6", "route", "show", "default") == []
    assert {r["priority"] for r in lab.ip_json(lab.router, "-4", "rule", "show")} == {0, 32766, 32767}


def test_router_reaches_every_isp_gateway(lab: Lab) -> None:
    unreachable = [
        dst
        for i in (1, 2, 3)
        for dst in (f"100.64.{i}.1", f"fd00:{i:x}::1", f"fe80::1%w{i}")
        if not lab.ping(lab.router, dst)
    ]
    assert unreachable == []


@pytest.mark.parametrize("family", [4, 6])
def test_isp_counts_the_flows_that_the_main_default_sends(lab: Lab, family: int) -> None:
    lab.set_main_default(2, family)
    try:
        assert lab.ping(lab.router, SERVER[family])
        lab.reset_flows()
        lab.send_udp_flows(lab.router, None, 100, family=family)
        assert lab.flows_per_link(family) == {1: 0, 2: 100, 3: 0}
        assert lab.flows_per_link(10 - family) == {1: 0, 2: 0, 3: 0}
        keys = lab.flow_keys_per_link(family)[2]
        assert {k.sport for k in keys} == set(range(20000, 20100))
        assert {(k.proto, k.saddr, k.daddr, k.dport) for k in keys} == {
            ("udp", link_addrs(2).router(family), SERVER[family], 9000)
        }
    finally:
        lab.del_main_default(2, family)


def test_several_main_defaults_coexist_and_the_lowest_metric_wins(lab: Lab) -> None:
    for i in (3, 1, 2):
        lab.set_main_default(i)
        lab.set_main_default(i, 6)
    try:
        v4 = lab.ip_json(lab.router, "-4", "route", "show", "default")
        v6 = lab.ip_json(lab.router, "-6", "route", "show", "default")
        assert sorted((r["dev"], r["metric"], r["protocol"]) for r in v4) == [
            ("w1", 101, "dhcp"),
            ("w2", 102, "dhcp"),
            ("w3", 103, "dhcp"),
        ]
        assert sorted((r["dev"], r["metric"], r["gateway"]) for r in v6) == [
            ("w1", 101, "fe80::1"),
            ("w2", 102, "fe80::1"),
            ("w3", 103, "fe80::1"),
        ]
        lab.reset_flows()
        lab.send_udp_flows(lab.router, SERVER4, 10, dport=9500)
        assert lab.flows_per_link(4) == {1: 10, 2: 0, 3: 0}
    finally:
        for i in (1, 2, 3):
            lab.del_main_default(i, 4)
            lab.del_main_default(i, 6)
    assert lab.ip_json(lab.router, "-4", "route", "show", "default") == []
    assert lab.ip_json(lab.router, "-6", "route", "show", "default") == []


@pytest.mark.parametrize("family", [4, 6])
def test_lan_client_reaches_the_server_through_the_router_nat(lab: Lab, family: int) -> None:
    lab.set_main_default(1, family)
    try:
        assert lab.ping(lab.lan, SERVER[family])
        assert lab.ping(lab.lan, SERVER[family], bind=lab.lan_addr(2, family))
        lab.reset_flows()
        lab.send_udp_flows(lab.lan, None, 20, family=family, sport_base=30000)
        assert lab.flows_per_link(family) == {1: 20, 2: 0, 3: 0}
        assert {k.saddr for k in lab.flow_keys_per_link(family)[1]} == {link_addrs(1).router(family)}
    finally:
        lab.del_main_default(1, family)


def test_internet_drops_measurement_udp_silently(lab: Lab) -> None:
    lab.set_main_default(3)
    try:
        before = lab.r(["cat", "/proc/net/snmp"]).stdout
        lab.send_udp_flows(lab.router, SERVER4, 50, dport=9001)
        after = lab.r(["cat", "/proc/net/snmp"]).stdout
    finally:
        lab.del_main_default(3)
    assert _icmp_in(after) == _icmp_in(before)
    # the counted drop is the measurement ports'; the churn ports' (udp-rate) is not counted here
    [rule] = [r for r in _nft_rules(lab, lab.internet, "labnet") if "drop" in r and "counter" in r]
    assert rule["counter"]["packets"] >= 50


def _icmp_in(snmp: str) -> int:
    header, values = [line.split() for line in snmp.splitlines() if line.startswith("Icmp:")][:2]
    return int(values[header.index("InMsgs")])


def _nft_rules(lab: Lab, ns: str, table: str) -> list[dict[str, dict[str, int]]]:
    data = lab.nft_json(ns, "list", "table", "inet", table)
    rules = [item["rule"] for item in data["nftables"] if "rule" in item]
    return [{k: v for e in r["expr"] for k, v in e.items() if k in ("counter", "drop")} for r in rules]


def test_carrier_off_takes_the_routers_link_down(lab: Lab) -> None:
    lab.carrier_off(3)
    try:
        [w3] = lab.ip_json(lab.router, "link", "show", "dev", "w3")
        assert "NO-CARRIER" in w3["flags"] and "UP" in w3["flags"] and w3["operstate"] != "UP"
        assert not lab.ping(lab.router, "100.64.3.1", timeout=0.3)
        assert lab.ip_json(lab.router, "-6", "addr", "show", "dev", "w3") != []  # keep_addr_on_down
    finally:
        lab.carrier_on(3)
    lab.settle()
    assert operstate(lab, lab.router, "w3") == "UP"
    assert lab.ping(lab.router, "fd00:3::1")
    assert lab.ping(lab.router, "fe80::1%w3")


def test_link_down_is_administrative(lab: Lab) -> None:
    lab.link_down(3)
    try:
        [link] = lab.ip_json(lab.router, "link", "show", "dev", "w3")
        assert "UP" not in link["flags"]
    finally:
        lab.link_up(3)
    lab.settle()
    assert lab.ping(lab.router, "100.64.3.1")


def test_blackhole_drops_silently_and_lifts(lab: Lab) -> None:
    lab.blackhole(1, False)  # lifting a blackhole that is not there is fine
    lab.blackhole(1, True)
    lab.blackhole(1, True)  # and so is setting it twice
    try:
        assert not lab.ping(lab.router, "100.64.1.1", timeout=0.3)
        assert not lab.ping(lab.router, "fd00:1::1", timeout=0.3)
        assert lab.blackholed_packets(1) >= 2
        # nor does anything come back: the router's w1 hears none of five echoes from the ISP
        # (an ARP request at most)
        def heard() -> int:
            stats = lab.ip_json(lab.router, "-s", "link", "show", "dev", "w1")[0]["stats64"]
            return int(stats["rx"]["packets"])

        before = heard()
        assert not lab.ping(lab.isp(1), lab.link(1).router4, count=5, timeout=0.1)
        assert heard() - before <= 1
        assert lab.ping(lab.router, "100.64.2.1")
    finally:
        lab.blackhole(1, False)
    assert lab.blackholed_packets(1) == 0
    assert lab.ping(lab.router, "100.64.1.1")
    assert lab.ping(lab.isp(1), lab.link(1).router4)


def test_shape_sets_and_removes_tbf_on_both_ends(lab: Lab) -> None:
    lab.shape(2, 10)
    try:
        for ns, dev in ((lab.router, "w2"), (lab.isp(2), "c")):
            out = lab.ns_exec(ns, ["tc", "qdisc", "show", "dev", dev]).stdout
            assert "tbf" in out and "rate 10Mbit" in out
    finally:
        lab.shape(2, None)
    assert "tbf" not in lab.r(["tc", "qdisc", "show", "dev", "w2"]).stdout


def test_router_sysctl_and_hash_seed(lab: Lab) -> None:
    lab.router_sysctl("net.ipv4.fib_multipath_hash_policy", 1)
    try:
        assert lab.r(["sysctl", "-n", "net.ipv4.fib_multipath_hash_policy"]).stdout.strip() == "1"
    finally:
        lab.router_sysctl("net.ipv4.fib_multipath_hash_policy", 0)
    seed = lab.r(["sysctl", "-n", "-e", "net.ipv4.fib_multipath_hash_seed"]).stdout.strip()
    assert seed in ("", "1234")
    with pytest.raises(ValueError):
        lab.router_sysctl("net.ipv4.ip_forward=0 x", 1)


def test_traffic_module_runs_with_dash_m(lab: Lab) -> None:
    lab.reset_flows()
    argv = [sys.executable, "-m", "wanhooks.lab.traffic", "udp", "--dst", "100.64.3.1", "--count", "5"]
    argv += ["--dport", "9999", "--sport-base", "40000"]
    lab.ns_exec(lab.router, argv, env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert lab.flow_keys_per_link(4)[3] == {
        FlowKey("udp", "100.64.3.2", 40000 + n, "100.64.3.1", 9999) for n in range(5)
    }
    failed = lab.traffic(lab.router, "udp", "--dst", SERVER4, "--count", "2", check=False)  # no route yet
    assert failed.returncode == 1 and "2 of 2" in failed.stderr


def test_commands_only_run_in_the_labs_namespaces(lab: Lab) -> None:
    for call in (
        lambda: lab.ns_exec("not-ours", ["true"]),
        lambda: lab.ip("whsmoke", "link"),
        lambda: lab.ping("", SERVER4),
    ):
        with pytest.raises(ValueError):
            call()


def test_a_second_lab_with_the_same_names_is_refused_and_harms_nothing(lab: Lab) -> None:
    with pytest.raises(LabError):
        Lab(1, prefix=lab.prefix).up()
    assert set(lab.namespaces) <= netns_names()


# --- labs of their own -------------------------------------------------------------


def test_antispoof_drops_and_counts_unnated_lan_traffic() -> None:
    with Lab(1, router_nat=False, antispoof=True) as lab:
        lab.set_main_default(1)
        lab.set_main_default(1, 6)
        lab.send_udp_flows(lab.router, None, 5)  # the router's own address: fine
        assert lab.spoofed_per_link(4) == {1: 0}
        lab.send_udp_flows(lab.lan, None, 7)
        lab.send_udp_flows(lab.lan, None, 3, family=6)
        assert (lab.spoofed_per_link(4), lab.spoofed_per_link(6)) == ({1: 7}, {1: 3})
        assert {k.saddr for k in lab.flow_keys_per_link(4)[1]} == {"100.64.1.2", "100.64.100.2"}
        lab.set_antispoof(False)
        lab.send_udp_flows(lab.lan, None, 7, sport_base=21000)
        assert lab.spoofed_per_link(4) == {1: 7}


def test_down_kills_the_labs_processes_and_deletes_every_namespace() -> None:
    lab = Lab(2, shape_mbit=[5, None])
    lab.up()
    sleeper = subprocess.Popen(["ip", "netns", "exec", lab.isp(2), "sleep", "60"])
    try:
        assert "tbf" in lab.r(["tc", "qdisc", "show", "dev", "w1"]).stdout
        lab.down()
        assert sleeper.wait(timeout=5) != 0
    finally:
        if sleeper.poll() is None:
            sleeper.kill()
    assert not set(lab.namespaces) & netns_names()
    lab.down()  # again: nothing to do, no error


def test_a_failed_up_leaves_nothing_behind(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(self: Lab) -> None:
        raise RuntimeError("nft exploded")

    monkeypatch.setattr(Lab, "_configure_nft", boom)
    lab = Lab(2)
    with pytest.raises(RuntimeError, match="nft exploded"):
        lab.up()
    assert not set(lab.namespaces) & netns_names()
    assert not lab._atexit


def test_a_lab_left_up_is_deleted_when_the_process_exits() -> None:
    prefix = f"whx{os.getpid() % 100000}"
    script = f"from wanhooks.lab import Lab; Lab(1, prefix={prefix!r}).up()"
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    assert not {n for n in netns_names() if n.startswith(prefix + "-")}
