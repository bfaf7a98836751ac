"""Clients of the daemon for its service: `wanhooks reload` (the unit's ExecReload=).

A reload by signal cannot say whether the new config was taken: SIGHUP is
sent and forgotten, and `systemctl reload` would report success for a file
the daemon refused.  So ExecReload= runs `wanhooks reload`, which asks over
the control socket and waits for the answer: 0 reloaded, 2 the config was
refused (the running one stays, and the error names file, line and key),
1 no daemon answered.
"""

from __future__ import annotations

import sys

from .. import constants as c
from ..plan.names import printable_line
from .control import ControlError, request

EXIT_OK = 0
EXIT_NO_DAEMON = 1
EXIT_REFUSED = 2


def reload_daemon(run_dir: str) -> int:
    """Ask the daemon on run_dir to re-read its config; print the outcome; the exit code."""
    try:
        answer = request(run_dir, {"op": "reload"}, timeout=c.RELOAD_CLIENT_TIMEOUT_S)
    except ControlError as err:
        print(f"wanhooks reload: {printable_line(str(err))}", file=sys.stderr)
        return EXIT_NO_DAEMON
    if answer.get("ok") is True:
        links = answer.get("links")
        count = links if isinstance(links, int) else "?"
        print(f"reloaded {printable_line(str(answer.get('config', '?')))}: {count} link entries")
        return EXIT_OK
    error = printable_line(str(answer.get("error", "no reason given")))
    if answer.get("refused") is True:
        print(f"wanhooks reload: refused, the running config stays: {error}", file=sys.stderr)
        return EXIT_REFUSED
    print(f"wanhooks reload: the daemon did not reload: {error}", file=sys.stderr)  # e.g. an older daemon
    return EXIT_NO_DAEMON
