"""`wanhooks run` as systemd runs it (Type=notify, WatchdogSec=, ExecReload=`wanhooks reload`).

The daemon runs in a lab's router namespace with NOTIFY_SOCKET naming a
datagram socket the test binds (a path: Unix sockets by path cross network
namespaces) and reads in a thread, as systemd would: each message is noted
with when it came and, for READY=1, what the kernel's balance group held at
that moment.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from conftest import DaemonProc, Router, wait_for
from conftest import group_members as members

from wanhooks.service import control
from wanhooks.service.client import reload_daemon
from wanhooks.service.lock import run_lock

pytestmark = pytest.mark.kernel

THREE = "links:\n  - interface: w1\n  - interface: w2\n  - interface: 'w*'\n"

# Run as the daemon's process, for the one test that cannot wait READY_DEADLINE_S (20 s).
SHORT_DEADLINE = """\
import sys
from wanhooks import constants
constants.READY_DEADLINE_S = float(sys.argv[1])
from wanhooks.cli import main
sys.exit(main(sys.argv[2:]))
"""


@dataclass(frozen=True)
class Message:
    at: float  # time.monotonic() when it arrived
    lines: tuple[str, ...]
    group: dict[str, str] | None  # READY=1: the kernel's IPv4 balance group right then

    def get(self, key: str) -> str | None:
        return next((line.split("=", 1)[1] for line in self.lines if line.startswith(key + "=")), None)


class Service(DaemonProc):
    """The daemon under a pretend systemd: its notify socket, its watchdog, its signals."""

    def __init__(
        self, router: Router, *extra: str, watchdog_usec: int | None = None, deadline: float | None = None
    ) -> None:
        self.router = router
        self.messages: list[Message] = []
        path = str(router.tmp / "notify")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(path)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        env = {**os.environ, "NOTIFY_SOCKET": path}
        env.pop("WATCHDOG_PID", None)
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        start = ("-m", "wanhooks") if deadline is None else ("-c", SHORT_DEADLINE, str(deadline))
        super().__init__(router, *extra, env=env, start=start)

    def _read(self) -> None:
        with contextlib.suppress(OSError):
            while data := self.sock.recv(65536):
                at = time.monotonic()
                lines = tuple(data.decode().split("\n"))
                group = members(self.router.lab) if "READY=1" in lines else None
                self.messages.append(Message(at, lines, group))

    def with_line(self, line: str, since: float = 0.0) -> list[Message]:
        return [m for m in list(self.messages) if m.at >= since and line in m.lines]

    def statuses(self, since: float = 0.0) -> list[str]:
        return [s for m in list(self.messages) if m.at >= since and (s := m.get("STATUS")) is not None]

    def wait_line(self, line: str, timeout: float, since: float = 0.0) -> Message:
        wait_for(lambda: self.with_line(line, since), timeout, f"{line} from the daemon")
        return self.with_line(line, since)[0]

    def wait_status(self, prefix: str, timeout: float, since: float = 0.0) -> str:
        def found() -> list[str]:
            return [s for s in self.statuses(since) if s.startswith(prefix)]

        wait_for(found, timeout, f"STATUS={prefix}...")
        return found()[0]

    def pid(self) -> int:
        """The daemon's own pid, as it says (not the `ip netns exec` we started)."""
        return int(control.request(str(self.router.run_dir), {"op": "ping"})["pid"])

    def stop(self) -> int:
        code = super().stop()
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        return code


@pytest.fixture
def service(router: Router) -> Iterator[Callable[..., Service]]:
    started: list[Service] = []
    router.write_config(THREE)
    for i in (1, 2, 3):
        router.lab.set_main_default(i, 4)

    def start(*extra: str, **kwargs: int | float | None) -> Service:
        one = Service(router, *extra, **kwargs)  # type: ignore[arg-type]
        started.append(one)
        return one

    yield start
    for one in started:
        one.stop()


def test_ready_once_the_kernel_holds_the_route_then_status_watchdog_and_stopping(
    router: Router, service: Callable[..., Service]
) -> None:
    lab = router.lab
    with run_lock(str(router.run_dir)):  # the first round waits for the lock: not ready meanwhile
        daemon = service(watchdog_usec=300_000)
        wait_for(lambda: daemon.with_line("WATCHDOG=1"), 5, "the watchdog fed before any round")
        time.sleep(1.0)
        assert not daemon.with_line("READY=1"), "READY=1 before any round changed the kernel"
        assert members(lab) == {}
    ready = daemon.wait_line("READY=1", 5)
    assert ready.group is not None and set(ready.group) == {"w1", "w2", "w3"}, ready
    assert ready.get("STATUS") == "3 of 3 links balanced: w1 w2 w3"
    assert len(daemon.with_line("READY=1")) == 1

    # the watchdog: WATCHDOG_USEC / 3 = every 0.1 s, from the event loop...
    time.sleep(0.3)
    start = time.monotonic()
    time.sleep(2.0)
    fed = len([m for m in daemon.with_line("WATCHDOG=1", start) if m.at < start + 2.0])
    assert 12 <= fed <= 26, f"{fed} pings in 2 s, 20 expected"
    # ...so a process that cannot run sends none, and systemd would restart it
    pid = daemon.pid()
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        time.sleep(1.0)
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    # (a ping sent just before the stop may be read a little after it)
    assert not [m for m in daemon.with_line("WATCHDOG=1", stopped + 0.2) if m.at < resumed]
    daemon.wait_line("WATCHDOG=1", 0.5, since=resumed)

    # STATUS= follows the links, one line sent when it changes
    changed = time.monotonic()
    lab.carrier_off(3)
    status = daemon.wait_status("2 of 3", 5, changed)
    assert status == "2 of 3 links balanced: w1 w2; w3 excluded (no carrier)"
    lab.carrier_on(3)
    daemon.wait_status("3 of 3", 5, changed)
    statuses = daemon.statuses()
    assert all(a != b for a, b in itertools.pairwise(statuses)), statuses

    stopping = time.monotonic()
    assert daemon.stop() == 0
    message = daemon.wait_line("STOPPING=1", 2, stopping)
    assert "READY=1" not in message.lines
    assert set(members(lab)) == {"w1", "w2", "w3"}  # SIGTERM leaves the routing in place


def test_reload_answers_after_the_round_and_a_refused_config_keeps_the_old_one(
    router: Router, service: Callable[..., Service], capsys: pytest.CaptureFixture[str]
) -> None:
    lab = router.lab
    run_dir = str(router.run_dir)
    daemon = service()
    daemon.wait_line("READY=1", 10)

    # a good config: the answer comes once a round has put it into the kernel
    router.config.write_text("links:\n  - interface: w1\n  - interface: w3\n")
    before = time.monotonic()
    assert reload_daemon(run_dir) == 0
    assert set(members(lab)) == {"w1", "w3"}  # at once: the round ran before the answer
    assert capsys.readouterr().out == f"reloaded {router.config}: 2 link entries\n"
    reloading = daemon.wait_line("RELOADING=1", 2, before)
    assert int(reloading.get("MONOTONIC_USEC") or 0) > 0
    again = daemon.wait_line("READY=1", 2, before)
    assert again.at >= reloading.at and again.get("STATUS") == "2 of 2 links balanced: w1 w3"

    # a bad one: refused with file, line and key; the running config stays
    router.config.write_text("links:\n  - interface: w1\n  - interface: w2\n    weight: 0\n")
    before = time.monotonic()
    assert reload_daemon(run_dir) == 2
    err = capsys.readouterr().err
    where = f"{router.config}:4: links[2].weight: weight 0 is not allowed"
    assert err.startswith(f"wanhooks reload: refused, the running config stays: {where}")
    answer = control.request(run_dir, {"op": "reload"}, timeout=30)
    assert answer["ok"] is False and answer["refused"] is True and answer["error"].startswith(where)
    time.sleep(0.3)
    assert set(members(lab)) == {"w1", "w3"}
    reloading = daemon.wait_line("RELOADING=1", 2, before)
    again = daemon.wait_line("READY=1", 2, before)
    assert again.at >= reloading.at
    assert (again.get("STATUS") or "").startswith("reload refused, the running config stays:")
    assert "reload refused, keeping the running config" in daemon.text()

    # a config for hooks alone is refused too, naming the key
    router.config.write_text("links:\n  - interface: w1\nmode: hooks-only\n")
    assert reload_daemon(run_dir) == 2
    assert f"{router.config}:3: mode: hooks-only" in capsys.readouterr().err

    # SIGHUP still reloads, through the same code
    router.config.write_text(THREE)
    before = time.monotonic()
    os.kill(daemon.pid(), signal.SIGHUP)
    wait_for(lambda: set(members(lab)) == {"w1", "w2", "w3"}, 5, "all three back after SIGHUP")
    daemon.wait_line("RELOADING=1", 2, before)
    daemon.wait_status("3 of 3 links balanced", 2, before)

    assert daemon.stop() == 0
    assert reload_daemon(run_dir) == 1  # no daemon: nothing to reload
    assert "no wanhooks daemon is running" in capsys.readouterr().err


def test_ready_anyway_after_the_deadline_and_a_hooks_only_config_is_refused(
    router: Router, service: Callable[..., Service]
) -> None:
    lab = router.lab
    with run_lock(str(router.run_dir)):  # no round can finish: the kernel never matches the plan
        daemon = service(deadline=1.0)
        ready = daemon.wait_line("READY=1", 5)
        assert ready.group == {}
        assert ready.get("STATUS") == "up, not in sync: no round has finished yet; retrying"
        assert "not in sync with the plan 1 s after start-up" in daemon.text()
    daemon.wait_status("3 of 3 links balanced: w1 w2 w3", 5)
    assert len(daemon.with_line("READY=1")) == 1
    assert daemon.stop() == 0

    # mode: hooks-only -- the daemon does not start (2: systemd's RestartPreventExitStatus)
    router.config.write_text("links:\n  - interface: w1\nmode: hooks-only\n")
    router.wanhooks("cleanup")
    refused = service("--log-format", "json")
    assert refused.proc.wait(timeout=10) == 2
    lines = [json.loads(line) for line in refused.text().splitlines() if line.strip()]
    errors = [doc for doc in lines if doc["level"] == "error"]
    assert errors and errors[0]["msg"].startswith(f"wanhooks: {router.config}:3: mode: hooks-only:")
    status = refused.wait_status("config refused:", 2)
    assert f"{router.config}:3: mode:" in status
    assert not refused.with_line("READY=1")
    assert members(lab) == {} and "proto 87" not in lab.ip(lab.router, "rule", "show")  # nothing done
