"""A throwaway Debian 12 with a real systemd as PID 1, for testing the package as it runs.

mmdebstrap makes a minimal bookworm root from Debian's archive (the packages
wanhooks depends on are put in then, so installing the .deb later needs no
network); systemd-nspawn boots it in a network namespace of its own
(--private-network): the container never sees the host's links, and the test
gives it links from namespaces of its own.  Nothing is installed on the host.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

SUITE = "bookworm"
# What the package needs from the distribution, plus what the tests use inside.
PACKAGES = (
    "systemd,systemd-sysv,dbus,python3,python3-yaml,python3-dbus-next,nftables,iproute2,man-db,"
    "iputils-ping"
)


def missing_tools() -> str:
    """Empty when a container can be made here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    for tool in ("mmdebstrap", "systemd-nspawn", "nsenter"):
        if shutil.which(tool) is None:
            return f"needs {tool}"
    return ""


def make_root(directory: Path) -> None:
    """A minimal bookworm root in `directory` (about 40 s here)."""
    tarball = directory.with_suffix(".tar")
    subprocess.run(
        ["mmdebstrap", "--quiet", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(tarball)],
        check=True, capture_output=True, timeout=600,
    )  # fmt: skip
    directory.mkdir(parents=True)
    subprocess.run(["tar", "-C", str(directory), "-xf", str(tarball)], check=True)
    tarball.unlink()
    # inside the container, a package may start its service (the host's policy-rc.d says no)
    policy = directory / "usr/sbin/policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 0\n")
    policy.chmod(0o755)


class Container:
    """A booted container: `run` executes a command inside it (all its namespaces)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.console = root.with_suffix(".console")
        self.nspawn: subprocess.Popen[bytes] | None = None
        self.leader = 0

    def boot(self, timeout: float = 60) -> None:
        with open(self.console, "wb") as console:
            self.nspawn = subprocess.Popen(
                ["systemd-nspawn", "-D", str(self.root), "--boot", "--private-network", "--register=no",
                 "--keep-unit", "--quiet"],
                stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while not self.leader:
            if time.monotonic() > deadline or self.nspawn.poll() is not None:
                raise RuntimeError(f"no systemd in the container: {self.console.read_text()[-2000:]}")
            found = subprocess.run(
                ["pgrep", "-P", str(self.nspawn.pid), "-x", "systemd"], capture_output=True, text=True
            ).stdout.split()
            self.leader = int(found[0]) if found else 0
            time.sleep(0.1)
        while time.monotonic() < deadline:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the container did not finish booting: {self.console.read_text()[-2000:]}")

    def run(
        self, *argv: str, check: bool = True, timeout: float = 120, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            ["nsenter", "-t", str(self.leader), "-a", "env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
             "LANG=C.UTF-8", "TERM=dumb", *argv],
            capture_output=True, text=True, timeout=timeout, input=stdin,
        )  # fmt: skip
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
        return proc

    def sh(self, script: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return self.run("sh", "-ec", script, check=check, timeout=timeout)

    def stop(self) -> None:
        if self.nspawn is None:
            return
        if self.leader:
            self.run("systemctl", "poweroff", check=False, timeout=10)
        try:
            self.nspawn.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.nspawn.send_signal(signal.SIGKILL)  # ours, by pid
            self.nspawn.wait(timeout=10)
        self.nspawn = None
