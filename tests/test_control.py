"""The control socket's own checks: peer credentials, size and shape of requests (root only)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from wanhooks.control import ControlError, ControlServer, request

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


@pytest.fixture
def server() -> Iterator[str]:
    """A control server in a world-reachable directory, answering every request with ok."""
    run_dir = tempfile.mkdtemp(prefix="wanhooks-ctl-", dir="/tmp")
    seen: list[dict[str, Any]] = []

    async def handler(req: dict[str, Any]) -> dict[str, Any]:
        seen.append(req)
        return {"ok": True, "echo": req.get("op")}

    loop = asyncio.new_event_loop()
    srv = ControlServer(run_dir, handler)
    loop.run_until_complete(srv.start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield run_dir
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.run_until_complete(srv.stop())
    loop.close()
    os.rmdir(run_dir)


def as_user(uid: int, path: str, payload: bytes) -> str:
    """Connect and ask as another user (a forked child that drops root)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, ask, report through the pipe
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(path)
                sock.sendall(payload)
                answer = sock.recv(4096)
            os.write(write_end, answer)
        except OSError as exc:
            os.write(write_end, f"error: {exc}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    os.waitpid(pid, 0)
    with os.fdopen(read_end, "rb") as f:
        return f.read().decode()


def test_a_non_root_peer_is_refused_even_with_the_doors_open(server: str) -> None:
    path = os.path.join(server, "control")
    assert os.stat(path).st_mode & 0o777 == 0o600
    os.chmod(server, 0o755)
    os.chmod(path, 0o777)  # pretend an admin loosened the permissions
    answer = as_user(65534, path, b'{"v": 1, "op": "link", "action": "disable", "name": "w1"}\n')
    assert json.loads(answer) == {"ok": False, "error": "permission denied: root only"}


def test_root_is_served(server: str) -> None:
    assert request(server, {"op": "ping"}) == {"ok": True, "echo": "ping"}


def test_no_daemon_is_a_clear_error() -> None:
    with pytest.raises(ControlError, match="no wanhooks daemon"):
        request(tempfile.mkdtemp(prefix="wanhooks-none-"), {"op": "ping"})
