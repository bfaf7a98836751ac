"""The daemon's log lines: one event, one line, whatever the text it carries.

A log message may hold text from outside -- an interface name, a D-Bus
string, a hook's stderr, a client's request -- and a newline or an escape
sequence in it would forge a second line or repaint an admin's terminal.
Both formats escape what is not printable in the message itself, so the
guarantee holds for every call site, not only the ones that remembered.

A record about one link says so -- `log.info(..., extra=about(name, family))`,
or, for what a link's prober or hooks log from their own tasks, the
`link_context` they were started in -- and carries it as JSON's "link" and
"family" and as the journal's WANHOOKS_LINK and WANHOOKS_FAMILY (observe/journal.py).
Under systemd every record also carries its syslog priority (`handler`).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
from collections.abc import Iterator
from typing import Any

from ..plan.names import printable_line, shown

# The link (and family) the running code works for: set around starting a link's prober or
# hooks, so their tasks (which copy the context they were created in) log with it.
_LINK: contextvars.ContextVar[tuple[str | None, int | None]] = contextvars.ContextVar(
    "wanhooks_link", default=(None, None)
)


def about(link: str, family: int | None = None) -> dict[str, Any]:
    """`extra=` for a record about one link (and family)."""
    return {"link": link, "family": family}


@contextlib.contextmanager
def link_context(link: str, family: int | None = None) -> Iterator[None]:
    """Records logged here, and by tasks and callbacks created here, are about link."""
    token = _LINK.set((link, family))
    try:
        yield
    finally:
        _LINK.reset(token)


def record_link(record: logging.LogRecord) -> tuple[str | None, int | None]:
    """The link and family a record is about: its own `extra`, else its context's."""
    link = getattr(record, "link", None)
    if link is not None:
        family = getattr(record, "family", None)
        return str(link), family if isinstance(family, int) else None
    return _LINK.get()


def syslog_priority(levelno: int) -> int:
    """syslog(3)'s priority for a logging level: crit 2, err 3, warning 4, info 6, debug 7."""
    if levelno >= logging.CRITICAL:
        return 2
    if levelno >= logging.ERROR:
        return 3
    if levelno >= logging.WARNING:
        return 4
    if levelno >= logging.INFO:
        return 6
    return 7


class PlainLines(logging.Formatter):
    """The message alone, on one line (journald adds time and unit)."""

    def format(self, record: logging.LogRecord) -> str:
        text = printable_line(record.getMessage())
        if record.exc_info:  # our own traceback: its lines are ours, escaped all the same
            trace = self.formatException(record.exc_info).splitlines()
            text += "\n" + "\n".join(printable_line(line) for line in trace)
        return text


class JsonLines(logging.Formatter):
    """One JSON object per line (--log-format json), for journald/Loki/jq."""

    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": printable_line(record.getMessage()),
        }
        link, family = record_link(record)
        if link is not None:
            doc["link"] = shown(link)
        if family is not None:
            doc["family"] = family
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)  # json escapes control characters itself


def formatter(kind: str) -> logging.Formatter:
    return JsonLines() if kind == "json" else PlainLines()


def handler(kind: str) -> logging.Handler:
    """The daemon's log handler: straight to the journal, with priority and fields, when
    stderr is systemd's journal stream; otherwise lines on stderr (kind: text or json)."""
    from .journal import JournalHandler, stderr_is_journal  # observe/journal.py imports this module

    chosen: logging.Handler = JournalHandler() if stderr_is_journal() else logging.StreamHandler()
    chosen.setFormatter(formatter(kind))
    return chosen
