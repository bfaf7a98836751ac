"""Real network managers for the tests, each inside a lab namespace (never on the host).

NetworkManager runs in the router namespace with a private mount namespace
(tmpfs /run; its own /etc/NetworkManager, /var/lib/NetworkManager) and a
private D-Bus system bus whose socket lives in a temp directory, so the
daemon under test -- in the same network namespace -- reaches it through
DBUS_SYSTEM_BUS_ADDRESS.  nm-dispatcher is D-Bus activated by that bus and
runs the dispatcher scripts placed in the private dispatcher.d.  /sys is
read-only in that mount namespace: without udev, that is what makes
NetworkManager manage devices (its container mode).  It manages only
interfaces named `nmw*`; the lab's own links stay untouched.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import NamedTuple

BUS_CONF = """\
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={root}/system_bus_socket</listen>
  <auth>EXTERNAL</auth>
  <servicedir>{root}/services</servicedir>
  <policy context="default">
    <allow user="*"/> <allow own="*"/>
    <allow send_destination="*" eavesdrop="true"/> <allow eavesdrop="true"/>
  </policy>
</busconfig>
"""

NM_CONF = """\
[main]
plugins=keyfile
no-auto-default=*
dns=none
rc-manager=unmanaged
hostname-mode=none
auth-polkit=false
dhcp=internal

[keyfile]
unmanaged-devices=except:interface-name:nmw*

[connectivity]
enabled=false

[logging]
level=INFO
"""

DISPATCHER_SERVICE = """\
[D-BUS Service]
Name=org.freedesktop.nm_dispatcher
Exec=/usr/lib/NetworkManager/nm-dispatcher
"""

INNER = """\
set -e
mount -t tmpfs -o mode=0755 wh-run /run
mkdir -p /run/NetworkManager
mount --bind {root}/run /run/NetworkManager
mount --bind {root}/lib /var/lib/NetworkManager
mount --bind {root}/etc /etc/NetworkManager
mount -o remount,bind,ro /sys
export DBUS_SYSTEM_BUS_ADDRESS=unix:path={root}/system_bus_socket
dbus-daemon --config-file={root}/bus.conf --fork --nopidfile --print-pid=3 3>{root}/dbus.pid
exec NetworkManager --debug --log-level=INFO >{root}/log/nm.log 2>&1
"""


def in_private_mounts(netns: str, script: str) -> list[str]:
    """argv running a shell script in netns, in a mount namespace of its own."""
    return [
        "ip",
        "netns",
        "exec",
        netns,
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        script,
    ]


def available() -> str:
    """Empty if NetworkManager can run here, else why not."""
    for tool in ("NetworkManager", "nmcli", "dbus-daemon", "unshare", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs {tool} (Debian: network-manager, dbus, util-linux)"
    return ""


class NetworkManagerSandbox:
    def __init__(self, netns: str, root: Path) -> None:
        self.netns = netns
        self.root = root
        self.bus = f"unix:path={root}/system_bus_socket"
        self.nm_pid = 0

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": self.bus}

    def _write(self) -> None:
        for sub in (
            "services",
            "run",
            "lib",
            "log",
            "etc/system-connections",
            "etc/conf.d",
            "etc/dispatcher.d",
        ):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "etc/system-connections").chmod(0o700)
        (self.root / "bus.conf").write_text(BUS_CONF.format(root=self.root))
        (self.root / "services/org.freedesktop.nm_dispatcher.service").write_text(DISPATCHER_SERVICE)
        (self.root / "etc/NetworkManager.conf").write_text(NM_CONF)

    def add_dispatcher_script(self, source: Path) -> None:
        target = self.root / "etc/dispatcher.d" / source.name
        shutil.copy(source, target)
        target.chmod(0o755)

    def up(self) -> None:
        self._write()
        inner = INNER.format(root=self.root)
        proc = subprocess.Popen(
            in_private_mounts(self.netns, inner),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "log/inner.log", "w"),  # noqa: SIM115 - the child keeps it
            start_new_session=True,
        )
        self.nm_pid = proc.pid  # ip netns exec, unshare and sh all exec: this becomes NetworkManager
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + 20
        while not (self.root / "system_bus_socket").exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no bus: {(self.root / 'log/inner.log').read_text()}")
            time.sleep(0.05)
        subprocess.run(["nm-online", "-s", "-q", "-t", "20"], env=self.env, check=True, timeout=30)

    def nmcli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["nmcli", *args], env=self.env, capture_output=True, text=True, check=check, timeout=60
        )

    def dbus_pid(self) -> int:
        return int((self.root / "dbus.pid").read_text().split()[0])

    def kill_nm(self) -> None:
        """NetworkManager dies (the bus stays)."""
        os.kill(self.nm_pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(self.nm_pid, 0)
        self.nm_pid = 0

    def start_nm(self) -> None:
        """Start NetworkManager again, in the namespaces the bus lives in."""
        argv = [
            "nsenter", "--target", str(self.dbus_pid()), "--mount", "--net", "--",
            "NetworkManager", "--debug", "--log-level=INFO",
        ]  # fmt: skip
        log = open(self.root / "log/nm-restart.log", "w")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(argv, env=self.env, stdout=log, stderr=log, start_new_session=True)
        self.nm_pid = proc.pid
        subprocess.run(["nm-online", "-s", "-q", "-t", "20"], env=self.env, check=True, timeout=30)

    def down(self) -> None:
        if self.nm_pid:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.nm_pid, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline:
                try:
                    if os.waitpid(self.nm_pid, os.WNOHANG)[0]:
                        break
                except ChildProcessError:
                    break
                time.sleep(0.05)
            else:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.nm_pid, signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(self.dbus_pid(), signal.SIGTERM)  # nm-dispatcher goes with its bus

    def log(self) -> str:
        parts = []
        for name in ("nm.log", "nm-restart.log", "inner.log"):
            path = self.root / "log" / name
            if path.exists():
                parts.append(path.read_text()[-3000:])
        return "\n".join(parts)


class Dnsmasq:
    """A DHCP server in an ISP namespace, handing out `router` as the gateway; short T1/T2."""

    def __init__(self, netns: str, iface: str, first: str, last: str, root: Path) -> None:
        self.netns, self.iface, self.first, self.last, self.root = netns, iface, first, last, root
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, router: str) -> None:
        self.stop()
        conf = self.root / "dnsmasq-empty.conf"
        conf.write_text("")
        argv = [
            "ip", "netns", "exec", self.netns, "dnsmasq", "--keep-in-foreground",
            f"--conf-file={conf}", "--port=0", f"--interface={self.iface}", "--bind-interfaces",
            "--except-interface=lo", "--no-ping", f"--dhcp-range={self.first},{self.last},255.255.255.0,2m",
            f"--dhcp-option=option:router,{router}",
            "--dhcp-option=option:T1,4", "--dhcp-option=option:T2,6",
            f"--dhcp-leasefile={self.root}/dnsmasq.leases", f"--pid-file={self.root}/dnsmasq.pid",
        ]  # fmt: skip
        self.proc = subprocess.Popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None


def kea_available() -> str:
    return "" if shutil.which("kea-dhcp6") else "needs kea-dhcp6 (Debian: kea-dhcp6-server)"


class KeaPD:
    """Kea's DHCPv6 server in an ISP namespace: an address from `subnet` and a prefix delegated
    (a /60) from `pool` (a /56 or /57), with lifetimes of seconds, so that a renumbering shows
    within a test.  `renumber(pool)` makes the next renewal hand out a prefix from a new pool
    (and the old one with lifetimes 0: what an ISP that renumbers at a renewal sends)."""

    def __init__(self, netns: str, iface: str, subnet: str, pool: str, root: Path) -> None:
        self.netns, self.iface, self.subnet, self.root = netns, iface, subnet, root
        self.pool = pool
        self.conf = root / f"kea6-{netns}.json"
        self.log_path = root / f"kea6-{netns}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _write(self) -> None:
        net = ipaddress.IPv6Network(self.pool)
        subnet = ipaddress.IPv6Network(self.subnet)
        conf = {
            "Dhcp6": {
                "interfaces-config": {
                    "interfaces": [self.iface],
                    # the ISP's link-local may still be tentative (DAD) when Kea starts
                    "service-sockets-max-retries": 40,
                    "service-sockets-retry-wait-time": 250,
                },
                "server-id": {"type": "LL", "persist": False},
                "lease-database": {"type": "memfile", "persist": False},
                "renew-timer": 4,
                "rebind-timer": 6,
                "preferred-lifetime": 8,
                "valid-lifetime": 12,
                "subnet6": [
                    {
                        "id": 1,
                        "subnet": str(subnet),
                        "interface": self.iface,
                        "pools": [
                            {"pool": f"{subnet.network_address + 0x100}-{subnet.network_address + 0x1FF}"}
                        ],
                        "pd-pools": [
                            {
                                "prefix": str(net.network_address),
                                "prefix-len": net.prefixlen,
                                "delegated-len": 60,
                            }
                        ],
                    }
                ],
            }
        }
        self.conf.write_text(json.dumps(conf, indent=1))

    def start(self) -> None:
        self._write()
        env = {
            **os.environ,
            "KEA_PIDFILE_DIR": str(self.root),
            "KEA_LOCKFILE_DIR": "none",
            "KEA_LOGGER_DESTINATION": "stderr",
        }
        log = open(self.log_path, "w")  # noqa: SIM115 - the child keeps it
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, "kea-dhcp6", "-c", str(self.conf)],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 15
        while "DHCP6_STARTED" not in self.log():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kea-dhcp6 did not start:\n{self.log()}")
            time.sleep(0.05)

    def renumber(self, pool: str) -> None:
        """Delegate from `pool` from now on (the configuration reloaded on SIGHUP)."""
        assert self.proc is not None
        self.pool = pool
        self._write()
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(5)
        self.proc = None

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""


ND_INNER = """\
set -e
mount -t tmpfs -o mode=0755 wh-run /run
mkdir -p /run/systemd/netif/links /run/systemd/netif/leases /run/systemd/netif/lldp
chown -R systemd-network:systemd-network /run/systemd/netif
mount -t tmpfs -o mode=0755 wh-etc-systemd /etc/systemd
mkdir -p /etc/systemd/network /etc/systemd/networkd.conf.d
mount --bind {root}/network /etc/systemd/network
mount --bind {root}/conf.d /etc/systemd/networkd.conf.d
mount --bind {root}/empty /usr/lib/systemd/network
mount -o remount,bind,ro /sys
export DBUS_SYSTEM_BUS_ADDRESS=unix:path={root}/system_bus_socket
dbus-daemon --config-file={root}/bus.conf --fork --nopidfile --print-pid=3 3>{root}/dbus.pid
SYSTEMD_LOG_TARGET=console SYSTEMD_LOG_LEVEL=info setsid /lib/systemd/systemd-networkd \
    </dev/null >{root}/log/networkd.log 2>&1 &
echo $! > {root}/networkd.pid
i=0
until dbus-send --bus=unix:path={root}/system_bus_socket --print-reply --dest=org.freedesktop.DBus \
    /org/freedesktop/DBus org.freedesktop.DBus.NameHasOwner string:org.freedesktop.network1 2>/dev/null \
    | grep -q true; do i=$((i+1)); [ $i -lt 200 ] || exit 1; sleep 0.05; done
setsid /usr/bin/networkd-dispatcher -S {hooks} -v </dev/null >{root}/log/networkd-dispatcher.log 2>&1 &
echo $! > {root}/dispatcher.pid
i=0
until grep -q 'Startup complete' {root}/log/networkd-dispatcher.log; do
    i=$((i+1)); [ $i -lt 200 ] || exit 1; sleep 0.05
done
"""


def networkd_available() -> str:
    for tool in ("/lib/systemd/systemd-networkd", "/usr/bin/networkd-dispatcher", "dbus-daemon", "dbus-send"):
        if shutil.which(tool) is None and not os.path.exists(tool):
            return f"needs {tool} (Debian: systemd, networkd-dispatcher, dbus)"
    return ""


class NetworkdSandbox:
    """systemd-networkd + networkd-dispatcher in a lab namespace, private bus and mounts.

    Start it before creating the links it should see: networkd signals (and
    so dispatches) only transitions that happen after its bus is ready.
    `conf` becomes /etc/systemd/networkd.conf.d (wanhooks' drop-in goes there).
    """

    def __init__(self, netns: str, hooks: Path, conf: Path) -> None:
        # networkd drops to the systemd-network user before it connects to the bus:
        # the socket's directory must be reachable for everyone (not a 0700 pytest tmp dir)
        self.root = Path(tempfile.mkdtemp(prefix="wanhooks-nd-", dir="/tmp"))
        self.root.chmod(0o755)
        self.netns, self.hooks, self.conf = netns, hooks, conf

    def up(self, network_files: dict[str, str]) -> None:
        for sub in ("network", "empty", "log", "conf.d"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        for name, text in network_files.items():
            (self.root / "network" / name).write_text(text)
        shutil.copy(self.conf, self.root / "conf.d" / "wanhooks.conf")
        (self.root / "bus.conf").write_text(
            BUS_CONF.format(root=self.root).replace(f"<servicedir>{self.root}/services</servicedir>", "")
        )
        inner = ND_INNER.format(root=self.root, hooks=self.hooks)
        subprocess.run(
            in_private_mounts(self.netns, inner),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            check=True,
            timeout=60,
        )

    def _pid(self, name: str) -> int:
        return int((self.root / f"{name}.pid").read_text().split()[0])

    def pid(self, name: str) -> int:
        """The pid of "networkd", "dbus" or "dispatcher" (to enter networkd's namespaces)."""
        return self._pid(name)

    def nsexec(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run in networkd's network and mount namespaces (networkctl needs both)."""
        return subprocess.run(
            ["nsenter", "--target", str(self._pid("networkd")), "--mount", "--net", "--", *argv],
            env={**os.environ, "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.root}/system_bus_socket"},
            capture_output=True,
            text=True,
            check=check,
            timeout=60,
        )

    def restart_networkd(self) -> None:
        """Stop networkd and start it again in the same namespaces (it re-reads the kernel's
        state at start: that is when it deletes foreign routes and rules, unless told not to)."""
        old = self._pid("networkd")
        os.kill(old, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{old}") and time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(old, os.WNOHANG)
            time.sleep(0.05)
        log = open(self.root / "log/networkd-restart.log", "w")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            [
                "nsenter",
                "--target",
                str(self._pid("dbus")),
                "--mount",
                "--net",
                "--",
                "/lib/systemd/systemd-networkd",
            ],
            env={
                **os.environ,
                "DBUS_SYSTEM_BUS_ADDRESS": f"unix:path={self.root}/system_bus_socket",
                "SYSTEMD_LOG_TARGET": "console",
                "SYSTEMD_LOG_LEVEL": "info",
            },
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        (self.root / "networkd.pid").write_text(str(proc.pid))
        time.sleep(1.0)

    def down(self) -> None:
        for name in ("dispatcher", "networkd", "dbus"):
            with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
                os.kill(self._pid(name), signal.SIGTERM)
        time.sleep(0.2)
        shutil.rmtree(self.root, ignore_errors=True)

    def log(self) -> str:
        return "\n".join(
            (self.root / "log" / n).read_text()[-3000:]
            for n in ("networkd.log", "networkd-dispatcher.log")
            if (self.root / "log" / n).exists()
        )


class JournalEntry(NamedTuple):
    at: float  # time.monotonic() when the line arrived
    identifier: str
    priority: int
    message: str


class FakeJournal:
    """journald's stream socket (/run/systemd/journal/stdout), played by the test.

    Bound at `path` -- for a sandbox, /proc/<pid>/root/run/systemd/journal/stdout: the
    socket then lives in the sandbox's private /run, where its processes (the dispatchers
    and what their hooks start) find it, and the host's /run is untouched.  Each
    connection is read as journald reads it: a header of seven lines (identifier, unit
    id, priority, level prefix, forward to syslog, kmsg, console), then one entry per
    line; with level prefix 1 a line may start with "<N>" to set its own priority.  A
    header journald would not accept is kept in `bad`."""

    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.path = path
        self.entries: list[JournalEntry] = []
        self.headers: list[list[str]] = []
        self.bad: list[str] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.bind(path)
        self._sock.listen(64)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(conn,), daemon=True).start()

    def _read(self, conn: socket.socket) -> None:
        with conn, conn.makefile("rb") as stream:
            header = [stream.readline().decode("utf-8", "replace").rstrip("\n") for _ in range(7)]
            with self._lock:
                self.headers.append(header)
            identifier, _unit, priority, prefix, *forward = header
            if not (priority.isdigit() and int(priority) <= 7 and prefix in ("0", "1")) or any(
                flag not in ("0", "1") for flag in forward
            ):
                with self._lock:
                    self.bad.append(repr(header))
                return
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                level = int(priority)
                if prefix == "1" and re.match(r"<[0-7]>", line):
                    level, line = int(line[1]), line[3:]
                with self._lock:
                    self.entries.append(JournalEntry(time.monotonic(), identifier, level, line))

    def lines(self, since: float = 0.0) -> list[JournalEntry]:
        with self._lock:
            return [entry for entry in self.entries if entry.at >= since]

    def text(self, since: float = 0.0) -> str:
        return "\n".join(f"<{e.priority}>{e.identifier}: {e.message}" for e in self.lines(since))

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


def sandbox_journal(pid: int) -> FakeJournal:
    """A FakeJournal in the private /run of the mount namespace process `pid` lives in."""
    return FakeJournal(f"/proc/{pid}/root/run/systemd/journal/stdout")
