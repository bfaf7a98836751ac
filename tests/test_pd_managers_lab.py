"""Delegated prefixes from real managers: systemd-networkd takes a DHCPv6 prefix delegation
from Kea at each of two ISPs and numbers a LAN interface from each; NetworkManager takes
one ISP's and shares it on a LAN interface, beside a prefix typed in the config.  wanhooks
learns which ISP each prefix is from (networkd's UplinkInterface=, NetworkManager's IPv6
default device) and routes it there; the ISP renumbers and the rule follows.  Root only;
skipped where a manager or Kea is not installed (.ci/dev installs them).

The topology: the lab's router (w1, w2 to ISPs 1 and 2, each running Kea), two LAN
interfaces d1 and d2 -- networkd numbers d1 from ISP 1's delegation and d2 from ISP 2's, a
LAN interface taking one uplink's prefix in networkd 252 -- both on one bridge in the LAN
namespace, where a host takes an address from each prefix from the router's adverts.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import DaemonProc, Router, prefix_rules, wait_for
from managers import (
    KeaPD,
    NetworkdSandbox,
    NetworkManagerSandbox,
    available,
    kea_available,
    networkd_available,
)

from wanhooks import constants as c
from wanhooks.lab import SERVER6, Lab

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(bool(kea_available()), reason=kea_available() or "ok")]

WAN = """\
[Match]
Name=w{i}

[Network]
Address=100.64.{i}.2/24
Address=fd00:{i}::2/64
Gateway=100.64.{i}.1
Gateway=fe80::1
DHCP=ipv6
IPv6AcceptRA=no
LinkLocalAddressing=ipv6

[DHCPv6]
WithoutRA=solicit
UseDNS=no
"""
LAN = """\
[Match]
Name=d{i}

[Network]
LinkLocalAddressing=ipv6
IPv6AcceptRA=no
DHCPPrefixDelegation=yes
IPv6SendRA=yes

[DHCPPrefixDelegation]
UplinkInterface=w{i}
SubnetId=1
Announce=yes
"""
ECHO_PORT = 9300  # the ISPs record flows to 9000-9999


@pytest.fixture
def lab3() -> Iterator[object]:
    with Lab(2, router_nat=False, antispoof=True) as lab:  # routed IPv6, BCP38 at both ISPs
        yield lab


class Setup:
    def __init__(self, router: Router, nd: NetworkdSandbox, kea: dict[int, KeaPD]) -> None:
        self.router, self.lab, self.nd, self.kea = router, router.lab, nd, kea

    @property
    def log(self) -> str:
        return (self.router.tmp / "daemon.log").read_text()

    def explain(self) -> str:
        """What the servers and networkd said: a failure's first clue."""
        kea = "\n".join(f"kea at ISP {i}:\n{k.log()[-2500:]}" for i, k in self.kea.items())
        routes = self.lab.ip(self.lab.router, "-6", "route", "show", "table", "main")
        return (
            f"{kea}\nrouter's IPv6 main table:\n{routes}\nnetworkd:\n{self.nd.log()}\n"
            f"wanhooks:\n{self.log[-3000:]}"
        )

    def lan_prefixes(self, dev: str) -> set[str]:
        """The /64s networkd numbered a router LAN interface from."""
        return router_prefixes(self.lab, dev)

    def host_address(self, prefix: str) -> str | None:
        """The LAN host's settled address from a prefix (SLAAC on br0)."""
        return host_address(self.lab, "br0", prefix)


def _global_addresses(lab: Lab, ns: str, dev: str) -> list[dict[str, Any]]:
    infos = lab.ip_json(ns, "-6", "addr", "show", "dev", dev, "scope", "global")
    return [a for info in infos for a in info["addr_info"] if "local" in a]


def _net(address: str) -> str:
    return f"{ipaddress.IPv6Network(f'{address}/64', strict=False).network_address}/64"


def router_prefixes(lab: Lab, dev: str) -> set[str]:
    """The /64s a router LAN interface is numbered from."""
    return {_net(a["local"]) for a in _global_addresses(lab, lab.router, dev)}


def host_address(lab: Lab, dev: str, prefix: str) -> str | None:
    """The LAN host's settled (SLAAC, past DAD) address from a prefix, on dev."""
    found = _global_addresses(lab, lab.lan, dev)
    return next(
        (str(a["local"]) for a in found if _net(a["local"]) == prefix and not a.get("tentative")), None
    )


def table_of(lab: Lab, dev: str) -> int:
    """wanhooks' table of a router link."""
    return c.link_table(int(lab.ip_json(lab.router, "link", "show", "dev", dev)[0]["ifindex"]))


def build_lan(lab: Lab) -> None:
    """d1, d2 on the router; their peers on a bridge in the LAN namespace, a host on it."""
    lab.ns_exec(
        lab.lan, ["ip", "link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0"]
    )
    lab.ns_exec(lab.lan, ["sysctl", "-qw", "net.ipv6.conf.br0.accept_ra=2", "net.ipv6.conf.br0.accept_dad=0"])
    for i in (1, 2):
        lab.r(["ip", "link", "add", f"d{i}", "type", "veth", "peer", "name", f"p{i}", "netns", lab.lan])
        lab.ns_exec(lab.lan, ["ip", "link", "set", f"p{i}", "master", "br0", "up"])
    lab.ns_exec(lab.lan, ["ip", "link", "set", "br0", "up"])
    for i in (1, 2):
        lab.r(["ip", "link", "set", f"d{i}", "up"])


@pytest.fixture
def setup(router: Router, tmp_path: Path) -> Iterator[Setup]:
    lab = router.lab
    # the ISPs' routers by their link-local address, as an RA would announce them
    links = "".join(f"  - {{interface: w{i}, gateway: 'fe80::1'}}\n" for i in (1, 2))
    router.write_config(f"links:\n{links}")
    conf = tmp_path / "networkd.conf"
    conf.write_text("[Network]\nManageForeignRoutingPolicyRules=no\nManageForeignRoutes=no\n")
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    nd = NetworkdSandbox(lab.router, hooks, conf)
    kea = {i: KeaPD(lab.isp(i), "c", f"fd00:{i}::/64", f"fd00:{i}:100::/57", tmp_path) for i in (1, 2)}
    daemon = None
    try:
        for server in kea.values():
            server.start()
        for i in (1, 2):  # networkd puts the WANs' addresses back as its own (it cannot adopt them)
            lab.r(["ip", "addr", "flush", "dev", f"w{i}", "scope", "global"])
        files = {f"10-w{i}.network": WAN.format(i=i) for i in (1, 2)}
        files.update({f"20-d{i}.network": LAN.format(i=i) for i in (1, 2)})
        nd.up(files)
        build_lan(lab)
        # in networkd's mount namespace: its /run/systemd/netif and /etc/systemd/network, as on a host
        daemon = DaemonProc(
            router, enter=("nsenter", "--target", str(nd.pid("networkd")), "--mount", "--net", "--")
        )
        s = Setup(router, nd, kea)
        wait_for(lambda: "round 1:" in s.log, 30, "the daemon's first round")
        yield s
    finally:
        if daemon is not None:
            daemon.stop()
        for server in kea.values():
            server.stop()
        nd.down()


def first_seen(check: dict[str, object], timeout: float, explain: object = str) -> dict[str, float]:
    """Poll every named condition every 5 ms until all hold: when each first held."""
    seen: dict[str, float] = {}
    deadline = time.monotonic() + timeout
    while len(seen) < len(check):
        now = time.monotonic()
        for name, predicate in check.items():
            if name not in seen and predicate():  # type: ignore[operator]
                seen[name] = now
        if now > deadline:
            missing = sorted(set(check) - set(seen))
            raise AssertionError(f"not within {timeout} s: {missing}\n{explain()}")  # type: ignore[operator]
        time.sleep(0.005)
    return seen


@contextlib.contextmanager
def connections_from(
    lab: Lab, source: str, seconds: float = 7.0
) -> Iterator[Callable[[], list[dict[str, Any]]]]:
    """Four TCP connections from `source` to the internet's echo server, echoing every 20 ms
    for `seconds`; yields what tells their fate once they are done (tcp-hold's JSON)."""
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.internet, sys.executable, "-m", "wanhooks.lab.traffic", "tcp-echo",
         "--port", str(ECHO_PORT), "--seconds", "60"],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
    )  # fmt: skip
    time.sleep(0.5)
    holder = subprocess.Popen(
        ["ip", "netns", "exec", lab.lan, sys.executable, "-m", "wanhooks.lab.traffic", "tcp-hold",
         "--dst", SERVER6, "--port", str(ECHO_PORT), "--flows", "4", "--seconds", str(seconds),
         "--interval", "0.02", "--bind", source],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "started"

        def fates() -> list[dict[str, Any]]:
            output, _ = holder.communicate(timeout=30)
            return list(json.loads(output.splitlines()[-1]))

        yield fates
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()
        server.terminate()
        server.wait(5)


@pytest.mark.skipif(bool(networkd_available()), reason=networkd_available() or "ok")
def test_networkd_delegations_from_two_isps_leave_by_their_isp_and_follow_a_new_prefix(setup: Setup) -> None:
    lab = setup.lab
    tables = {i: table_of(lab, f"w{i}") for i in (1, 2)}
    # each ISP's delegation: networkd numbers d<i> from it; the rule follows within a moment
    times = first_seen(
        {
            **{f"address d{i}": (lambda i=i: bool(setup.lan_prefixes(f"d{i}"))) for i in (1, 2)},
            **{f"rule {i}": (lambda i=i: tables[i] in prefix_rules(lab).values()) for i in (1, 2)},
        },
        30,
        setup.explain,
    )
    prefixes = {i: next(iter(setup.lan_prefixes(f"d{i}"))) for i in (1, 2)}
    assert prefixes[1].startswith("fd00:1:1") and prefixes[2].startswith("fd00:2:1"), prefixes
    assert {p: prefix_rules(lab).get(p) for p in prefixes.values()} == {
        prefixes[i]: tables[i] for i in (1, 2)
    }
    assert "learned: d1 is numbered from w1's delegation (says networkd)" in setup.log
    hosts = {}
    wait_for(lambda: all(setup.host_address(prefixes[i]) for i in (1, 2)), 15, "the host's SLAAC addresses")
    hosts = {i: setup.host_address(prefixes[i]) for i in (1, 2)}
    for i in (1, 2):
        lab.send_udp_flows(lab.lan, None, 30, family=6, bind=hosts[i], sport_base=20000 + 1000 * i)
    keys = lab.flow_keys_per_link(6)
    assert {i: {k.saddr for k in keys[i]} for i in (1, 2)} == {1: {hosts[1]}, 2: {hosts[2]}}
    assert sum(lab.spoofed_per_link(6).values()) == 0

    # connections from ISP 1's prefix, echoing while ISP 1 renumbers
    with connections_from(lab, hosts[1]) as fates:
        setup.kea[1].renumber("fd00:1:100:80::/57")  # the next renewal (within 4 s) brings a new prefix
        changed = first_seen(
            {
                "address": lambda: any(p.startswith("fd00:1:100:8") for p in setup.lan_prefixes("d1")),
                "rule": lambda: any(p.startswith("fd00:1:100:8") for p in prefix_rules(lab)),
            },
            15,
        )
        new = next(p for p in setup.lan_prefixes("d1") if p.startswith("fd00:1:100:8"))
        assert prefix_rules(lab)[new] == tables[1]
        assert prefix_rules(lab).get(prefixes[1]) == tables[1]  # kept: the host's old address is valid
        # new flows from the old address too (sticky marks keep only established ones on w1)
        lab.reset_flows()
        lab.send_udp_flows(lab.lan, None, 30, family=6, bind=hosts[1], sport_base=23000)
        keys = lab.flow_keys_per_link(6)
        assert {k.saddr for k in keys[1] if k.dport != ECHO_PORT} == {hosts[1]} and not keys[2]
        results = fates()
    assert [r["error"] for r in results] == [None] * 4, results  # the old prefix's connections lived on
    assert max(r["max_gap"] for r in results) < 2.0, results
    wait_for(lambda: setup.host_address(new), 15, "the host's address from the new prefix")
    host_new = setup.host_address(new)
    lab.reset_flows()
    lab.send_udp_flows(lab.lan, None, 30, family=6, bind=host_new, sport_base=24000)
    keys = lab.flow_keys_per_link(6)
    assert {k.saddr for k in keys[1]} == {host_new} and not keys[2]
    assert sum(lab.spoofed_per_link(6).values()) == 0
    # the old prefix goes when its valid lifetime ends (Kea's 12 s at most), and nothing stale stays
    wait_for(lambda: prefixes[1] not in prefix_rules(lab), 20, "the old prefix's rule gone")
    assert f"delegated prefix {prefixes[1]} (w1's) expired: its rule is removed" in setup.log
    assert set(prefix_rules(lab)) == {new, prefixes[2]}
    doc = json.loads(setup.router.wanhooks("status", "--json").stdout)
    w1 = next(link for link in doc["links"] if link["name"] == "w1")
    assert [(p["prefix"], p["source"], p["lan"], p["present"]) for p in w1["delegated"]] == [
        (new, "networkd", "d1", True)
    ]
    assert 0 < w1["delegated"][0]["valid_s"] <= 12
    print(
        f"\nnetworkd's delegations: rule {1000 * (times['rule 1'] - times['address d1']):.0f} / "
        f"{1000 * (times['rule 2'] - times['address d2']):.0f} ms after networkd's LAN address (ISP 1 / 2); "
        f"a new prefix's rule {1000 * (changed['rule'] - changed['address']):.0f} ms after its address"
    )


# --- NetworkManager --------------------------------------------------------------------
# NetworkManager 1.42 asks for a prefix only for a profile with ipv6.method=shared, only on
# its IPv6 default device, and takes one prefix: one ISP's delegation at a time.  So it
# runs on one WAN (the lab's w1, renamed nmw1: NetworkManager manages nmw* only) and shares
# its delegation on nmwl; ISP 2's prefix is typed in the config: one learned beside one
# configured.


class NmSetup:
    def __init__(self, router: Router, nm: NetworkManagerSandbox, kea: KeaPD, configured: str) -> None:
        self.router, self.lab, self.nm, self.kea = router, router.lab, nm, kea
        self.configured = configured  # the LAN host's address from ISP 2's prefix (in the config)

    @property
    def log(self) -> str:
        return (self.router.tmp / "daemon.log").read_text()

    def explain(self) -> str:
        routes = self.lab.ip(self.lab.router, "-6", "route", "show", "table", "main")
        addrs = self.lab.ip(self.lab.router, "-6", "addr", "show")
        return (
            f"kea:\n{self.kea.log()[-2500:]}\nrouter's IPv6 main table:\n{routes}\naddresses:\n{addrs}\n"
            f"NetworkManager:\n{self.nm.log()}\nwanhooks:\n{self.log[-3000:]}"
        )

    def lan_prefixes(self) -> set[str]:
        return router_prefixes(self.lab, "nmwl")

    def host_address(self, prefix: str) -> str | None:
        return host_address(self.lab, "eth1", prefix)


@pytest.fixture
def nm_setup(router: Router, tmp_path: Path) -> Iterator[NmSetup]:
    lab = router.lab
    lab.r(["ip", "link", "set", "w1", "down"])
    lab.r(["ip", "addr", "flush", "dev", "w1", "scope", "global"])
    lab.r(["ip", "link", "set", "w1", "name", "nmw1"])
    lab.r(["ip", "link", "set", "nmw1", "up"])
    lab.r(["ip", "link", "add", "nmwl", "type", "veth", "peer", "name", "eth1", "netns", lab.lan])
    lab.ns_exec(
        lab.lan, ["sysctl", "-qw", "net.ipv6.conf.eth1.accept_ra=2", "net.ipv6.conf.eth1.accept_dad=0"]
    )
    lab.ns_exec(lab.lan, ["ip", "link", "set", "eth1", "up"])
    configured = lab.delegate(2)
    router.write_config(
        "links:\n  - interface: nmw1\n"
        "  - {interface: w2, gateway: [100.64.2.1, 'fe80::1'], delegated: 'fd00:2:100::/56'}\n"
    )
    nm = NetworkManagerSandbox(lab.router, tmp_path / "nm")
    kea = KeaPD(lab.isp(1), "c", "fd00:1::/64", "fd00:1:100::/57", tmp_path)
    daemon = None
    try:
        kea.start()
        nm.up()
        nm.nmcli("con", "add", "type", "ethernet", "ifname", "nmw1", "con-name", "up1", "autoconnect", "no",
                 "ipv4.method", "manual", "ipv4.addresses", "100.64.1.2/24", "ipv4.gateway", "100.64.1.1",
                 "ipv6.method", "dhcp", "ipv6.addresses", "fd00:1::2/64",
                 "ipv6.gateway", "fe80::1")  # fmt: skip
        nm.nmcli("con", "add", "type", "ethernet", "ifname", "nmwl", "con-name", "lan", "autoconnect", "no",
                 "ipv4.method", "disabled", "ipv6.method", "shared")  # fmt: skip
        nm.nmcli("-w", "30", "con", "up", "up1")
        daemon = DaemonProc(router, env=nm.env)
        s = NmSetup(router, nm, kea, configured)
        wait_for(lambda: "NetworkManager:" in s.log, 15, "the daemon's NetworkManager snapshot")
        yield s
    finally:
        if daemon is not None:
            daemon.stop()
        kea.stop()
        nm.down()


@pytest.mark.skipif(bool(available()), reason=available() or "ok")
def test_networkmanager_shared_delegation_beside_a_configured_one(nm_setup: NmSetup) -> None:
    s = nm_setup
    lab = s.lab
    table, w2 = table_of(lab, "nmw1"), table_of(lab, "w2")
    s.nm.nmcli("-w", "30", "con", "up", "lan")
    times = first_seen(
        {"address": lambda: bool(s.lan_prefixes()), "rule": lambda: table in prefix_rules(lab).values()},
        30,
        s.explain,
    )
    (prefix,) = s.lan_prefixes()
    assert prefix_rules(lab) == {prefix: table, "fd00:2:100::/56": w2}
    assert (
        f"delegated prefix {prefix} learned: nmwl is numbered from nmw1's delegation (says NetworkManager)"
        in s.log
    )
    wait_for(lambda: s.host_address(prefix), 15, "the host's SLAAC address from NetworkManager's adverts")
    host = s.host_address(prefix)
    configured = s.configured
    for sport, client in ((20000, host), (21000, configured)):
        lab.send_udp_flows(lab.lan, None, 30, family=6, bind=client, sport_base=sport)
    keys = lab.flow_keys_per_link(6)
    assert {i: {k.saddr for k in keys[i]} for i in (1, 2)} == {1: {host}, 2: {configured}}
    assert sum(lab.spoofed_per_link(6).values()) == 0
    # ISP 1 renumbers at the next renewal: NetworkManager moves nmwl to the new prefix
    with connections_from(lab, host) as fates:
        s.kea.renumber("fd00:1:100:80::/57")
        changed = first_seen(
            {
                "address": lambda: any(p.startswith("fd00:1:100:8") for p in s.lan_prefixes()),
                "rule": lambda: any(p.startswith("fd00:1:100:8") for p in prefix_rules(lab)),
            },
            15,
            s.explain,
        )
        new = next(p for p in s.lan_prefixes() if p.startswith("fd00:1:100:8"))
        assert prefix_rules(lab)[new] == table
        lab.reset_flows()
        lab.send_udp_flows(lab.lan, None, 30, family=6, bind=host, sport_base=22000)  # the old, still valid
        assert {k.saddr for k in lab.flow_keys_per_link(6)[1] if k.dport != ECHO_PORT} == {host}, s.explain()
        results = fates()
    assert [r["error"] for r in results] == [None] * 4, results  # the old prefix's connections lived on
    wait_for(lambda: s.host_address(new), 15, "the host's address from the new prefix")
    host_new = s.host_address(new)
    lab.send_udp_flows(lab.lan, None, 30, family=6, bind=host_new, sport_base=23000)
    keys = lab.flow_keys_per_link(6)
    assert {k.saddr for k in keys[1]} == {host, host_new} and not keys[2]
    assert sum(lab.spoofed_per_link(6).values()) == 0
    wait_for(lambda: prefix not in prefix_rules(lab), 20, "the old prefix's rule gone")
    assert f"delegated prefix {prefix} (nmw1's) expired: its rule is removed" in s.log
    assert set(prefix_rules(lab)) == {new, "fd00:2:100::/56"}
    print(
        f"\nNetworkManager's delegation: rule {1000 * (times['rule'] - times['address']):.0f} ms after "
        f"its shared address; a new prefix's {1000 * (changed['rule'] - changed['address']):.0f} ms after its"
    )
