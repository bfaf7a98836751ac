"""How wanhooks runs itself again: a hook's child `apply`, the unit, the hooks.

Installed with pip, that is this interpreter with `-m wanhooks`, isolated (`-I`:
neither the caller's directory nor PYTHON* variables reach sys.path, so a
`wanhooks.py` planted in a hook's working directory never runs as root).  The
Debian package's launcher (/usr/sbin/wanhooks) sets LAUNCHER to itself: its
modules live in a private directory that `-m` would not find.
"""

from __future__ import annotations

import sys

LAUNCHER: str | None = None


def argv() -> list[str]:
    if LAUNCHER:
        return [LAUNCHER]
    return [sys.executable, "-I", "-m", "wanhooks"]
