"""Stop means stop (issue #14): what a dispatcher hook's event does with no daemon running.

mode: daemon (the default): the hooks only nudge a running daemon; with none, an event
changes nothing.  mode: hooks-only: each event starts a detached one-shot apply, its
output in the journal, a burst of events coalesced.

The first tests need no root: sources/notify.py with a journal, syslog or neither, a stand-in
apply of the test's own, and the hook scripts themselves.  The rest run the real
NetworkManager, and systemd-networkd with networkd-dispatcher, in lab namespaces
(managers.py), with the hooks `wanhooks install` places, a stand-in journald in each
sandbox's private /run, and a hook of the test's own beside wanhooks' noting when the
dispatcher ran them.  Each manager is set up once for its class.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Router, wait_for
from managers import (
    Dnsmasq,
    FakeJournal,
    NetworkdSandbox,
    NetworkManagerSandbox,
    available,
    networkd_available,
    sandbox_journal,
)

from wanhooks import constants as c
from wanhooks.cli import main
from wanhooks.sources import notify as nt

# --------------------------------------------------------------------------
# sources/notify.py on its own
# --------------------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path (a Unix socket's is at most 107 bytes), 0700."""
    path = Path(tempfile.mkdtemp(prefix="wh-", dir="/tmp"))
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def journal(short_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeJournal]:
    fake = FakeJournal(str(short_dir / "journal.sock"))
    monkeypatch.setattr(nt, "JOURNAL_STREAM", fake.path)
    monkeypatch.setattr(nt, "SYSLOG_SOCKET", str(short_dir / "no-syslog"))
    yield fake
    fake.close()


CHILD = "import sys; print('to stdout'); print('to stderr', file=sys.stderr)"


def test_the_stream_header_is_what_systemd_cat_sends() -> None:
    # sd_journal_stream_fd(3): identifier, unit id, priority, level prefix, then forward to
    # syslog, kmsg and console: seven lines (an eighth would be logged as a message)
    assert nt.stream_header(6) == b"wanhooks\n\n6\n1\n0\n0\n0\n"


def test_a_childs_stdout_and_stderr_reach_the_journal_at_their_priorities(journal: FakeJournal) -> None:
    nt.start_detached([sys.executable, "-c", CHILD])
    wait_for(lambda: len(journal.lines()) >= 2, 5, "both lines in the journal")
    got = {(e.identifier, e.priority, e.message) for e in journal.lines()}
    assert got == {("wanhooks", 6, "to stdout"), ("wanhooks", 3, "to stderr")}
    assert journal.bad == [] and {h[1] for h in journal.headers} == {""}  # empty unit id


def test_without_a_journal_a_childs_lines_go_to_syslog(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    syslog.bind(str(short_dir / "log"))
    monkeypatch.setattr(nt, "JOURNAL_STREAM", str(short_dir / "no-journal"))
    monkeypatch.setattr(nt, "SYSLOG_SOCKET", str(short_dir / "log"))
    nt.start_detached([sys.executable, "-c", CHILD])  # relays until the child exits
    lines = []
    syslog.settimeout(0.5)
    with contextlib.suppress(TimeoutError), syslog:
        while True:
            lines.append(syslog.recv(4096).decode())
    # facility daemon (3): info is <30>, err <27>
    got = sorted((line[: line.index(">") + 1], line.split("]: ", 1)[1]) for line in lines)
    assert got == [("<27>", "to stderr"), ("<30>", "to stdout")], lines
    assert all(line.split(">", 1)[1].startswith(f"wanhooks[{os.getpid()}]: ") for line in lines)


def test_with_neither_a_childs_lines_go_to_stderr(
    short_dir: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(nt, "JOURNAL_STREAM", str(short_dir / "no-journal"))
    monkeypatch.setattr(nt, "SYSLOG_SOCKET", str(short_dir / "no-syslog"))
    nt.start_detached([sys.executable, "-c", CHILD])
    seen = ""

    def both() -> bool:
        nonlocal seen
        seen += capfd.readouterr().err
        return "to stdout" in seen and "to stderr" in seen

    wait_for(both, 5, "the child's lines on our stderr")


# A stand-in apply: notes when it starts and ends, and takes a while.
FAKE_APPLY = (
    "import sys, time; f = open(sys.argv[1], 'a'); f.write('start %.3f\\n' % time.monotonic()); "
    "f.flush(); time.sleep(float(sys.argv[2])); f.write('end %.3f\\n' % time.monotonic())"
)


def runs(marker: Path) -> list[tuple[float, float]]:
    """(start, end) of each stand-in apply that ran to its end, from its marker file."""
    if not marker.exists():
        return []
    words = [line.split() for line in marker.read_text().splitlines()]
    starts = [float(t) for kind, t in words if kind == "start"]
    ends = [float(t) for kind, t in words if kind == "end"]
    return list(zip(starts, ends))


def test_a_burst_of_events_starts_one_apply_and_queues_at_most_one_more(
    short_dir: Path, journal: FakeJournal
) -> None:
    run_dir = str(short_dir / "run")
    marker = short_dir / "applies"
    argv = [sys.executable, "-c", FAKE_APPLY, str(marker), "0.6"]
    started: list[bool] = []
    burst = [
        threading.Thread(target=lambda: started.append(nt.apply_soon(run_dir, argv, "burst")))
        for _ in range(20)
    ]
    for thread in burst:
        thread.start()
    for thread in burst:
        thread.join(10)
    # one at once; a second for the events that came once the first had let go of the queue
    assert started.count(True) in (1, 2), started
    wait_for(lambda: len(runs(marker)) == started.count(True), 5, "the applies to end")
    done = runs(marker)
    assert all(later[0] >= earlier[1] for earlier, later in itertools.pairwise(done)), done
    # an event while an apply runs (it may have read the kernel already) gets one of its own
    t0 = time.monotonic()
    assert nt.apply_soon(run_dir, argv, "first")
    wait_for(lambda: any(start > t0 for start, _ in runs(marker)), 5, "the first apply started")
    assert nt.apply_soon(run_dir, argv, "during")  # waits for the first to exit, then starts
    wait_for(lambda: len([r for r in runs(marker) if r[0] > t0]) == 2, 5, "a second apply")
    folded = [e for e in journal.lines() if "about to start" in e.message]
    assert len(folded) == 20 - started.count(True) and all(e.priority == 7 for e in folded)


def test_an_apply_that_hangs_does_not_hold_the_queue_for_ever(
    short_dir: Path, journal: FakeJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(nt, "SLOT_WAIT_S", 0.3)
    run_dir = str(short_dir / "run")
    hung = [sys.executable, "-c", FAKE_APPLY, str(short_dir / "hung"), "3"]
    assert nt.apply_soon(run_dir, hung, "first")
    assert not nt.apply_soon(run_dir, hung, "second")  # gave up waiting, and said so
    gave_up = lambda: [e.priority for e in journal.lines() if "still runs after 0.3 s" in e.message]  # noqa: E731
    wait_for(gave_up, 2, "the error in the journal")
    assert gave_up() == [3]
    assert not nt.apply_soon(run_dir, hung, "third")  # the queue is free again: it waits its turn too


def test_notify_without_a_daemon_in_mode_daemon_does_nothing_but_say_so(
    short_dir: Path, journal: FakeJournal
) -> None:
    config = short_dir / "wanhooks.yaml"
    config.write_text("links:\n  - interface: w1\n")  # mode: daemon, the default
    run_dir = short_dir / "run"
    assert nt.notify(str(config), str(run_dir), "nm-dispatcher", "dhcp4-change", "w1") == 0
    wait_for(journal.lines, 5, "a journal line")
    time.sleep(0.1)
    assert [(e.priority, e.message) for e in journal.lines()] == [
        (6, "no daemon running: event ignored (mode: daemon): nm-dispatcher dhcp4-change w1")
    ]
    assert not run_dir.exists()  # nothing was even prepared for an apply


def test_notify_in_mode_hooks_only_applies_and_with_a_bad_config_does_nothing(
    short_dir: Path, journal: FakeJournal, monkeypatch: pytest.MonkeyPatch
) -> None:
    marker = short_dir / "applies"
    monkeypatch.setattr(nt, "wanhooks_argv", lambda: [sys.executable, "-c", FAKE_APPLY, str(marker), "0"])
    config = short_dir / "wanhooks.yaml"
    run_dir = short_dir / "run"
    config.write_text("mode: hooks-only\nlinks:\n  - interface: w1\n")
    assert nt.notify(str(config), str(run_dir), "networkd-dispatcher", "routable", "w1") == 0
    wait_for(lambda: runs(marker), 5, "the apply")
    config.write_text("mode: hooks-only\nlinks:\n  - interface: w1\n    weight: 0\n")
    assert nt.notify(str(config), str(run_dir), "networkd-dispatcher", "off", "w1") == 2
    time.sleep(0.3)
    assert len(runs(marker)) == 1
    errors = [e.message for e in journal.lines() if e.priority == 3]
    assert len(errors) == 1 and "weight" in errors[0] and "event ignored" in errors[0], errors


# --------------------------------------------------------------------------
# the hook scripts (no manager: run as a dispatcher would run them)
# --------------------------------------------------------------------------


@pytest.fixture
def nm_hook(short_dir: Path) -> Path:
    config = short_dir / "wanhooks.yaml"
    config.write_text("links:\n  - interface: w1\n")
    args = [
        "-c",
        str(config),
        "--run-dir",
        str(short_dir / "run"),
        "install",
        "--root",
        str(short_dir / "root"),
    ]
    assert main(args) == 0
    return short_dir / "root/etc/NetworkManager/dispatcher.d/90-wanhooks"


@pytest.mark.skipif(
    os.path.exists(nt.JOURNAL_STREAM) or os.path.exists(nt.SYSLOG_SOCKET),
    reason="this host has a journal or syslog: what notify says goes there, not to the hook's stderr",
)
def test_a_hook_keeps_its_stderr_only_where_it_is_the_one_log_left(nm_hook: Path, short_dir: Path) -> None:
    log = short_dir / "dispatcher.log"
    with open(log, "wb") as stderr:  # a dispatcher logging to a file (not a pipe)
        subprocess.run(
            [str(nm_hook), "w1", "up"], stdin=subprocess.DEVNULL, stderr=stderr, timeout=10, check=True
        )
    wait_for(
        lambda: "event ignored (mode: daemon): nm-dispatcher up w1" in log.read_text(), 10, "notify's line"
    )
    # a pipe: whoever reads it waits for its end, so the hook lets go of it at once
    started = time.monotonic()
    proc = subprocess.run([str(nm_hook), "w1", "up"], capture_output=True, timeout=10, check=True)
    assert time.monotonic() - started < 0.5 and proc.stderr == b""


def test_a_hook_refuses_a_wanhooks_command_install_would_never_write(nm_hook: Path, short_dir: Path) -> None:
    marker = short_dir / "ran"
    text = nm_hook.read_text()
    start = text.index('WANHOOKS="') + len('WANHOOKS="')
    end = text.index('"', start)
    nm_hook.write_text(text[:start] + f"/bin/touch {marker};/bin/touch {marker}" + text[end:])
    proc = subprocess.run([str(nm_hook), "w1", "up"], capture_output=True, text=True, timeout=10)
    assert proc.returncode == 0 and "WANHOOKS holds characters" in proc.stderr
    time.sleep(0.3)
    assert not marker.exists()


# --------------------------------------------------------------------------
# the lab: what the kernel holds, watched from inside the router namespace
# --------------------------------------------------------------------------

WATCH = r"""
import json, select, socket, subprocess, sys, time
GROUP, SOURCE_PRIORITY = int(sys.argv[1]), int(sys.argv[2])
# woken by rtnetlink (IPv4 routes and rules, nexthops): sampling costs nothing while idle
sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
sock.bind((0, (1 << 6) | (1 << 7)))  # RTNLGRP_IPV4_ROUTE, RTNLGRP_IPV4_RULE
sock.setsockopt(270, 1, 32)  # SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_NEXTHOP
BATCH = "route show table main default\nnexthop show\nrule show\n"  # (IPv4: ip's default)
def sample():
    out = subprocess.run(["ip", "-j", "-batch", "-"], input=BATCH, capture_output=True, text=True).stdout
    docs, text, at = [], out.strip(), 0
    decoder = json.JSONDecoder()
    while at < len(text):
        doc, at = decoder.raw_decode(text, at)
        docs.append(doc)
        while at < len(text) and text[at].isspace():
            at += 1
    routes, nexthops, rules = docs
    # main: the defaults in use; configured: those the manager holds, in use or not (linkdown)
    main = {r.get("dev", ""): r.get("gateway", "") for r in routes if "linkdown" not in r.get("flags", [])}
    configured = sorted(r.get("dev", "") for r in routes)
    nhs = {n["id"]: n for n in nexthops}
    group = nhs.get(GROUP, {}).get("group", [])
    members = {nhs[m["id"]].get("dev", ""): nhs[m["id"]].get("gateway", "") for m in group if m["id"] in nhs}
    sources = sorted(r.get("src", "") for r in rules if r.get("priority") == SOURCE_PRIORITY)
    return {"main": main, "configured": configured, "group": members, "sources": sources}
last = None
while True:
    now = time.monotonic()
    state = sample()
    if state != last:
        print(json.dumps({"t": now, **state}), flush=True)
        last = state
    if select.select([sock], [], [], 0.5)[0]:
        while select.select([sock], [], [], 0)[0]:
            sock.recv(1 << 20)
"""

State = dict[str, Any]


class KernelWatch:
    """The router's IPv4 main-table defaults (the manager's doing: "main" those in use,
    "configured" all it holds), balance group members and per-link source rules
    (wanhooks'), sampled by one process inside the namespace whenever rtnetlink says
    something changed: each change with its time.monotonic(), so an event and the
    kernel's answer are timed by one clock."""

    def __init__(self, router_ns: str) -> None:
        self.states: list[State] = []
        self._lock = threading.Lock()
        argv = [sys.executable, "-c", WATCH, str(c.NH_GROUP_V4), str(c.PRIO_LINK_SOURCE)]
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", router_ns, *argv],
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        wait_for(lambda: self.states, 10, "the kernel watch's first sample")

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._lock:
                self.states.append(json.loads(line))

    def now(self) -> State:
        with self._lock:
            return self.states[-1]

    def when(self, predicate: Callable[[State], bool], since: float, timeout: float, what: str) -> float:
        """The first moment at or after `since` the kernel met predicate (waiting for it)."""

        def found() -> float | None:
            with self._lock:
                states = list(self.states)
            for i, state in enumerate(states):
                ends = states[i + 1]["t"] if i + 1 < len(states) else float("inf")
                if ends >= since and predicate(state):
                    return max(float(state["t"]), since)
            return None

        wait_for(lambda: found() is not None, timeout, what)
        result = found()
        assert result is not None
        return result

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def owned_state(lab: Any) -> dict[str, list[str]]:
    """Every rule, route and nexthop wanhooks owns (protocol 87) in the router, as ip shows them."""
    r = lab.router
    rules = lab.ip(r, "-4", "rule", "show") + lab.ip(r, "-6", "rule", "show")
    routes = lab.ip(r, "-4", "route", "show", "table", "all", "proto", "87")
    routes += lab.ip(r, "-6", "route", "show", "table", "all", "proto", "87")
    return {
        "rules": sorted(line for line in rules.splitlines() if "proto 87" in line),
        "routes": sorted(routes.splitlines()),
        "nexthops": sorted(lab.ip(r, "nexthop", "show", "proto", "87").splitlines()),
    }


def kernels_own_part(state: dict[str, list[str]], gone: str) -> dict[str, list[str]]:
    """What of wanhooks' objects the kernel never changes by itself when `gone`'s cable is
    pulled.  It flushes the nexthops and routes through that device at once (and so the
    group's and the balance route's members), but never touches a rule, nor anything of
    another link: an apply would change this part (drop gone's rules, follow a new router)."""
    balance = (f"id {c.NH_GROUP_V4} ", f"default nhid {c.NH_GROUP_V4} ", "\tnexthop ")
    return {
        "rules": state["rules"],
        "routes": [line for line in state["routes"] if gone not in line and not line.startswith(balance)],
        "nexthops": [line for line in state["nexthops"] if gone not in line and not line.startswith(balance)],
    }


STAMP_HOOK = """#!/bin/sh
# the test's own: when the dispatcher ran its hooks for an event (just before 90-wanhooks)
echo "$(date +%s.%N) ${{STATE:-$2}} ${{IFACE:-$1}}" >> {path}
"""


def stamp_hook(directory: Path, stamps: Path) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    script = directory / "00-stamp"
    script.write_text(STAMP_HOOK.format(path=stamps))
    script.chmod(0o755)


class Sandbox:
    """One lab, a manager in it with the hooks installed, a stand-in journald, a kernel
    watch, and the stamps of the test's own hook."""

    def __init__(self, router: Router, journal: FakeJournal, watch: KernelWatch) -> None:
        self.router, self.lab, self.journal, self.watch = router, router.lab, journal, watch
        self.daemon_log = router.tmp / "daemon.log"
        self.stamps = router.tmp / "hook-stamps"

    def start_daemon(self, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.daemon_log, "w")  # noqa: SIM115 - the child keeps it
        proc = subprocess.Popen(
            ["ip", "netns", "exec", self.lab.router, sys.executable, "-m", "wanhooks", "-c",
             str(self.router.config), "--run-dir", str(self.router.run_dir), "run"],
            env=env, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        wait_for(lambda: "round 1:" in self.daemon_log.read_text(), 10, "the daemon's first round")
        return proc

    def journal_line(self, needle: str, since: float, timeout: float = 20) -> float:
        """When a journal line holding needle arrived (waiting for it)."""

        def found() -> float | None:
            return next((e.at for e in self.journal.lines(since) if needle in e.message), None)

        wait_for(lambda: found() is not None, timeout, f"{needle!r} in the journal:\n{self.journal.text()}")
        at = found()
        assert at is not None
        return at

    def hooks_ran(self, since: float) -> list[tuple[float, str]]:
        """(when, "up nmw1") for each event the dispatcher ran the hooks for since then."""
        if not self.stamps.exists():
            return []
        offset = time.time() - time.monotonic()
        out = []
        for line in self.stamps.read_text().splitlines():
            stamp, _, event = line.partition(" ")
            if float(stamp) - offset >= since:
                out.append((float(stamp) - offset, event))
        return out

    def hooks_only(self, links: str) -> None:
        """From here on, no daemon and nothing of wanhooks' in the kernel: the hooks apply."""
        self.router.wanhooks("cleanup")
        self.router.write_config(f"mode: hooks-only\nlinks:\n  - interface: '{links}'\n")


def timed(
    s: Sandbox, label: str, iface: str, event: float, kernel: float, times: list[tuple[str, float]]
) -> None:
    """Note how long the kernel took after the event; print it, split at the moment the
    dispatcher first ran the hooks for `iface`, and when each journal line came."""
    times.append((label, kernel - event))
    ran = next(((at, what) for at, what in s.hooks_ran(event - 0.05) if what.endswith(f" {iface}")), None)
    split = (
        f" ({ran[0] - event:.3f} s to the {ran[1]} hook, {kernel - ran[0]:.3f} s from there)" if ran else ""
    )
    print(f"  {label}: the kernel followed {kernel - event:.3f} s after the event{split}")
    for entry in s.journal.lines(event):
        if entry.at <= kernel + 0.05:
            print(f"      {entry.at - event:+.3f} s  <{entry.priority}> {entry.message[:100]}")


def settle(s: Sandbox) -> None:
    """Wait until the hooks and their applies are done: a second with no journal line."""
    wait_for(
        lambda: time.monotonic() - max((e.at for e in s.journal.lines()), default=0.0) > 1.0, 15, "quiet"
    )


def no_apply_ran(s: Sandbox, since: float) -> None:
    """Since then, notify said "ignored" to every event, and started nothing."""
    heard = s.journal.lines(since)
    assert heard and all("event ignored (mode: daemon)" in e.message for e in heard), s.journal.text(since)
    assert not (s.router.run_dir / nt.SLOT_FILE).exists()  # no apply was ever started
    print(f"mode daemon, no daemon: {len(heard)} event(s) after the stop, each ignored:")
    print(s.journal.text(since))


# --------------------------------------------------------------------------
# NetworkManager: nmw1 static (ISP 1), nmw2 by DHCP (ISP 2)
# --------------------------------------------------------------------------


class NmSandbox(Sandbox):
    def __init__(self, router: Router, journal: FakeJournal, watch: KernelWatch, nm: NetworkManagerSandbox,
                 dhcp: Dnsmasq) -> None:  # fmt: skip
        super().__init__(router, journal, watch)
        self.nm, self.dhcp = nm, dhcp


@pytest.fixture(scope="class")
def nm_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NmSandbox]:
    from wanhooks.lab import Lab

    tmp = tmp_path_factory.mktemp("nm-modes")
    with Lab(3) as lab:
        for i in (1, 2):
            isp = lab.isp(i)
            lab.r(["ip", "link", "add", f"nmw{i}", "type", "veth", "peer", "name", f"n{i}", "netns", isp])
            lab.ns_exec(isp, ["ip", "addr", "add", f"100.64.1{i}.1/24", "dev", f"n{i}"])
            lab.ns_exec(isp, ["ip", "link", "set", f"n{i}", "up"])
        lab.ns_exec(lab.isp(2), ["ip", "addr", "add", "100.64.12.254/24", "dev", "n2"])
        router = Router(lab, tmp)
        router.write_config("links:\n  - interface: 'nmw*'\n")  # mode: daemon, the default
        hooks = tmp / "hooks"
        router.wanhooks("install", "--root", str(hooks))
        nm = NetworkManagerSandbox(lab.router, tmp / "nm")
        nm._write()
        nm.add_dispatcher_script(hooks / "etc/NetworkManager/dispatcher.d/90-wanhooks")
        stamp_hook(tmp / "nm/etc/dispatcher.d", tmp / "hook-stamps")
        dhcp = Dnsmasq(lab.isp(2), "n2", "100.64.12.100", "100.64.12.150", tmp)
        journal: FakeJournal | None = None
        watch: KernelWatch | None = None
        try:
            nm.up()
            journal = sandbox_journal(nm.nm_pid)  # in NetworkManager's private /run
            watch = KernelWatch(lab.router)
            dhcp.start("100.64.12.1")
            nm.nmcli("con", "add", "type", "ethernet", "ifname", "nmw1", "con-name", "s1", "ipv4.method",
                     "manual", "ipv4.addresses", "100.64.11.2/24", "ipv4.gateway", "100.64.11.1",
                     "ipv6.method", "disabled")  # fmt: skip
            nm.nmcli("con", "add", "type", "ethernet", "ifname", "nmw2", "con-name", "d2", "ipv4.method",
                     "auto", "ipv6.method", "disabled")  # fmt: skip
            wait_for(lambda: set(watch.now()["main"]) == {"nmw1", "nmw2"}, 30, "both links up")
            sandbox = NmSandbox(router, journal, watch, nm, dhcp)
            for name in ("nmw1", "nmw2"):  # the hooks for bringing them up are done
                sandbox.journal_line(f"nm-dispatcher up {name}", 0.0)
            yield sandbox
        finally:
            if watch is not None:
                watch.stop()
            if journal is not None:
                journal.close()
            dhcp.stop()
            nm.down()


@pytest.mark.kernel
@pytest.mark.skipif(bool(available()), reason=available() or "ok")
class TestNetworkManager:
    def test_with_the_daemon_stopped_no_event_changes_the_kernel(self, nm_lab: NmSandbox) -> None:
        s, lab = nm_lab, nm_lab.lab
        daemon = s.start_daemon(env=s.nm.env)
        try:
            wait_for(lambda: s.watch.now()["group"] == {"nmw1": "100.64.11.1", "nmw2": "100.64.12.1"}, 10,
                     "both links balanced")  # fmt: skip
        finally:
            daemon.send_signal(signal.SIGTERM)  # systemctl stop wanhooks
            assert daemon.wait(10) == 0
        before = owned_state(lab)
        t0 = time.monotonic()
        s.dhcp.start("100.64.12.254")  # the ISP's DHCP hands out another router on renewal
        s.watch.when(lambda st: st["main"].get("nmw2") == "100.64.12.254", t0, 20, "NM taking the new router")
        t1 = time.monotonic()
        lab.ns_exec(lab.isp(1), ["ip", "link", "set", "n1", "down"])  # nmw1's cable
        s.journal_line("event ignored (mode: daemon): nm-dispatcher down nmw1", t1)
        time.sleep(3)  # what an apply would have needed, several times over
        after = owned_state(lab)
        assert kernels_own_part(after, "nmw1") == kernels_own_part(before, "nmw1")
        assert s.watch.now()["group"] == {"nmw2": "100.64.12.1"}  # the old router, still
        print(f"\nNetworkManager ran the hooks for: {[event for _, event in s.hooks_ran(t0)]}")
        no_apply_ran(s, t0)

    def test_in_hooks_only_mode_each_event_is_followed(self, nm_lab: NmSandbox) -> None:
        s, lab, watch = nm_lab, nm_lab.lab, nm_lab.watch
        # where the last test left things (made so, if it did not): nmw1's cable out, nmw2
        # leased with 100.64.12.254 as its router
        lab.ns_exec(lab.isp(1), ["ip", "link", "set", "n1", "down"])
        if watch.now()["main"].get("nmw2") != "100.64.12.254":
            s.dhcp.start("100.64.12.254")
        only_nmw2 = {"nmw2": "100.64.12.254"}
        wait_for(lambda: watch.now()["configured"] == ["nmw2"] and watch.now()["main"] == only_nmw2, 30,
                 "nmw1 down, nmw2 via .254")  # fmt: skip
        settle(s)
        s.hooks_only("nmw*")
        assert watch.now()["group"] == {} and watch.now()["sources"] == []
        times: list[tuple[str, float]] = []
        print()

        t0 = time.monotonic()
        lab.ns_exec(lab.isp(1), ["ip", "link", "set", "n1", "up"])  # the cable back: NM activates s1
        event = watch.when(lambda st: "nmw1" in st["main"], t0, 20, "NM configuring nmw1")
        kernel = watch.when(
            lambda st: st["group"] == {"nmw1": "100.64.11.1", "nmw2": "100.64.12.254"}
            and "100.64.11.2" in st["sources"], event, 10, "both links balanced")  # fmt: skip
        timed(s, "link up (nmw1's cable back, NetworkManager activates it)", "nmw1", event, kernel, times)

        t0 = time.monotonic()
        s.dhcp.start("100.64.12.1")  # another router on renewal
        event = watch.when(lambda st: st["main"].get("nmw2") == "100.64.12.1", t0, 20, "NM taking it")
        time.sleep(2.5)
        if any(what == "dhcp4-change nmw2" for _, what in s.hooks_ran(t0)):
            kernel = watch.when(
                lambda st: st["group"].get("nmw2") == "100.64.12.1", event, 5, "the new router"
            )
            timed(s, "DHCP router change (dhcp4-change)", "nmw2", event, kernel, times)
        else:
            # NetworkManager 1.42 dispatches nothing for a renewal, even one naming another
            # router: with no daemon watching the kernel, the old router stays until the next event
            assert watch.now()["group"].get("nmw2") == "100.64.12.254"
            print(
                "  DHCP router change: NetworkManager ran no hook for it: not followed before the next event"
            )

        t0 = time.monotonic()
        lab.ns_exec(lab.isp(1), ["ip", "link", "set", "n1", "down"])  # the cable out
        # NetworkManager gives the carrier a few seconds to come back before it deactivates
        event = watch.when(lambda st: "nmw1" not in st["configured"], t0, 20, "NM deconfiguring nmw1")
        kernel = watch.when(
            lambda st: st["group"] == {"nmw2": "100.64.12.1"} and "100.64.11.2" not in st["sources"],
            event, 10, "nmw1 gone from wanhooks' routing, nmw2 via its new router")  # fmt: skip
        timed(
            s,
            "link down (nmw1's cable out, NetworkManager deactivates it)",
            "nmw1",
            event,
            kernel,
            times,
        )

        assert [e for e in s.journal.lines() if e.priority <= 3] == [], s.journal.text()
        applied = [
            e.message.split("applying for ")[1] for e in s.journal.lines() if "applying for" in e.message
        ]
        print(f"  {len(applied)} applies started, for: {'; '.join(applied)}")
        # each event was followed (the waits above); how fast is printed, not asserted: the
        # 1 s target is a benchmark's (bench/event_latency.py), on a machine of any speed
        assert len(times) >= 2, times


# --------------------------------------------------------------------------
# systemd-networkd: ndw1 static (ISP 3), ndw2 by DHCP (ISP 2), networkd-dispatcher
# --------------------------------------------------------------------------


class NdSandbox(Sandbox):
    def __init__(self, router: Router, journal: FakeJournal, watch: KernelWatch, nd: NetworkdSandbox,
                 dhcp: Dnsmasq) -> None:  # fmt: skip
        super().__init__(router, journal, watch)
        self.nd, self.dhcp = nd, dhcp


@pytest.fixture(scope="class")
def nd_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NdSandbox]:
    from test_networkd import DHCP, STATIC, add_uplink

    from wanhooks.install import NETWORKD_STATES
    from wanhooks.lab import Lab

    tmp = tmp_path_factory.mktemp("nd-modes")
    with Lab(3) as lab:
        router = Router(lab, tmp)
        router.write_config("links:\n  - interface: 'ndw*'\n")  # mode: daemon, the default
        hooks = tmp / "hooks"
        router.wanhooks("install", "--root", str(hooks))
        for state in NETWORKD_STATES:
            stamp_hook(hooks / f"etc/networkd-dispatcher/{state}.d", tmp / "hook-stamps")
        nd = NetworkdSandbox(
            lab.router, hooks / "etc/networkd-dispatcher", hooks / "etc/systemd/networkd.conf.d/wanhooks.conf"
        )
        dhcp = Dnsmasq(lab.isp(2), "n2", "100.64.14.100", "100.64.14.150", tmp)
        journal: FakeJournal | None = None
        watch: KernelWatch | None = None
        try:
            nd.up({"50-ndw1.network": STATIC, "50-ndw2.network": DHCP})
            journal = sandbox_journal(nd._pid("dispatcher"))  # in the dispatcher's private /run
            watch = KernelWatch(lab.router)
            add_uplink(lab, "ndw1", 3, "n1", "100.64.13.1/24")
            add_uplink(lab, "ndw2", 2, "n2", "100.64.14.1/24")
            lab.ns_exec(lab.isp(2), ["ip", "addr", "add", "100.64.14.254/24", "dev", "n2"])
            dhcp.start("100.64.14.1")
            wait_for(lambda: set(watch.now()["main"]) == {"ndw1", "ndw2"}, 30, "both links up")
            sandbox = NdSandbox(router, journal, watch, nd, dhcp)
            for name in ("ndw1", "ndw2"):  # the hooks for bringing them up are done
                sandbox.journal_line(f"networkd-dispatcher routable {name}", 0.0)
            yield sandbox
        finally:
            if watch is not None:
                watch.stop()
            if journal is not None:
                journal.close()
            dhcp.stop()
            nd.down()


@pytest.mark.kernel
@pytest.mark.skipif(bool(networkd_available()), reason=networkd_available() or "ok")
class TestNetworkd:
    def test_with_the_daemon_stopped_no_event_changes_the_kernel(self, nd_lab: NdSandbox) -> None:
        s, lab = nd_lab, nd_lab.lab
        leased = s.watch.when(lambda st: "ndw2" in st["main"], 0.0, 1, "ndw2's lease")
        daemon = s.start_daemon()
        try:
            wait_for(lambda: s.watch.now()["group"] == {"ndw1": "100.64.13.1", "ndw2": "100.64.14.1"}, 10,
                     "both links balanced")  # fmt: skip
        finally:
            daemon.send_signal(signal.SIGTERM)  # systemctl stop wanhooks
            assert daemon.wait(10) == 0
        # renewals that change nothing (every 4 s: T1) run no hook
        time.sleep(max(0.0, leased + 5.0 - time.monotonic()))
        renewed = [event for at, event in s.hooks_ran(leased + 1.0) if "ndw2" in event]
        assert renewed == [], renewed
        before = owned_state(lab)
        t0 = time.monotonic()
        s.dhcp.start("100.64.14.254")  # the ISP's DHCP hands out another router on renewal
        s.watch.when(lambda st: st["main"].get("ndw2") == "100.64.14.254", t0, 20, "networkd taking it")
        t1 = time.monotonic()
        lab.ns_exec(lab.isp(3), ["ip", "link", "set", "n1", "down"])  # ndw1's cable
        s.journal_line("event ignored (mode: daemon): networkd-dispatcher no-carrier ndw1", t1)
        time.sleep(3)  # what an apply would have needed, several times over
        after = owned_state(lab)
        assert kernels_own_part(after, "ndw1") == kernels_own_part(before, "ndw1")
        assert s.watch.now()["group"] == {"ndw2": "100.64.14.1"}  # the old router, still
        print(f"\nnetworkd-dispatcher ran the hooks for: {[event for _, event in s.hooks_ran(t0)]}")
        no_apply_ran(s, t0)

    def test_in_hooks_only_mode_each_event_is_followed(self, nd_lab: NdSandbox) -> None:
        s, lab, watch = nd_lab, nd_lab.lab, nd_lab.watch
        # where the last test left things (made so, if it did not): ndw1's cable out, ndw2
        # leased with 100.64.14.254 as its router
        lab.ns_exec(lab.isp(3), ["ip", "link", "set", "n1", "down"])
        if watch.now()["main"].get("ndw2") != "100.64.14.254":
            s.dhcp.start("100.64.14.254")
        wait_for(lambda: watch.now()["main"] == {"ndw2": "100.64.14.254"}, 30, "ndw1 down, ndw2 via .254")
        settle(s)
        s.hooks_only("ndw*")
        assert watch.now()["group"] == {} and watch.now()["sources"] == []
        times: list[tuple[str, float]] = []
        print()

        t0 = time.monotonic()
        lab.ns_exec(lab.isp(3), ["ip", "link", "set", "n1", "up"])  # the cable back
        event = watch.when(lambda st: "ndw1" in st["main"], t0, 20, "ndw1 routable again")
        kernel = watch.when(
            lambda st: st["group"] == {"ndw1": "100.64.13.1", "ndw2": "100.64.14.254"}
            and "100.64.13.2" in st["sources"], event, 10, "both links balanced")  # fmt: skip
        timed(s, "link up (ndw1's cable back)", "ndw1", event, kernel, times)
        settle(s)  # the hooks for the states that follow, and their apply

        t0 = time.monotonic()
        s.dhcp.start("100.64.14.1")  # another router on renewal: networkd reconfigures the link
        event = watch.when(lambda st: st["main"].get("ndw2") == "100.64.14.1", t0, 20, "networkd taking it")
        time.sleep(1.0)
        if any(what.endswith(" ndw2") for _, what in s.hooks_ran(t0)):
            kernel = watch.when(
                lambda st: st["group"].get("ndw2") == "100.64.14.1", event, 5, "the new router"
            )
            timed(s, "DHCP router change (networkd-dispatcher: configured)", "ndw2", event, kernel, times)
        else:
            # networkd usually passes through "configuring" for a new router, and the
            # dispatcher runs the configured hooks again; now and then it does not, and with
            # no daemon watching the kernel the old router stays until the next event
            assert watch.now()["group"].get("ndw2") == "100.64.14.254"
            print("  DHCP router change: networkd-dispatcher ran no hook: not followed before the next event")
        settle(s)

        t0 = time.monotonic()
        lab.ns_exec(lab.isp(3), ["ip", "link", "set", "n1", "down"])  # the cable out
        event = watch.when(lambda st: "ndw1" not in st["main"], t0, 20, "ndw1's default dead")
        # the kernel drops the device's nexthops, and so its group membership, by itself at
        # once; what only an apply removes is its source rule
        kernel = watch.when(
            lambda st: st["group"] == {"ndw2": "100.64.14.1"} and "100.64.13.2" not in st["sources"],
            event, 10, "ndw1 gone from wanhooks' routing")  # fmt: skip
        timed(s, "link down (ndw1's cable out)", "ndw1", event, kernel, times)

        assert [e for e in s.journal.lines() if e.priority <= 3] == [], s.journal.text()
        applied = [
            e.message.split("applying for ")[1] for e in s.journal.lines() if "applying for" in e.message
        ]
        print(f"  {len(applied)} applies started, for: {'; '.join(applied)}")
        # each event was followed (the waits above); how fast is printed, not asserted: the
        # 1 s target is a benchmark's (bench/event_latency.py), on a machine of any speed
        assert len(times) >= 2, times
