"""The daemon's control socket: hooks notify through it, `status` and `link` ask through it.

Protocol, version 1: a client connects to <run_dir>/control (a Unix stream
socket, mode 0666, in a root-owned 0755 directory), sends ONE JSON object on
one line (at most 64 KiB), and reads ONE JSON object on one line back; then
the connection closes.  Anyone may connect: a peer that is not root (peer uid
checked with SO_PEERCRED) is served the read-only ops alone, `ping` and
`status` (the latter at most once a second, and at most a few such peers at
once); any other op from it gets {"ok": false, "error": "<op> needs root"}.
Requests:

    {"v": 1, "op": "ping"}
        -> {"ok": true, "pid": 1234}
    {"v": 1, "op": "notify", "source": "nm-dispatcher", "iface": "eth1", "action": "up"}
        -> {"ok": true}                       (the daemon re-plans at once)
    {"v": 1, "op": "status"}
        -> {"ok": true, "status": {...}}      (the `status --json` document)
    {"v": 1, "op": "link", "action": "disable" | "drain" | "enable", "name": "eth1"}
        -> {"ok": true}
    {"v": 1, "op": "reload"}
        -> {"ok": true, "config": "/etc/wanhooks/wanhooks.yaml", "links": 3}
           once the config is re-read and a round with it has run (at most 10 s);
           a bad config: {"ok": false, "refused": true, "error": "file:line: key: message"},
           and the running config stays (`wanhooks reload`, the unit's ExecReload=)

Anything else gets {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

from .lock import CONTROL_SOCKET, trusted_run_dir

PROTOCOL_VERSION = 1
MAX_REQUEST = 64 * 1024
READ_ONLY_OPS = ("ping", "status")  # what a peer that is not root may ask
MAX_UNPRIVILEGED = 8  # connections of peers that are not root served at once; more are turned away
UNPRIVILEGED_STATUS_S = 1.0  # they share one status answer this old at most: the worker builds it
REFUSALS_LOGGED_EVERY_S = 60.0  # a refused peer that is not root: one log line a minute, counted
SOCKET_NAME = CONTROL_SOCKET
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

log = logging.getLogger("wanhooks.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """The daemon could not be reached or answered with an error.

    absent: nothing listens (no socket, or one no process holds): no daemon runs, as far
    as the socket can tell -- unlike a daemon that did not answer, or a socket this user
    may not reach."""

    def __init__(self, message: str, absent: bool = False) -> None:
        super().__init__(message)
        self.absent = absent


def socket_path(run_dir: str) -> str:
    return os.path.join(run_dir, SOCKET_NAME)


def peer_credentials(sock: socket.socket) -> tuple[int, int, int]:
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
    pid, uid, gid = _PEERCRED.unpack(raw)
    return pid, uid, gid


class ControlServer:
    def __init__(self, run_dir: str, handler: Handler) -> None:
        self.path = socket_path(run_dir)
        self._run_dir = run_dir
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None
        self._unprivileged = 0  # their connections being served now
        self._status_cache: tuple[float, dict[str, Any]] | None = None
        self._status_lock = asyncio.Lock()
        self._refusals: dict[int, tuple[float, int]] = {}  # uid -> (last logged, refused since)

    async def start(self) -> None:
        trusted_run_dir(self._run_dir)  # root's and writable by no one else, or refused (service/lock.py)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a stale socket of a dead daemon (the caller checked none answers)
        # 0666: anyone may connect (connecting needs write permission); _answer decides what
        # each peer may ask, by its credentials
        old_umask = os.umask(0o111)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=self.path, limit=MAX_REQUEST + 1)
        finally:
            os.umask(old_umask)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            pid, uid, _gid = peer_credentials(writer.get_extra_info("socket"))
            if uid == 0:
                answer = await self._answer(reader, pid, uid)
            elif self._unprivileged >= MAX_UNPRIVILEGED:
                # each may hold its connection for the read timeout: bounded, or a user could
                # take every descriptor the daemon has
                self._refused(uid, pid, "too many connections at once")
                answer = {"ok": False, "error": "busy: too many requests at once"}
            else:
                self._unprivileged += 1
                try:
                    answer = await self._answer(reader, pid, uid)
                finally:
                    self._unprivileged -= 1
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError):  # ConnectionError; or gone before its credentials
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _refused(self, uid: int, pid: int, why: str) -> None:
        """Log a refusal.  A peer that is not root may connect as often as it likes: its
        refusals are logged once a minute per uid, with how many there were, not once each."""
        if uid == 0:
            log.warning("control: refused a request from pid %d: %s", pid, why)
            return
        now = time.monotonic()
        last, count = self._refusals.get(uid, (-REFUSALS_LOGGED_EVERY_S, 0))
        if now - last < REFUSALS_LOGGED_EVERY_S:
            self._refusals[uid] = (last, count + 1)
            return
        more = f" ({count} more refused since the last such line)" if count else ""
        log.warning("control: refused a request from uid %d (pid %d): %s%s", uid, pid, why, more)
        self._refusals[uid] = (now, 0)

    @staticmethod
    async def _read_line(reader: asyncio.StreamReader) -> tuple[bytes, str]:
        """One request line, or b"" and what is wrong with it."""
        try:
            return await asyncio.wait_for(reader.readuntil(b"\n"), timeout=5), ""
        except asyncio.LimitOverrunError:
            return b"", f"request larger than {MAX_REQUEST} bytes"
        except (asyncio.TimeoutError, asyncio.IncompleteReadError):
            return b"", "expected one JSON object on one line"

    async def _answer(self, reader: asyncio.StreamReader, pid: int, uid: int) -> dict[str, Any]:
        # The request is read (bounded in size and time) even from a peer about to be
        # refused: answering and closing first would hand its write EPIPE instead of
        # the reason.
        line, problem = await self._read_line(reader)
        if problem:
            self._refused(uid, pid, problem)
            return {"ok": False, "error": problem}
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested deep
            self._refused(uid, pid, "malformed JSON")
            return {"ok": False, "error": "malformed JSON"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "the request must be a JSON object"}
        if request.get("v") != PROTOCOL_VERSION:
            return {
                "ok": False,
                "error": f"unsupported protocol version (this daemon speaks {PROTOCOL_VERSION})",
            }
        op = request.get("op")
        if uid != 0 and op not in READ_ONLY_OPS:
            shown_op = str(op)[:20] if isinstance(op, str) and op.isprintable() else "this request"
            self._refused(uid, pid, f"{shown_op} needs root")
            return {"ok": False, "error": f"{shown_op} needs root"}
        try:
            if uid != 0 and op == "status":
                return await self._shared_status()
            return await self._handler(request)
        except Exception:  # a bug must not take the daemon down with it
            log.exception("control: request %r failed", str(op)[:40])
            return {"ok": False, "error": "internal error (see the daemon's log)"}

    async def _shared_status(self) -> dict[str, Any]:
        """A status answer for peers that are not root: built at most once a second, whatever
        they ask, so no user can keep the daemon's worker building documents."""
        async with self._status_lock:  # the others wait for the one being built, and share it
            cached = self._status_cache
            if cached is not None and time.monotonic() - cached[0] < UNPRIVILEGED_STATUS_S:
                return cached[1]
            answer = await self._handler({"v": PROTOCOL_VERSION, "op": "status"})
            self._status_cache = (time.monotonic(), answer)
            return answer


def request(run_dir: str, message: dict[str, Any], timeout: float = 5.0) -> dict[str, Any]:
    """Send one request to the daemon; ControlError when none answers."""
    payload = json.dumps({"v": PROTOCOL_VERSION, **message}).encode() + b"\n"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(socket_path(run_dir))
            sock.sendall(payload)
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except (FileNotFoundError, ConnectionRefusedError) as exc:
            raise ControlError("no wanhooks daemon is running", absent=True) from exc
        except PermissionError as exc:
            raise ControlError(f"cannot reach the daemon's socket in {run_dir}: permission denied") from exc
        except OSError as exc:
            raise ControlError(f"the daemon did not answer: {exc.strerror or exc}") from exc
    try:
        answer = json.loads(data)
    except ValueError as exc:
        raise ControlError("the daemon's answer was not JSON") from exc
    if not isinstance(answer, dict):
        raise ControlError("the daemon's answer was not a JSON object")
    return answer


def daemon_running(run_dir: str) -> bool:
    try:
        return bool(request(run_dir, {"op": "ping"}, timeout=1.0).get("ok"))
    except ControlError:
        return False
