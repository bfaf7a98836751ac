"""Forged D-Bus signals from an unprivileged user change nothing (issue #13, finding H2).

A match rule's sender= only filters broadcasts: a signal addressed to the
daemon's own unique name is delivered whoever sent it, and the stock system
bus policy lets every user send signals.  Here user `nobody` sends, unicast
to the daemon, signals that claim to come from NetworkManager (a gateway of
the attacker's, a captive portal, a metered link, an interface name with a
newline, NetworkManager leaving the bus) and malformed ones by the dozen.
The kernel must not notice and the log must stay short and honest.

A real NetworkManager on a private bus (managers.NetworkManagerSandbox, set
up as test_networkmanager.py does) whose policy, like Debian's stock
system.conf, lets any user connect and send signals; the bus lives in a
directory every user can reach.  Root only (network namespaces).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Router, wait_for
from conftest import group_members as members
from managers import available
from test_networkmanager import Setup, nm_daemon

from wanhooks import constants as c


def _why_not() -> str:
    for tool in ("gdbus", "setpriv"):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian: libglib2.0-bin, util-linux)"
    return available()


pytestmark = [pytest.mark.kernel, pytest.mark.skipif(bool(_why_not()), reason=_why_not() or "ok")]

NM = "org.freedesktop.NetworkManager"
PROPS = "org.freedesktop.DBus.Properties"
EVIL_GATEWAY = "203.0.113.66"
BALANCE_RULE = f"lookup {c.TABLE_BALANCE}"
WATCH_S = 1.5  # the daemon acts on a NetworkManager signal within milliseconds


class Attacker:
    """gdbus run as `nobody` (no groups, a bare environment) on the sandbox's bus."""

    def __init__(self, s: Setup) -> None:
        self.s = s
        self.env = {"PATH": "/usr/bin:/bin", "DBUS_SYSTEM_BUS_ADDRESS": s.nm.bus}
        self.target = self._daemon_unique_name()
        self.devices = {
            name: self._root_call(NM, "/org/freedesktop/NetworkManager", f"{NM}.GetDeviceByIpIface", name)
            for name in ("nmw1", "nmw2")
        }
        self.nm_owner = self._root_call(
            "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus.GetNameOwner", NM
        )

    def _root_call(self, dest: str, path: str, method: str, *args: str, check: bool = True) -> str:
        """One value out of a method call's answer (as root: only to learn what to forge)."""
        proc = subprocess.run(
            ["gdbus", "call", "--system", "--dest", dest, "--object-path", path, "--method", method, *args],
            env=self.env, capture_output=True, text=True, check=check, timeout=10,
        )  # fmt: skip
        found = re.search(r"'([^']*)'|\b(\d+)\b", proc.stdout)
        assert found or not check, proc.stdout
        return (found.group(1) or found.group(2)) if found else ""

    def _daemon_unique_name(self) -> str:
        names = subprocess.run(
            ["gdbus", "call", "--system", "--dest", "org.freedesktop.DBus", "--object-path",
             "/org/freedesktop/DBus", "--method", "org.freedesktop.DBus.ListNames"],
            env=self.env, capture_output=True, text=True, check=True, timeout=10,
        ).stdout  # fmt: skip
        for name in re.findall(r"'(:[0-9.]+)'", names):
            pid = self._root_call(
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus.GetConnectionUnixProcessID",
                name,
                check=False,
            )  # fmt: skip (a name may be gone by now: nmcli's, gdbus' own)
            if pid == str(self.s.daemon.pid):
                return name
        raise AssertionError(f"the daemon (pid {self.s.daemon.pid}) is not on the bus: {names}")

    def ip4_config(self, iface: str) -> str:
        return self._root_call(NM, self.devices[iface], f"{PROPS}.Get", f"{NM}.Device", "Ip4Config")

    def emit(self, path: str, signal: str, *args: str) -> None:
        """Send a signal to the daemon alone (unicast), as nobody."""
        argv = ["ip", "netns", "exec", self.s.lab.router,
                "setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--",
                "gdbus", "emit", "--system", "--dest", self.target, "--object-path", path, "--signal", signal,
                *args]  # fmt: skip
        proc = subprocess.run(argv, env=self.env, capture_output=True, text=True, timeout=10)
        assert proc.returncode == 0, f"nobody could not send {signal}: {proc.stderr}"

    def properties_changed(self, path: str, iface: str, props: str) -> None:
        self.emit(path, f"{PROPS}.PropertiesChanged", f"'{iface}'", props, "@as []")


def owned(s: Setup) -> str:
    """Every rule, route and nexthop in the router, as text."""
    lab = s.lab
    return "\n".join(
        lab.ip(lab.router, *args)
        for args in (("-4", "rule", "show"), ("-4", "route", "show", "table", "all"), ("nexthop", "show"))
    )


def holds(check: Callable[[], str | None], seconds: float = WATCH_S) -> None:
    """check() (None, or what is wrong) stays None for the whole time."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        problem = check()
        assert problem is None, problem
        time.sleep(0.02)


def settled(s: Setup, quiet_s: float = 1.0, timeout: float = 15.0) -> None:
    """Wait until the daemon's log has not grown for quiet_s."""
    deadline = time.monotonic() + timeout
    size, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = len(s.log)
        if now != size:
            size, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.05)
    raise AssertionError(f"the daemon's log kept growing for {timeout} s:\n{s.log[-2000:]}")


@pytest.fixture
def attack(router: Router, tmp_path: Path) -> Iterator[Attacker]:
    # pytest's tmp dirs are root's alone: the bus socket goes where nobody can reach it
    public = Path(tempfile.mkdtemp(prefix="wanhooks-dbus-", dir="/tmp"))
    public.chmod(0o755)
    try:
        with nm_daemon(router, public / "nm", tmp_path) as s:
            nm, lab = s.nm, s.lab
            # nmw1's gateway is known only from NetworkManager (its routes are in a table of the
            # profile's own); nmw2 is a plain static profile
            nm.nmcli("con", "add", "type", "ethernet", "ifname", "nmw1", "con-name", "s1", "autoconnect",
                     "no", "ipv4.method", "manual", "ipv4.addresses", "100.64.11.2/24", "ipv4.gateway",
                     "100.64.11.1", "ipv4.route-table", "1000", "ipv6.method", "disabled")  # fmt: skip
            nm.nmcli("con", "add", "type", "ethernet", "ifname", "nmw2", "con-name", "s2", "autoconnect",
                     "no", "ipv4.method", "manual", "ipv4.addresses", "100.64.12.2/24", "ipv4.gateway",
                     "100.64.12.1", "ipv6.method", "disabled")  # fmt: skip
            nm.nmcli("-w", "15", "con", "up", "s1")
            nm.nmcli("-w", "15", "con", "up", "s2")
            wanted = {"nmw1": "100.64.11.1", "nmw2": "100.64.12.1"}
            try:
                wait_for(lambda: members(lab) == wanted, 10, "nmw1 and nmw2 in the group")
            except AssertionError as exc:
                raise AssertionError(f"{exc}: {members(lab)}; the daemon's log:\n{s.log[-3000:]}") from None
            yield Attacker(s)
            assert s.daemon.poll() is None, s.log[-3000:]
            assert "Traceback" not in s.log, s.log[-3000:]
    finally:
        shutil.rmtree(public, ignore_errors=True)


def balanced(s: Setup) -> str | None:
    """None while both links are in the group with their real gateways and the balance rule is up."""
    group = members(s.lab)
    if group != {"nmw1": "100.64.11.1", "nmw2": "100.64.12.1"}:
        return f"the group is now {group}; the daemon's log ends:\n{s.log[-3000:]}"
    rules = s.lab.ip(s.lab.router, "-4", "rule", "show")
    return None if BALANCE_RULE in rules else f"the balance rule is gone:\n{rules}"


def test_the_bus_lets_nobody_send_signals(attack: Attacker) -> None:
    """The attack is real: nobody can connect and send a signal to the daemon."""
    attack.emit("/org/freedesktop/NetworkManager", f"{NM}.Harmless")
    assert os.stat(attack.s.nm.bus.removeprefix("unix:path=")).st_mode & 0o007 == 0o007


def test_a_forged_gateway_is_ignored(attack: Attacker) -> None:
    s = attack.s
    config = attack.ip4_config("nmw1")
    attack.properties_changed(config, f"{NM}.IP4Config", f"{{'Gateway': <'{EVIL_GATEWAY}'>}}")

    def untouched() -> str | None:
        state = owned(s)
        return f"{EVIL_GATEWAY} in the routing:\n{state}" if EVIL_GATEWAY in state else balanced(s)

    holds(untouched)


def test_a_forged_captive_portal_is_ignored(attack: Attacker) -> None:
    s = attack.s
    for iface in ("nmw1", "nmw2"):
        attack.properties_changed(attack.devices[iface], f"{NM}.Device", "{'Ip4Connectivity': <uint32 2>}")
    holds(lambda: balanced(s))


def test_a_forged_metered_flag_is_ignored(attack: Attacker) -> None:
    s = attack.s
    attack.properties_changed(attack.devices["nmw1"], f"{NM}.Device", "{'Metered': <uint32 1>}")
    holds(lambda: balanced(s))
    assert "standby" not in s.router.wanhooks("status").stdout


def test_a_forged_interface_name_never_reaches_the_log(attack: Attacker) -> None:
    s = attack.s
    attack.properties_changed(
        attack.devices["nmw1"], f"{NM}.Device", "{'IpInterface': <'nmw1\\nround 99: FORGED'>}"
    )
    holds(lambda: balanced(s))
    assert "FORGED" not in s.log, s.log[-2000:]


def test_a_forged_name_owner_change_is_ignored(attack: Attacker) -> None:
    s = attack.s
    attack.emit("/org/freedesktop/DBus", "org.freedesktop.DBus.NameOwnerChanged",
                f"'{NM}'", f"'{attack.nm_owner}'", "''")  # fmt: skip
    holds(lambda: balanced(s))
    assert "NetworkManager left the bus" not in s.log, s.log[-2000:]


def test_malformed_signals_cost_a_bounded_number_of_log_lines(attack: Attacker) -> None:
    s = attack.s
    settled(s)
    before = len(s.log.splitlines())
    dev = attack.devices["nmw1"]
    forged = [
        (dev, f"{PROPS}.PropertiesChanged", ("'x'",)),  # a body too short
        (dev, f"{PROPS}.PropertiesChanged", ("'x'", "'not a dict'", "@as []")),
        (dev, f"{NM}.Device.StateChanged", ("'a'", "'b'")),
        ("/org/freedesktop/NetworkManager", f"{NM}.DeviceRemoved", ("uint32 7",)),
        ("/org/freedesktop/NetworkManager", f"{NM}.DeviceAdded", ("'/elsewhere'",)),
        ("/org/freedesktop/DBus", "org.freedesktop.DBus.NameOwnerChanged", (f"'{NM}'",)),
    ]
    for _ in range(10):
        for path, signal, args in forged:
            attack.emit(path, signal, *args)
    holds(lambda: balanced(s), 0.5)
    # the nm-dispatcher hooks of the links' activation may still be arriving: not ours to count
    added = [line for line in s.log.splitlines()[before:] if not line.startswith("heard: nm-dispatcher")]
    assert len(added) <= 6, "\n".join(added[:40])
