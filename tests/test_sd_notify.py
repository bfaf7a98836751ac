"""sd_notify by hand: datagrams to a real AF_UNIX socket, by path and by abstract name."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from wanhooks.service import sd_notify
from wanhooks.service.sd_notify import Notifier, socket_address, status_text, watchdog_usec


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "notify")
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def test_a_datagram_reaches_a_socket_named_by_path(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    assert sd_notify.sd_notify("READY=1", "STATUS=2 of 3 links balanced", env={"NOTIFY_SOCKET": path})
    assert sock.recv(4096) == b"READY=1\nSTATUS=2 of 3 links balanced"


def test_a_datagram_reaches_an_abstract_socket() -> None:
    name = f"wanhooks-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert sd_notify.sd_notify("WATCHDOG=1", env={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(4096) == b"WATCHDOG=1"
    assert socket_address("@" + name) == "\0" + name


def test_nothing_happens_without_a_notify_socket() -> None:
    assert not sd_notify.sd_notify("READY=1", env={})
    assert not Notifier(None).notify("READY=1")
    assert not Notifier(None).enabled and Notifier(None).watchdog_interval is None


def test_addresses_systemd_would_not_give_are_ignored(tmp_path: Path) -> None:
    for value in ("", "@", "relative/path", "vsock:2:1234"):
        assert socket_address(value) is None
        assert not sd_notify.sd_notify("READY=1", env={"NOTIFY_SOCKET": value})
    # a path where nothing listens: False, never an exception
    assert not sd_notify.sd_notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "nobody")})


def test_from_environment_reads_and_removes_the_variables(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    env = {"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "3000000", "WATCHDOG_PID": str(os.getpid()), "X": "1"}
    notifier = Notifier.from_environment(env)
    assert env == {"X": "1"}  # no child process inherits them
    assert notifier.enabled and notifier.watchdog_usec == 3_000_000
    assert notifier.watchdog_interval == pytest.approx(1.0)
    assert notifier.notify("STOPPING=1")
    assert sock.recv(4096) == b"STOPPING=1"


def test_the_watchdog_is_for_the_process_watchdog_pid_names() -> None:
    assert watchdog_usec({"WATCHDOG_USEC": "10000000"}) == 10_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid())}) == 10_000_000
    assert watchdog_usec({"WATCHDOG_USEC": "10000000", "WATCHDOG_PID": str(os.getpid() + 1)}) is None
    for bad in ("", "0", "-5", "ten"):
        assert watchdog_usec({"WATCHDOG_USEC": bad}) is None
    # no notify socket, no watchdog: nothing to send it to
    assert Notifier.from_environment({"WATCHDOG_USEC": "10000000"}).watchdog_interval is None


def test_a_status_is_one_short_printable_line() -> None:
    forged = "w1 active\nREADY=1\x1b[2J" + "x" * 400
    text = status_text(forged)
    assert "\n" not in text and "\x1b" not in text and len(text) <= 200
    assert text.startswith("w1 active READY=1\\x1b[2J") and text.endswith("...")
