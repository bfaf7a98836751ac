"""Shared fixtures: kernel tests run wanhooks inside lab namespaces, never in the root namespace."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # tests/fakes.py


def kernel_tests_possible() -> str:
    """Empty when kernel tests can run here, else why not."""
    if os.geteuid() != 0:
        return "kernel tests need root (network namespaces)"
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            return f"kernel tests need `{tool}`"
    return ""


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    why = kernel_tests_possible()
    if not why:
        return
    skip = pytest.mark.skip(reason=why)
    for item in items:
        if "kernel" in item.keywords:
            item.add_marker(skip)


class Router:
    """Runs the wanhooks CLI inside a lab's router namespace, with its own config and run dir."""

    def __init__(self, lab: object, tmp: Path) -> None:
        from wanhooks.lab import Lab

        assert isinstance(lab, Lab)
        self.lab = lab
        self.tmp = tmp
        self.config = tmp / "wanhooks.yaml"
        self.run_dir = tmp / "run"

    def write_config(self, text: str, name: str = "wanhooks.yaml") -> Path:
        path = self.tmp / name
        path.write_text(text)
        self.config = path
        return path

    def wanhooks(
        self, *args: str, config: Path | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        argv = [
            sys.executable,
            "-m",
            "wanhooks",
            "-c",
            str(config or self.config),
            "--run-dir",
            str(self.run_dir),
        ]
        proc = self.lab.ns_exec(self.lab.router, [*argv, *args], check=False, timeout=120)
        if check and proc.returncode != 0:
            raise AssertionError(
                f"wanhooks {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def snapshot(self) -> str:
        """The router's whole routing state and the sysctls wanhooks may touch, as text."""
        ip = self.lab.ip
        r = self.lab.router
        parts = [
            ip(r, "-4", "rule", "show"),
            ip(r, "-6", "rule", "show"),
            ip(r, "-4", "route", "show", "table", "all"),
            ip(r, "-6", "route", "show", "table", "all"),
            ip(r, "nexthop", "show"),
        ]
        sysctls = self.lab.r(
            ["sysctl", "-a", "--pattern", "fib_multipath_hash|rp_filter|ignore_routes_with_linkdown"]
        )
        nft = self.lab.r(["nft", "-s", "list", "ruleset"])  # the rules, not what the counters counted
        return "\n".join(parts) + sysctls.stdout + nft.stdout


@pytest.fixture
def lab3() -> Iterator[object]:
    from wanhooks.lab import Lab

    with Lab(3) as lab:
        yield lab


@pytest.fixture
def router(lab3: object, tmp_path: Path) -> Router:
    return Router(lab3, tmp_path)


TUN_HOLDER = """\
import fcntl, os, struct, sys, time
fd = os.open("/dev/net/tun", os.O_RDWR)
# TUNSETIFF with IFF_TUN | IFF_NO_PI
fcntl.ioctl(fd, 0x400454CA, struct.pack("16sH", sys.argv[1].encode(), 0x0001 | 0x1000))
print("ready", flush=True)
time.sleep(120)  # bounded; the test ends it sooner
"""


@pytest.fixture
def hold_tun(lab3: object) -> Iterator[Callable[[str], subprocess.Popen[str]]]:
    """Open a tun device in the router and keep it open, as a VPN or PPP daemon does (so it
    has carrier); returns the holding process.  Ended when the test ends."""
    from wanhooks.lab import Lab

    assert isinstance(lab3, Lab)
    held: list[subprocess.Popen[str]] = []

    def hold(name: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", lab3.router, sys.executable, "-c", TUN_HOLDER, name],
            stdout=subprocess.PIPE,
            text=True,
        )
        held.append(proc)
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        return proc

    yield hold
    for proc in held:
        proc.kill()
        proc.wait()


class DaemonProc:
    """`wanhooks run` in the router namespace, its log in a file."""

    def __init__(
        self, router: Router, *extra: str, env: dict[str, str] | None = None,
        start: tuple[str, ...] = ("-m", "wanhooks"), enter: tuple[str, ...] | None = None,
    ) -> None:  # fmt: skip
        """enter: how to get into the router (default `ip netns exec <router>`; a manager's
        mount namespace too, with nsenter, where the daemon must read its files)."""
        self.router = router
        self.log_path = router.tmp / "daemon.log"
        self.log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        enter = enter if enter is not None else ("ip", "netns", "exec", router.lab.router)
        argv = [
            *enter, sys.executable, *start,
            "-c", str(router.config), "--run-dir", str(router.run_dir), "run", *extra,
        ]  # fmt: skip
        # the kernel mirror confirmed every 2 s, not 60: every daemon test checks it (daemon_factory)
        env = {**(os.environ if env is None else env), "WANHOOKS_MIRROR_CONFIRM_S": "2"}
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def text(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, needle: str, timeout: float = 5.0) -> str:
        return (
            wait_for(lambda: needle in self.text(), timeout, f"{needle!r} in the daemon log") and self.text()
        )

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode


def wait_for(predicate: Callable[[], object], timeout: float, what: str = "condition") -> bool:
    """Poll every 5 ms; AssertionError naming what did not happen in time."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            raise AssertionError(f"no {what} within {timeout} s")
        time.sleep(0.005)


@pytest.fixture
def daemon_factory(router: Router) -> Iterator[Callable[..., DaemonProc]]:
    started: list[DaemonProc] = []

    def start(*extra: str) -> DaemonProc:
        proc = DaemonProc(router, *extra)
        started.append(proc)
        # liveness, not a measurement: under 1 s alone, 2.5 s with both CPUs busy, and some
        # 10 s beside the package test's Debian build (its imports wait on the disk)
        proc.wait_log("round 1:", timeout=30.0)
        return proc

    yield start
    for proc in started:
        proc.stop()
    # every daemon test checks the kernel mirror too: a full dump never found it wrong
    for proc in started:
        assert "a bug in wanhooks" not in proc.text(), proc.text()[-4000:]


def group_members(lab: object) -> dict[str, str]:
    """Device -> gateway of every member of the IPv4 balance group, from the kernel."""
    from wanhooks import constants as c
    from wanhooks.lab import Lab

    assert isinstance(lab, Lab)
    nexthops = {n["id"]: n for n in lab.ip_json(lab.router, "nexthop", "show")}
    group = nexthops.get(c.NH_GROUP_V4)
    if group is None:
        return {}
    return {nexthops[m["id"]]["dev"]: nexthops[m["id"]].get("gateway", "") for m in group["group"]}


def prefix_rules(lab: object) -> dict[str, int]:
    """wanhooks' IPv6 rules from a prefix, not one address (delegated prefixes): prefix -> table."""
    from wanhooks import constants as c
    from wanhooks.lab import Lab

    assert isinstance(lab, Lab)
    found = {}
    for rule in lab.ip_json(lab.router, "-6", "rule", "show"):
        if rule.get("priority") == c.PRIO_LINK_SOURCE and rule.get("srclen", 128) < 128:
            found[f"{rule['src']}/{rule['srclen']}"] = int(rule["table"])
    return found
