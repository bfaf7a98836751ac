"""systemd's notify protocol (sd_notify(3)) and watchdog settings, by hand.

The protocol is one datagram of `KEY=value` lines to the AF_UNIX socket named
by $NOTIFY_SOCKET: a path, or an abstract name written with a leading '@'.
That is about twenty lines, so wanhooks carries them instead of a dependency
(python-systemd needs libsystemd and a compiler; the `sdnotify` package is
these lines again).  Without $NOTIFY_SOCKET (not started by systemd, or a
unit that is not Type=notify) every call does nothing.

The watchdog: with WatchdogSec= set, systemd passes $WATCHDOG_USEC (and
$WATCHDOG_PID, the process meant) and restarts the service when no
WATCHDOG=1 comes within that time.

`Notifier.from_environment()` reads and removes the three variables, so
no child process -- a hook, `nft`, notify's fallback apply -- sends in the
daemon's name or inherits its watchdog.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping, MutableMapping

from ..plan.names import printable_line

SEND_TIMEOUT_S = 1.0  # a datagram to systemd never waits longer than this (it is never this slow)


def socket_address(value: str) -> str | None:
    """$NOTIFY_SOCKET as a socket address: '@name' is abstract; a path must be absolute."""
    if len(value) > 1 and value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    return None  # empty, relative, or a kind we do not speak (vsock:...)


def send(address: str, *lines: str) -> bool:
    """One datagram of lines to address; False when it could not be sent."""
    message = "\n".join(lines).encode("utf-8", "replace")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.settimeout(SEND_TIMEOUT_S)
            sock.sendto(message, address)
    except (OSError, ValueError):  # ValueError: a NUL inside a path
        return False
    return True


def sd_notify(*lines: str, env: Mapping[str, str] | None = None) -> bool:
    """sd_notify(3): lines to $NOTIFY_SOCKET as one datagram; nothing (False) when it is unset."""
    raw = (os.environ if env is None else env).get("NOTIFY_SOCKET")
    address = socket_address(raw) if raw else None
    return send(address, *lines) if address is not None and lines else False


def watchdog_usec(env: Mapping[str, str]) -> int | None:
    """The watchdog's timeout in microseconds, when it is meant for this process."""
    pid = env.get("WATCHDOG_PID")
    if pid is not None and pid.strip() != str(os.getpid()):
        return None
    try:
        usec = int(env.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec if usec > 0 else None


class Notifier:
    """Tells systemd how the daemon is (READY=1, STATUS=..., WATCHDOG=1, STOPPING=1)."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec

    @classmethod
    def from_environment(cls, env: MutableMapping[str, str] | None = None) -> Notifier:
        """From $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID, which are then removed."""
        env = os.environ if env is None else env
        raw = env.pop("NOTIFY_SOCKET", None)
        usec = watchdog_usec(env)
        env.pop("WATCHDOG_USEC", None)
        env.pop("WATCHDOG_PID", None)
        address = socket_address(raw) if raw is not None else None
        return cls(address, usec if address is not None else None)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings: a third of the timeout, so one late ping is no restart."""
        return self.watchdog_usec / 3e6 if self.watchdog_usec else None

    def notify(self, *lines: str) -> bool:
        """Send lines (READY=1, STATUS=...) as one message; True when sent, False when not
        (no socket configured, or systemd could not be reached)."""
        if self.address is None or not lines:
            return False
        return send(self.address, *lines)


def status_text(text: str, limit: int = 200) -> str:
    """A STATUS= value: one printable line (a newline would start a field of its own), at
    most limit characters."""
    line = printable_line(" ".join(text.split()))
    return line if len(line) <= limit else line[: limit - 3] + "..."
