"""The command beside a running daemon, in a lab (root; network namespaces): apply and cleanup
refuse to undo it, any user may read its status, only root may steer it, and a link it does
not manage cannot be disabled."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import DaemonProc, Router, wait_for
from conftest import group_members as members

from wanhooks.service import control

pytestmark = pytest.mark.kernel
Start = Callable[..., DaemonProc]

CONFIG = """\
links:
  - {interface: w1, gateway: 100.64.1.1}
  - {interface: w2, gateway: 100.64.2.1}
  - {interface: w3, gateway: 100.64.3.1}
"""
NOBODY = 65534


@pytest.fixture
def open_router(lab3: object) -> Iterator[Router]:
    """A router whose config and run dir any user can reach (pytest's tmp_path is root's
    alone): a run dir as systemd makes it, root's and 0755."""
    tmp = Path(tempfile.mkdtemp(prefix="wanhooks-cli-", dir="/tmp"))
    os.chmod(tmp, 0o755)
    router = Router(lab3, tmp)
    router.write_config(CONFIG)
    os.chmod(router.config, 0o644)
    yield router
    shutil.rmtree(tmp, ignore_errors=True)


def as_nobody(router: Router, *args: str) -> subprocess.CompletedProcess[str]:
    """The CLI as an ordinary user, in the router's namespace."""
    argv = [
        "setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups",
        sys.executable, "-I", "-m", "wanhooks", "-c", str(router.config), "--run-dir", str(router.run_dir),
        *args,
    ]  # fmt: skip
    return router.lab.ns_exec(router.lab.router, argv, check=False, timeout=60)


def test_apply_and_cleanup_refuse_while_a_daemon_runs_and_force_overrides(
    router: Router, daemon_factory: Start
) -> None:
    lab = router.lab
    router.write_config(CONFIG)
    daemon = daemon_factory()
    router.wanhooks("link", "disable", "w3")
    wait_for(lambda: set(members(lab)) == {"w1", "w2"}, 5, "w3 disabled")
    pid = json.loads(router.wanhooks("status", "--json").stdout)["daemon"]["pid"]
    for command in ("apply", "cleanup"):
        refused = router.wanhooks(command, check=False)
        assert refused.returncode == 1, refused
        assert refused.stderr.startswith(
            f"wanhooks {command}: a wanhooks daemon runs (pid {pid}) and owns the routing: "
        ), refused.stderr
        assert refused.stderr.endswith(f"--force to {command} anyway\n")
    assert set(members(lab)) == {"w1", "w2"}, "the admin's override was undone"
    os.kill(pid, signal.SIGSTOP)  # a daemon that cannot answer owns the routing all the same
    try:
        assert router.wanhooks("apply", check=False).returncode == 1
        assert set(members(lab)) == {"w1", "w2"}
    finally:
        os.kill(pid, signal.SIGCONT)
    # --force: the admin's choice -- this apply knows no override, and puts w3 back; the daemon,
    # which owns the routing, takes it out again at its next round
    forced = router.wanhooks("apply", "--force")
    assert "dev w3" in forced.stdout and re.search(r" group \d+/\d+/\d+ ", forced.stdout), forced
    wait_for(lambda: set(members(lab)) == {"w1", "w2"}, 5, "the daemon's own plan back")
    assert "Traceback" not in daemon.text()


def test_any_user_reads_the_daemons_status_and_only_root_steers_it(
    open_router: Router, daemon_factory: Start
) -> None:
    router, lab = open_router, open_router.lab
    assert router.run_dir.parent.stat().st_mode & 0o777 == 0o755
    daemon = DaemonProc(router)
    try:
        daemon.wait_log("round 1:")
        assert router.run_dir.stat().st_mode & 0o022 == 0  # others may enter it, never write
        assert (router.run_dir / "control").stat().st_mode & 0o777 == 0o666
        pid = daemon.proc.pid

        status = as_nobody(router, "status")
        assert status.returncode == 0, status.stderr
        lines = status.stdout.splitlines()
        assert lines[0].startswith("mode: daemon; the daemon runs (pid "), status.stdout
        assert lines[2].split()[:2] == ["LINK", "STATE"] and "this view cannot see" not in status.stdout
        doc = json.loads(as_nobody(router, "status", "--json").stdout)
        assert (doc["mode"], doc["daemon_running"], doc["cannot_see"]) == ("daemon", True, None)
        assert doc["daemon"]["disabled"] == []
        assert {link["name"] for link in doc["links"]} == {"w1", "w2", "w3"}

        steer = as_nobody(router, "link", "disable", "w3")
        assert steer.returncode == 1 and steer.stderr == "wanhooks link: link needs root\n", steer
        assert as_nobody(router, "link", "disable", "w9").returncode == 2  # the config says so first
        assert as_nobody(router, "reload").returncode == 1
        notify = subprocess.run(  # the socket itself, as nobody: nothing but ping and status
            ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", sys.executable, "-c",
             "import json,sys; from wanhooks.service import control; "
             f"print(json.dumps(control.request({str(router.run_dir)!r}, {{'op': 'notify'}})))"],
            capture_output=True, text=True, timeout=30, cwd=str(Path(__file__).parent.parent),
        )  # fmt: skip
        assert json.loads(notify.stdout) == {"ok": False, "error": "notify needs root"}, notify.stderr
        assert set(members(lab)) == {"w1", "w2", "w3"}

        # root disables w3; then the daemon stops answering (SIGSTOP): the kernel alone shows
        # w3 out while the plan, which knows no override, wants it in -- nobody is told what
        # the view lacks, and never to run `wanhooks apply` beside the daemon
        router.wanhooks("link", "disable", "w3")
        wait_for(lambda: set(members(lab)) == {"w1", "w2"}, 5, "w3 disabled")
        os.kill(pid, signal.SIGSTOP)
        try:
            for who, view in (("nobody", as_nobody(router, "status")), ("root", router.wanhooks("status"))):
                lines = view.stdout.splitlines()
                assert view.returncode == 0, (who, view.stderr)
                assert lines[1].startswith(
                    "this view cannot see health verdicts, held gateways, the admin's overrides"
                ), (who, view.stdout)
                assert "did not answer" in lines[1], (who, lines[1])
                assert "wanhooks apply" not in view.stdout.replace("root's `wanhooks status`", ""), who
                assert "kernel differs from the plan" in view.stdout, (who, view.stdout)
            assert lines[0] == "mode: daemon; the daemon runs"  # root knows it by its lock
        finally:
            os.kill(pid, signal.SIGCONT)
    finally:
        daemon.stop()
    # no daemon at all: nobody is told so, and how to start it
    status = as_nobody(router, "status")
    assert status.returncode == 0, status.stderr
    assert status.stdout.splitlines()[0] == (
        "mode: daemon; daemon not running: hooks do nothing; start it: systemctl start wanhooks"
    )
    assert "this view cannot see" not in status.stdout


def test_the_daemon_refuses_to_disable_a_link_it_does_not_manage(
    router: Router, daemon_factory: Start
) -> None:
    """The daemon checks the name too, whoever asks (a client older than this check)."""
    router.write_config(CONFIG + "  - interface: 'x*'\n")
    daemon_factory()
    for action in ("disable", "drain"):
        answer = control.request(str(router.run_dir), {"op": "link", "action": action, "name": "w9"})
        assert answer["ok"] is False and "'w9' is none of the links" in answer["error"], answer
    # a name a glob matches is a link it manages, present or not; enable clears any override
    assert control.request(str(router.run_dir), {"op": "link", "action": "drain", "name": "x1"})["ok"]
    assert control.request(str(router.run_dir), {"op": "link", "action": "enable", "name": "w9"})["ok"]
    doc = json.loads(router.wanhooks("status", "--json").stdout)
    assert doc["daemon"]["disabled"] == [] and doc["daemon"]["draining"] == ["x1"]
