"""The daemon's log lines: one event, one line, whatever the text it carries.

A log message may hold text from outside -- an interface name, a D-Bus
string, a hook's stderr, a client's request -- and a newline or an escape
sequence in it would forge a second line or repaint an admin's terminal.
Both formats escape what is not printable in the message itself, so the
guarantee holds for every call site, not only the ones that remembered.
"""

from __future__ import annotations

import json
import logging

from .names import printable_line


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
        if record.exc_info:
            doc["exception"] = self.formatException(record.exc_info)
        return json.dumps(doc)  # json escapes control characters itself


def formatter(kind: str) -> logging.Formatter:
    return JsonLines() if kind == "json" else PlainLines()
