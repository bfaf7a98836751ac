"""A real systemd-networkd and networkd-dispatcher (private bus, lab router namespace) beside the daemon.

Root only; skipped where they are not installed (.ci/dev installs them).
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Router, wait_for
from conftest import group_members as members
from managers import Dnsmasq, NetworkdSandbox, networkd_available

from wanhooks.lab import Lab

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(bool(networkd_available()), reason=networkd_available() or "ok"),
]

STATIC = """\
[Match]
Name=ndw1

[Network]
Address=100.64.13.2/24
Gateway=100.64.13.1
LinkLocalAddressing=no
IPv6AcceptRA=no
"""
DHCP = """\
[Match]
Name=ndw2

[Network]
DHCP=ipv4
LinkLocalAddressing=no
IPv6AcceptRA=no

[DHCPv4]
UseDNS=no
UseHostname=no
"""


class Setup:
    def __init__(self, router: Router, nd: NetworkdSandbox, dhcp: Dnsmasq) -> None:
        self.router, self.lab, self.nd, self.dhcp = router, router.lab, nd, dhcp

    @property
    def log(self) -> str:
        return (self.router.tmp / "daemon.log").read_text()


@pytest.fixture
def setup(router: Router, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Setup]:
    """networkd with wanhooks' drop-in, or (parametrized "defaults") with networkd's own defaults:
    ManageForeignRoutes=yes, ManageForeignRoutingPolicyRules=yes."""
    lab = router.lab
    router.write_config("links:\n  - interface: 'ndw*'\n")
    hooks = tmp_path / "hooks"
    router.wanhooks("install", "--root", str(hooks))
    conf = hooks / "etc/systemd/networkd.conf.d/wanhooks.conf"
    if getattr(request, "param", "drop-in") == "defaults":
        conf = tmp_path / "empty.conf"
        conf.write_text("[Network]\n")
    nd = NetworkdSandbox(lab.router, hooks / "etc/networkd-dispatcher", conf)
    dhcp = Dnsmasq(lab.isp(2), "n2", "100.64.14.100", "100.64.14.150", tmp_path)
    daemon = None
    try:
        nd.up({"50-ndw1.network": STATIC, "50-ndw2.network": DHCP})
        log = open(router.tmp / "daemon.log", "w")  # noqa: SIM115
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", lab.router, sys.executable, "-m", "wanhooks", "-c", str(router.config),
             "--run-dir", str(router.run_dir), "run"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        s = Setup(router, nd, dhcp)
        wait_for(lambda: "round 1:" in s.log, 10, "the daemon's first round")
        yield s
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(10)
        dhcp.stop()
        nd.down()


def add_uplink(lab: Lab, name: str, isp: int, peer: str, address: str) -> None:
    lab.r(["ip", "link", "add", name, "type", "veth", "peer", "name", peer, "netns", lab.isp(isp)])
    lab.ns_exec(lab.isp(isp), ["ip", "addr", "add", address, "dev", peer])
    lab.ns_exec(lab.isp(isp), ["ip", "link", "set", peer, "up"])


def test_hooks_run_by_networkd_dispatcher_reach_the_daemon(setup: Setup) -> None:
    lab = setup.lab
    add_uplink(lab, "ndw1", 3, "n1", "100.64.13.1/24")
    wait_for(lambda: members(lab).get("ndw1") == "100.64.13.1", 10, "ndw1 in the group")
    wait_for(lambda: "heard: networkd-dispatcher routable ndw1" in setup.log, 15, "the routable hook")
    # networkd restarting (when it sweeps "foreign" routes and rules it may find ours) leaves
    # the balancing intact: the daemon hears every deletion by someone else, and hears none.
    # (The drop-in installed here says ManageForeignRoutes=no, ManageForeignRoutingPolicyRules=no;
    # networkd 252 as tested left protocol-87 objects alone even without it.)
    setup.nd.restart_networkd()
    wait_for(lambda: members(lab).get("ndw1") == "100.64.13.1", 5, "ndw1 still in the group")
    assert "kernel rule del" not in setup.log and "kernel route del" not in setup.log, setup.log
    lab.ns_exec(lab.isp(3), ["ip", "link", "set", "n1", "down"])  # the cable
    wait_for(lambda: "ndw1" not in members(lab), 5, "ndw1 out")
    wait_for(lambda: "heard: networkd-dispatcher no-carrier ndw1" in setup.log, 15, "the no-carrier hook")


def test_a_dhcp_gateway_change_under_networkd_is_followed_through_rtnetlink(setup: Setup) -> None:
    lab = setup.lab
    add_uplink(lab, "ndw2", 2, "n2", "100.64.14.1/24")
    lab.ns_exec(lab.isp(2), ["ip", "addr", "add", "100.64.14.254/24", "dev", "n2"])
    setup.dhcp.start("100.64.14.1")
    wait_for(
        lambda: members(lab).get("ndw2") == "100.64.14.1", 20, "ndw2 in the group with its leased gateway"
    )
    setup.dhcp.start("100.64.14.254")
    wait_for(lambda: members(lab).get("ndw2") == "100.64.14.254", 25, "the new router after a renew")


@pytest.mark.parametrize("setup", ["defaults"], indirect=True)
def test_networkd_with_its_own_defaults_restarting_leaves_wanhooks_balancing(setup: Setup) -> None:
    """Without wanhooks' drop-in networkd may sweep "foreign" rules and routes when it starts:
    whatever it removes of wanhooks' is back within a second, and the log names networkd."""
    lab = setup.lab
    add_uplink(lab, "ndw1", 3, "n1", "100.64.13.1/24")
    wait_for(lambda: members(lab).get("ndw1") == "100.64.13.1", 10, "ndw1 in the group")
    rules_before = lab.ip(lab.router, "rule", "show")
    for _ in range(2):
        setup.nd.restart_networkd()
        time.sleep(1.0)
        assert members(lab).get("ndw1") == "100.64.13.1"
        assert lab.ip(lab.router, "rule", "show") == rules_before
    swept = [line for line in setup.log.splitlines() if "of wanhooks' by" in line]
    assert all("systemd-network" in line for line in swept), swept  # if it swept, it is named
    print(f"\nnetworkd with its defaults: {len(swept)} trigger lines naming a deletion of wanhooks' objects")
