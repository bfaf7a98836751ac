"""Log records to the journal's native protocol: priority and link fields, nothing forged.

journald is played by a datagram socket bound in tmp_path (journal.SOCKET_PATH
points at it); the last test runs the real daemon in a lab with its stderr
declared the journal stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Router, wait_for

from wanhooks.observe import journal
from wanhooks.observe.journal import JournalHandler, encode, stderr_is_journal
from wanhooks.observe.log_format import JsonLines, about, handler, link_context

Fields = list[tuple[str, bytes]]


def parse(data: bytes) -> Fields:
    """The native protocol, as journald reads it (strict: anything else fails the test)."""
    fields: Fields = []
    i = 0
    while i < len(data):
        end = data.index(b"\n", i)
        line = data[i:end]
        if b"=" in line:
            key, value = line.split(b"=", 1)
            i = end + 1
        else:  # KEY \n le64 length, value, \n
            key = line
            (size,) = struct.unpack("<Q", data[end + 1 : end + 9])
            value = data[end + 9 : end + 9 + size]
            assert data[end + 9 + size : end + 10 + size] == b"\n", "binary field not closed by a newline"
            i = end + 10 + size
        name = key.decode("ascii")
        assert name and name[0] != "_" and all(ch.isupper() or ch.isdigit() or ch == "_" for ch in name), name
        fields.append((name, value))
    return fields


def one(fields: Fields, key: str) -> str:
    values = [v for k, v in fields if k == key]
    assert len(values) == 1, f"{key}: {values}"
    return values[0].decode()


@pytest.fixture
def fake_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A socket standing in for journald's, and JOURNAL_STREAM naming stderr as it is now."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = str(tmp_path / "journal-socket")
    sock.bind(path)
    sock.settimeout(2)
    monkeypatch.setattr(journal, "SOCKET_PATH", path)
    st = os.fstat(2)
    monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
    yield sock
    sock.close()


def a_logger(chosen: logging.Handler) -> logging.Logger:
    logger = logging.getLogger(f"wanhooks.test.{id(chosen)}")
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    logger.handlers = [chosen]
    return logger


def test_a_link_event_carries_its_priority_and_link_fields(fake_journal: socket.socket) -> None:
    chosen = handler("text")
    assert isinstance(chosen, JournalHandler) and stderr_is_journal()
    log = a_logger(chosen)
    log.info("link %s: %s -> %s", "w2", "active", "failed", extra=about("w2", 4))
    fields = parse(fake_journal.recv(65536))
    assert one(fields, "MESSAGE") == "link w2: active -> failed"
    assert one(fields, "PRIORITY") == "6"
    assert one(fields, "SYSLOG_IDENTIFIER") == "wanhooks"
    assert one(fields, "WANHOOKS_LINK") == "w2" and one(fields, "WANHOOKS_FAMILY") == "4"
    assert one(fields, "CODE_FILE") == __file__ and int(one(fields, "CODE_LINE")) > 0
    levels = ((logging.DEBUG, 7), (logging.WARNING, 4), (logging.ERROR, 3), (logging.CRITICAL, 2))
    for level, priority in levels:
        log.log(level, "a record with no link")
        fields = parse(fake_journal.recv(65536))
        assert one(fields, "PRIORITY") == str(priority)
        assert "WANHOOKS_LINK" not in dict(fields) and "WANHOOKS_FAMILY" not in dict(fields)
    chosen.close()


def test_a_forged_newline_in_a_name_makes_no_field(fake_journal: socket.socket) -> None:
    chosen = handler("text")
    log = a_logger(chosen)
    hostile = "w1\nPRIORITY=0\nWANHOOKS_LINK=eth0"
    log.warning("health %s down", hostile, extra=about(hostile, 6))
    fields = parse(fake_journal.recv(65536))
    assert [k for k, _v in fields].count("PRIORITY") == 1 and one(fields, "PRIORITY") == "4"
    assert one(fields, "WANHOOKS_LINK") == "w1\\x0aPRIORITY=0\\x0aWANHOOKS_LINK=eth0"  # escaped
    assert one(fields, "MESSAGE") == "health w1\\x0aPRIORITY=0\\x0aWANHOOKS_LINK=eth0 down"
    # a traceback's lines are ours: kept as lines, in the binary-safe form, each escaped
    try:
        raise ValueError("bad\x1b[2J\nPRIORITY=0")
    except ValueError:
        log.exception("round failed")
    data = fake_journal.recv(65536)
    fields = parse(data)
    assert b"MESSAGE\n" in data  # the binary form: its length first
    message = one(fields, "MESSAGE")
    assert message.startswith("round failed\nTraceback") and "\x1b" not in message
    assert [k for k, _v in fields].count("PRIORITY") == 1 and one(fields, "PRIORITY") == "3"
    chosen.close()


def test_the_encoding_is_the_native_protocols() -> None:
    assert encode([("MESSAGE", "hi"), ("PRIORITY", "6")]) == b"MESSAGE=hi\nPRIORITY=6\n"
    assert encode([("MESSAGE", "a\nb")]) == b"MESSAGE\n" + struct.pack("<Q", 3) + b"a\nb\n"


def test_a_task_started_for_a_link_logs_as_that_link(fake_journal: socket.socket) -> None:
    """What a prober or a hook logs from its own task (another module's code) carries the link
    it was started for."""
    chosen = handler("text")
    log = a_logger(chosen)

    async def prober() -> None:
        await asyncio.sleep(0)
        log.debug("probe w3 -> 198.51.100.7: no route")

    async def main() -> None:
        with link_context("w3", 6):
            task = asyncio.get_running_loop().create_task(prober())
        log.info("outside")
        await task

    asyncio.run(main())
    first, second = parse(fake_journal.recv(65536)), parse(fake_journal.recv(65536))
    assert one(first, "MESSAGE") == "outside" and "WANHOOKS_LINK" not in dict(first)
    assert one(second, "WANHOOKS_LINK") == "w3" and one(second, "WANHOOKS_FAMILY") == "6"
    chosen.close()


def test_without_a_journald_records_go_to_stderr_with_their_priority(
    fake_journal: socket.socket, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chosen = JournalHandler(str(tmp_path / "no-journald-here"))
    chosen.setFormatter(handler("text").formatter)
    log = a_logger(chosen)
    log.warning("link %s: gateway %s -> %s", "w1", "100.64.1.1", "100.64.1.9", extra=about("w1", 4))
    log.info("two\nlines")
    assert capsys.readouterr().err == ("<4>link w1: gateway 100.64.1.1 -> 100.64.1.9\n<6>two\\x0alines\n")
    chosen.close()


def test_stderr_elsewhere_keeps_plain_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    st = os.fstat(2)
    for value in (f"{st.st_dev}:{st.st_ino + 1}", "", "garbage", f"{st.st_dev}"):
        monkeypatch.setenv("JOURNAL_STREAM", value)
        assert not stderr_is_journal()
        assert type(handler("text")) is logging.StreamHandler
    monkeypatch.delenv("JOURNAL_STREAM")
    assert type(handler("json")) is logging.StreamHandler


def test_json_lines_gain_link_and_family() -> None:
    record = logging.LogRecord("wanhooks", logging.INFO, __file__, 1, "link %s up", ("w\x1b1",), None)
    record.link, record.family = "w\x1b1", 4
    doc = json.loads(JsonLines().format(record))
    assert doc["link"] == "w\\x1b1" and doc["family"] == 4 and doc["msg"] == "link w\\x1b1 up"
    plain = logging.LogRecord("wanhooks", logging.INFO, __file__, 1, "round 1", (), None)
    assert "link" not in json.loads(JsonLines().format(plain))


# --- the real daemon, its stderr declared the journal stream ------------------------------------

# Run as the daemon's process: journald's socket is the test's, and stderr (the log file)
# is declared the journal stream, as systemd declares the stream it connects.
AS_UNDER_SYSTEMD = """\
import os, sys
from wanhooks.observe import journal
journal.SOCKET_PATH = sys.argv[1]
st = os.fstat(2)
os.environ["JOURNAL_STREAM"] = f"{st.st_dev}:{st.st_ino}"
from wanhooks.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.kernel
def test_the_daemons_link_events_reach_the_journal_with_their_fields(router: Router, tmp_path: Path) -> None:
    lab = router.lab
    router.write_config("links:\n  - interface: w1\n  - interface: w2\n  - interface: 'w*'\n")
    for i in (1, 2, 3):
        lab.set_main_default(i, 4)
    path = str(tmp_path / "journal-socket")
    sink = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sink.bind(path)
    entries: list[Fields] = []

    def read() -> None:  # as journald does: at once, whatever the test is doing
        with contextlib.suppress(OSError):
            while data := sink.recv(1 << 20):
                entries.append(parse(data))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def messages() -> list[str]:
        return [one(e, "MESSAGE") for e in list(entries)]

    stderr = open(tmp_path / "stderr.log", "w")  # noqa: SIM115 - closed below
    argv = [
        "ip", "netns", "exec", lab.router, sys.executable, "-c", AS_UNDER_SYSTEMD, path,
        "-c", str(router.config), "--run-dir", str(router.run_dir), "run",
    ]  # fmt: skip
    proc = subprocess.Popen(argv, stdout=stderr, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: any(m.startswith("round 1:") for m in messages()), 10, "round 1 in the journal")
        lab.carrier_off(3)
        wait_for(lambda: any(m.startswith("link w3: active") for m in messages()), 5, "w3's state change")
        event = next(e for e in entries if one(e, "MESSAGE").startswith("link w3: active"))
        assert one(event, "WANHOOKS_LINK") == "w3" and one(event, "PRIORITY") == "6"
        assert one(event, "SYSLOG_IDENTIFIER") == "wanhooks" and one(event, "CODE_FILE").endswith(
            "service/daemon.py"
        )
        started = next(e for e in entries if one(e, "MESSAGE").startswith("started:"))
        assert one(started, "PRIORITY") == "6" and "WANHOOKS_LINK" not in dict(started)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        stderr.close()
        lab.carrier_on(3)
        wait_for(lambda: any(m.startswith("stopped:") for m in messages()), 2, "the last entry read")
        sink.shutdown(socket.SHUT_RDWR)
        sink.close()
    assert proc.returncode == 0
    assert (tmp_path / "stderr.log").read_text() == ""  # every record went to the journal
