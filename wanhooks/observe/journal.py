"""Log records straight to the systemd journal, with their priority and fields.

Under systemd the daemon's stderr is a stream into journald, which sees
lines only: every one at the unit's default priority, with no fields.  When
$JOURNAL_STREAM ("device:inode") names the file stderr is, the daemon sends
each record over journald's native protocol instead (systemd.journal-fields(7),
"Native Journal Protocol"): one datagram to /run/systemd/journal/socket of
`KEY=value` lines -- MESSAGE, PRIORITY, SYSLOG_IDENTIFIER, CODE_FILE,
CODE_LINE, CODE_FUNC, and WANHOOKS_LINK / WANHOOKS_FAMILY when the record is
about one link, so `journalctl WANHOOKS_LINK=eth1` shows one link's story.
A value holding a newline (a traceback) goes in the protocol's binary form,
its length in front, so no text in it can start a field of its own; a link's
name is escaped like any shown text (names.shown).

When a datagram cannot be sent (no journald, a message too large for one
datagram, journald stuck for SEND_TIMEOUT_S) the record goes to stderr as
`<priority>line` lines, which journald's stream reader understands.
"""

from __future__ import annotations

import logging
import os
import socket
import struct
import sys
from collections.abc import Iterable, Mapping

from ..plan.names import shown
from .log_format import record_link, syslog_priority

SOCKET_PATH = "/run/systemd/journal/socket"  # journald's; tests point it at a socket of their own
IDENTIFIER = "wanhooks"
# A datagram waits at most this long for room in journald's queue (a burst of a round's lines
# can outrun the kernel's queue of 10-512 datagrams; journald drains it in microseconds); a
# journald that stays stuck gets the record on stderr instead.
SEND_TIMEOUT_S = 0.25


def stderr_is_journal(env: Mapping[str, str] | None = None) -> bool:
    """Is fd 2 the journal stream systemd connected ($JOURNAL_STREAM = its st_dev:st_ino)?
    A child that inherited the variable but writes elsewhere is not."""
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    device, _sep, inode = value.partition(":")
    try:
        st = os.fstat(2)
        return (int(device), int(inode)) == (st.st_dev, st.st_ino)
    except (OSError, ValueError):
        return False


def encode(fields: Iterable[tuple[str, str]]) -> bytes:
    """Fields in the native protocol: `KEY=value\\n`, or, for a value with a newline,
    `KEY\\n` + its length as 64-bit little-endian + the value + `\\n`."""
    out = bytearray()
    for key, value in fields:
        data = value.encode("utf-8", "replace")
        if b"\n" in data:
            out += key.encode("ascii") + b"\n" + struct.pack("<Q", len(data)) + data + b"\n"
        else:
            out += key.encode("ascii") + b"=" + data + b"\n"
    return bytes(out)


class JournalHandler(logging.Handler):
    """Each record as one journal entry (see the module's docstring); stderr as a fallback."""

    def __init__(self, path: str | None = None, identifier: str = IDENTIFIER) -> None:
        super().__init__()
        self.path = path or SOCKET_PATH
        self.identifier = identifier
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.settimeout(SEND_TIMEOUT_S)

    def fields(self, record: logging.LogRecord) -> list[tuple[str, str]]:
        out = [
            ("MESSAGE", self.format(record)),
            ("PRIORITY", str(syslog_priority(record.levelno))),
            ("SYSLOG_IDENTIFIER", self.identifier),
            ("CODE_FILE", record.pathname),
            ("CODE_LINE", str(record.lineno)),
            ("CODE_FUNC", record.funcName),
        ]
        link, family = record_link(record)
        if link is not None:
            out.append(("WANHOOKS_LINK", shown(link)))
        if family is not None:
            out.append(("WANHOOKS_FAMILY", str(family)))
        return out

    def emit(self, record: logging.LogRecord) -> None:
        try:
            fields = self.fields(record)
            try:
                self._sock.sendto(encode(fields), self.path)
            except OSError:  # no journald, too large, or stuck (a timeout is an OSError)
                self._to_stderr(syslog_priority(record.levelno), fields[0][1])
        except Exception:
            self.handleError(record)

    @staticmethod
    def _to_stderr(priority: int, message: str) -> None:
        stream = sys.stderr
        stream.write("".join(f"<{priority}>{line}\n" for line in message.split("\n")))
        stream.flush()

    def close(self) -> None:
        self._sock.close()
        super().close()
