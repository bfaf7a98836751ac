"""A real NetworkManager (private bus, in the lab's router namespace) and the daemon beside it.

Root only; skipped where NetworkManager is not installed (.ci/dev installs it).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Router, wait_for
from conftest import group_members as members
from managers import Dnsmasq, NetworkManagerSandbox, available

from wanhooks import constants as c

pytestmark = [pytest.mark.kernel, pytest.mark.skipif(bool(available()), reason=available() or "ok")]


class Setup:
    def __init__(
        self, router: Router, nm: NetworkManagerSandbox, dhcp: Dnsmasq, daemon: subprocess.Popen[bytes]
    ):
        self.router, self.lab, self.nm, self.dhcp, self.daemon = router, router.lab, nm, dhcp, daemon

    @property
    def log(self) -> str:
        return (self.router.tmp / "daemon.log").read_text()


@contextlib.contextmanager
def nm_daemon(router: Router, nm_root: Path, tmp: Path) -> Iterator[Setup]:
    """NetworkManager (its private bus under nm_root) managing nmw1 and nmw2, and `wanhooks run`
    following it; shared with test_dbus_security.py, which needs the bus somewhere every
    user can reach."""
    lab = router.lab
    # two more uplinks for NetworkManager to manage: nmw1 to ISP 1 (static), nmw2 to ISP 2 (DHCP)
    for i in (1, 2):
        lab.r(["ip", "link", "add", f"nmw{i}", "type", "veth", "peer", "name", f"n{i}", "netns", lab.isp(i)])
        lab.ns_exec(lab.isp(i), ["ip", "addr", "add", f"100.64.1{i}.1/24", "dev", f"n{i}"])
        lab.ns_exec(lab.isp(i), ["ip", "link", "set", f"n{i}", "up"])
    lab.ns_exec(lab.isp(2), ["ip", "addr", "add", "100.64.12.254/24", "dev", "n2"])
    router.write_config("links:\n  - interface: 'nmw*'\n")
    hooks = tmp / "hooks"
    router.wanhooks("install", "--root", str(hooks))
    nm = NetworkManagerSandbox(lab.router, nm_root)
    nm._write()
    nm.add_dispatcher_script(hooks / "etc/NetworkManager/dispatcher.d/90-wanhooks")
    dhcp = Dnsmasq(lab.isp(2), "n2", "100.64.12.100", "100.64.12.150", tmp)
    daemon = None
    try:
        nm.up()
        log = open(router.tmp / "daemon.log", "w")  # noqa: SIM115
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", lab.router, sys.executable, "-m", "wanhooks", "-c", str(router.config),
             "--run-dir", str(router.run_dir), "run"],
            env=nm.env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        s = Setup(router, nm, dhcp, daemon)
        try:
            wait_for(lambda: "NetworkManager:" in s.log, 10, "the daemon's NetworkManager snapshot")
        except AssertionError as err:  # say what the daemon did instead
            raise AssertionError(f"{err}; exit {daemon.poll()}; daemon log:\n{s.log[-3000:]}") from None
        yield s
    finally:
        if daemon is not None:
            daemon.terminate()
            daemon.wait(10)
        dhcp.stop()
        nm.down()


@pytest.fixture
def setup(router: Router, tmp_path: Path) -> Iterator[Setup]:
    with nm_daemon(router, tmp_path / "nm", tmp_path) as s:
        yield s


def static_nmw1_up(nm: NetworkManagerSandbox, lab: object) -> None:
    """A static profile on nmw1 (100.64.11.2/24 via 100.64.11.1), up and in the group."""
    nm.nmcli("con", "add", "type", "ethernet", "ifname", "nmw1", "con-name", "s1", "autoconnect", "no",
             "ipv4.method", "manual", "ipv4.addresses", "100.64.11.2/24", "ipv4.gateway", "100.64.11.1",
             "ipv6.method", "disabled")  # fmt: skip
    nm.nmcli("-w", "15", "con", "up", "s1")
    wait_for(lambda: members(lab).get("nmw1") == "100.64.11.1", 5, "nmw1 in the group")


def test_static_profile_joins_and_disconnect_leaves(setup: Setup) -> None:
    nm, lab = setup.nm, setup.lab
    static_nmw1_up(nm, lab)
    wait_for(
        lambda: "heard: nm-dispatcher up nmw1" in setup.log, 10, "the NM dispatcher hook reaching the daemon"
    )
    nm.nmcli("device", "disconnect", "nmw1")
    wait_for(lambda: "nmw1" not in members(lab), 5, "nmw1 out of the group")


def test_dhcp_gateway_joins_and_a_new_router_on_renew_is_followed(setup: Setup) -> None:
    nm, lab = setup.nm, setup.lab
    setup.dhcp.start("100.64.12.1")
    nm.nmcli("con", "add", "type", "ethernet", "ifname", "nmw2", "con-name", "d2", "autoconnect", "no",
             "ipv4.method", "auto", "ipv6.method", "disabled")  # fmt: skip
    nm.nmcli("-w", "30", "con", "up", "d2")
    wait_for(
        lambda: members(lab).get("nmw2") == "100.64.12.1", 10, "nmw2 in the group with its leased gateway"
    )
    setup.dhcp.start("100.64.12.254")  # the ISP's DHCP now hands out another router
    wait_for(lambda: members(lab).get("nmw2") == "100.64.12.254", 25, "the new router after a renew")
    index = lab.ip_json(lab.router, "link", "show", "nmw2")[0]["ifindex"]
    table = lab.ip(lab.router, "route", "show", "table", str(c.link_table(index)))
    assert "default via 100.64.12.254 dev nmw2" in table


def test_a_profile_with_its_own_route_table_is_balanced_with_its_gateway(setup: Setup) -> None:
    nm, lab = setup.nm, setup.lab
    nm.nmcli("con", "add", "type", "ethernet", "ifname", "nmw1", "con-name", "nd", "autoconnect", "no",
             "ipv4.method", "manual", "ipv4.addresses", "100.64.11.2/24", "ipv4.gateway", "100.64.11.1",
             "ipv4.route-table", "1000", "ipv6.method", "disabled")  # fmt: skip
    nm.nmcli("-w", "15", "con", "up", "nd")
    assert "default" not in lab.ip(lab.router, "route", "show", "dev", "nmw1")  # nothing in main
    assert "default via 100.64.11.1" in lab.ip(lab.router, "route", "show", "table", "1000")
    wait_for(
        lambda: members(lab).get("nmw1") == "100.64.11.1", 5, "nmw1 balanced via NetworkManager's gateway"
    )


def test_networkmanager_restarting_is_survived(setup: Setup) -> None:
    nm, lab = setup.nm, setup.lab
    nm.nmcli("con", "add", "type", "ethernet", "ifname", "nmw1", "con-name", "nd", "autoconnect", "no",
             "ipv4.method", "manual", "ipv4.addresses", "100.64.11.2/24", "ipv4.gateway", "100.64.11.1",
             "ipv4.route-table", "1000", "ipv6.method", "disabled")  # fmt: skip
    nm.nmcli("-w", "15", "con", "up", "nd")
    wait_for(lambda: "nmw1" in members(lab), 5, "nmw1 in the group")
    nm.kill_nm()
    wait_for(lambda: "NetworkManager left the bus" in setup.log, 5, "the daemon noticing NetworkManager left")
    nm.start_nm()
    wait_for(
        lambda: "NetworkManager (re)appeared" in setup.log, 10, "the daemon noticing NetworkManager back"
    )
    # NetworkManager takes the still-configured device over again; the daemon follows it
    wait_for(lambda: members(lab).get("nmw1") == "100.64.11.1", 15, "nmw1 still balanced")
    assert setup.daemon.poll() is None
    time.sleep(0.1)


def owned(lab: object) -> str:
    """Every route, rule and nexthop wanhooks owns (protocol 87), as text."""
    from wanhooks.lab import Lab

    assert isinstance(lab, Lab)
    parts = [
        lab.ip(lab.router, "-4", "rule", "show"),
        lab.ip(lab.router, "-4", "route", "show", "table", "all", "proto", "87"),
        lab.ip(lab.router, "nexthop", "show", "proto", "87"),
    ]
    return "\n".join(line for part in parts for line in part.splitlines() if "proto 87" in line)


def test_networkmanager_reapplying_a_connection_leaves_wanhooks_alone(setup: Setup) -> None:
    nm, lab = setup.nm, setup.lab
    static_nmw1_up(nm, lab)
    time.sleep(0.5)
    before = owned(lab)
    assert f"lookup {c.TABLE_BALANCE}" in before
    for _ in range(3):
        nm.nmcli("device", "reapply", "nmw1")
        time.sleep(0.5)
    wait_for(lambda: owned(lab) == before, 5, "wanhooks' routing as it was")
    assert "of wanhooks' by" not in setup.log, setup.log[-2000:]  # nothing of ours was deleted
    assert members(lab).get("nmw1") == "100.64.11.1"
