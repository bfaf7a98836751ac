"""The daemon's control socket: hooks notify through it, `status` and `link` ask through it.

Protocol, version 1: a client connects to <run_dir>/control (a Unix stream
socket, mode 0600, in a 0700 directory), sends ONE JSON object on one line
(at most 64 KiB), and reads ONE JSON object on one line back; then the
connection closes.  Only root (peer uid 0, checked with SO_PEERCRED) is
served.  Requests:

    {"v": 1, "op": "ping"}
        -> {"ok": true, "pid": 1234}
    {"v": 1, "op": "notify", "source": "nm-dispatcher", "iface": "eth1", "action": "up"}
        -> {"ok": true}                       (the daemon re-plans at once)
    {"v": 1, "op": "status"}
        -> {"ok": true, "status": {...}}      (the `status --json` document)
    {"v": 1, "op": "link", "action": "disable" | "drain" | "enable", "name": "eth1"}
        -> {"ok": true}

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
from collections.abc import Awaitable, Callable
from typing import Any

from .lock import trusted_run_dir

PROTOCOL_VERSION = 1
MAX_REQUEST = 64 * 1024
SOCKET_NAME = "control"
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

log = logging.getLogger("wanhooks.control")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """The daemon could not be reached or answered with an error."""


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

    async def start(self) -> None:
        trusted_run_dir(self._run_dir)  # root's and 0700, or refused (lock.py)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)  # a stale socket of a dead daemon (the caller checked none answers)
        old_umask = os.umask(0o177)
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
            answer = await self._answer(reader, writer)
            writer.write(json.dumps(answer).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    @staticmethod
    async def _read_line(reader: asyncio.StreamReader) -> tuple[bytes, str]:
        """One request line, or b"" and what is wrong with it."""
        try:
            return await asyncio.wait_for(reader.readuntil(b"\n"), timeout=5), ""
        except asyncio.LimitOverrunError:
            return b"", f"request larger than {MAX_REQUEST} bytes"
        except (asyncio.TimeoutError, asyncio.IncompleteReadError):
            return b"", "expected one JSON object on one line"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> dict[str, Any]:
        sock = writer.get_extra_info("socket")
        pid, uid, _gid = peer_credentials(sock)
        # The request is read (bounded in size and time) even from a peer about to be
        # refused: answering and closing first would hand its write EPIPE instead of
        # the reason.  Nothing read from such a peer is looked at.
        line, problem = await self._read_line(reader)
        if uid != 0:
            log.warning("control: refused a request from uid %d (pid %d): root only", uid, pid)
            return {"ok": False, "error": "permission denied: root only"}
        if problem:
            log.warning("control: refused a request from pid %d: %s", pid, problem)
            return {"ok": False, "error": problem}
        try:
            request = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: nested deep
            log.warning("control: refused malformed JSON from pid %d", pid)
            return {"ok": False, "error": "malformed JSON"}
        if not isinstance(request, dict):
            return {"ok": False, "error": "the request must be a JSON object"}
        if request.get("v") != PROTOCOL_VERSION:
            return {
                "ok": False,
                "error": f"unsupported protocol version (this daemon speaks {PROTOCOL_VERSION})",
            }
        try:
            return await self._handler(request)
        except Exception:  # a bug must not take the daemon down with it
            log.exception("control: request %r failed", request.get("op"))
            return {"ok": False, "error": "internal error (see the daemon's log)"}


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
            raise ControlError("no wanhooks daemon is running") from exc
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
