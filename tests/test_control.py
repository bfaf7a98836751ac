"""The control socket's own checks: peer credentials, size and shape of requests (root only).

Anyone may connect (0666); a peer that is not root is served `ping` and `status` alone."""

from __future__ import annotations

import asyncio
import gc
import json
import os
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from wanhooks.service.control import MAX_UNPRIVILEGED, ControlError, ControlServer, request

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")


SEEN: list[dict[str, Any]] = []  # what the server's handler was asked, in order


@pytest.fixture
def server() -> Iterator[str]:
    """A control server in a world-reachable directory, answering every request with ok."""
    run_dir = tempfile.mkdtemp(prefix="wanhooks-ctl-", dir="/tmp")
    os.chmod(run_dir, 0o755)  # as systemd's RuntimeDirectoryMode=0755 makes it
    seen = SEEN
    seen.clear()

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
    # connections still being served (a test's held ones) end here, not in the garbage collector
    pending = asyncio.all_tasks(loop)
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.wait(pending))
    loop.close()
    os.rmdir(run_dir)


def as_user(uid: int, path: str, payload: bytes) -> str:
    """Connect and ask as another user (a forked child that drops root)."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, ask, report through the pipe
        try:
            gc.disable()  # the parent's objects are the parent's to finalize
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


def test_anyone_may_ask_for_status_and_only_root_for_the_rest(server: str) -> None:
    path = os.path.join(server, "control")
    assert os.stat(path).st_mode & 0o777 == 0o666  # anyone may connect...
    for op in ("link", "notify", "reload", "anything"):  # ...and is refused all but the read-only ops
        payload = json.dumps({"v": 1, "op": op, "action": "disable", "name": "w1"}).encode() + b"\n"
        assert json.loads(as_user(65534, path, payload)) == {"ok": False, "error": f"{op} needs root"}
    assert SEEN == []  # none of them reached the daemon
    assert json.loads(as_user(65534, path, b'{"v": 1, "op": "ping"}\n')) == {"ok": True, "echo": "ping"}
    for _ in range(3):  # status: the daemon builds one answer a second for them all
        answer = as_user(65534, path, b'{"v": 1, "op": "status"}\n')
        assert json.loads(answer) == {"ok": True, "echo": "status"}
    assert [r["op"] for r in SEEN] == ["ping", "status"]
    # the checks on the request itself hold for them as for root
    assert json.loads(as_user(65534, path, b"{nope\n")) == {"ok": False, "error": "malformed JSON"}
    assert json.loads(as_user(65534, path, b'{"v": 9, "op": "ping"}\n'))["error"].startswith("unsupported")
    assert json.loads(as_user(65534, path, b"x" * 70000))["error"] == "request larger than 65536 bytes"
    # root: everything, status built for each request
    assert request(server, {"op": "link", "action": "disable", "name": "w1"}) == {"ok": True, "echo": "link"}
    request(server, {"op": "status"})
    assert [r["op"] for r in SEEN] == ["ping", "status", "link", "status"]


def test_peers_that_are_not_root_are_served_a_few_at_a_time(server: str) -> None:
    """Each may hold a connection for the read timeout (5 s): more than MAX_UNPRIVILEGED at once
    are turned away at once, and root is served all the while."""
    path = os.path.join(server, "control")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: as nobody, hold MAX_UNPRIVILEGED connections silent, then ask once more
        try:
            gc.disable()  # the parent's objects are the parent's to finalize
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            held = []
            for _ in range(MAX_UNPRIVILEGED):
                sock = socket.socket(socket.AF_UNIX)
                sock.connect(path)
                held.append(sock)
            with socket.socket(socket.AF_UNIX) as sock:
                sock.settimeout(5)
                sock.connect(path)
                sock.sendall(b'{"v": 1, "op": "ping"}\n')
                os.write(write_end, sock.recv(4096))
            os.close(write_end)
            time.sleep(3)  # still holding them while root asks
        finally:
            os._exit(0)
    os.close(write_end)
    try:
        with os.fdopen(read_end, "rb") as f:
            answer = f.read()
        assert json.loads(answer) == {"ok": False, "error": "busy: too many requests at once"}
        assert request(server, {"op": "ping"}) == {"ok": True, "echo": "ping"}
    finally:
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_root_is_served(server: str) -> None:
    assert request(server, {"op": "ping"}) == {"ok": True, "echo": "ping"}


def test_no_daemon_is_a_clear_error() -> None:
    with pytest.raises(ControlError, match="no wanhooks daemon"):
        request(tempfile.mkdtemp(prefix="wanhooks-none-"), {"op": "ping"})
