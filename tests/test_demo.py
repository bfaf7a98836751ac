"""The README's first command: the demo tells its whole story, draws its chart, and leaves no
namespace, process or file behind -- also when Ctrl-C ends it midway (root only)."""

from __future__ import annotations

import ctypes
import json
import os
import re
import signal
import struct
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from wanhooks.lab import netns_names

pytestmark = [pytest.mark.kernel, pytest.mark.serial]  # measured, and paths short enough: alone

PR_SET_CHILD_SUBREAPER = 36


def children() -> set[int]:
    """Our child processes, from /proc (orphans of the demo become ours: see subreaper())."""
    me, found = os.getpid(), set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == me:
                found.add(int(entry))
    return found


@contextmanager
def subreaper() -> Iterator[None]:
    """While inside, a process the demo started and left behind is re-parented to this test
    (not to init), so the test can see it."""
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    try:
        yield
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)


def leftovers(tmpdir: Path, prefix: str | None, before: set[int]) -> list[str]:
    """Whatever the demo left: its namespaces, processes, files in its temporary directory."""
    left = [f"file {p}" for p in tmpdir.iterdir()]
    if prefix is not None:
        left += [f"namespace {n}" for n in netns_names() if n.startswith(prefix + "-")]
    for pid in children() - before:
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            stat = Path(f"/proc/{pid}/stat").read_text()  # "pid (comm) state ...": a zombie has no argv
            left.append(f"process {pid} {stat[stat.index('(') : stat.rindex(')') + 3]}: {argv}")
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
        except (OSError, ChildProcessError):
            pass
    return left


def demo(tmp_path: Path, *args: str) -> tuple[subprocess.Popen[str], Path]:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "wanhooks.demo", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    return proc, tmpdir


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", data[:16]
    return struct.unpack(">II", data[16:24])


def test_the_demo_tells_the_whole_story_draws_it_and_leaves_nothing(tmp_path: Path) -> None:
    chart = tmp_path / "demo.png"
    with subreaper():
        before = children()
        proc, tmpdir = demo(tmp_path, "--short", "--png", str(chart))
        out, _ = proc.communicate(timeout=300)
        prefix = re.search(r"namespaces (\S+)-\*", out)
        left = leftovers(tmpdir, prefix.group(1) if prefix else None, before)
    assert proc.returncode == 0, out
    assert prefix is not None, out
    assert left == [], left
    # the story happened: measured, not assumed
    figures = json.loads(out.strip().splitlines()[-1])
    measured = ("failover_s", "rejoin_s", "join_s", "weights_settle_s", "weights_follow_s")
    assert all(figures[k] is not None for k in measured), figures
    # weight: auto: the weights set themselves on the lines' speeds, and followed the slowed fibre
    assert figures["weights_settle_s"] <= 60 and figures["weights_follow_s"] <= 75, figures
    phases = ("three links", "w2's ISP silent", "w2 back", "3G joined", "w2 slowed")
    rows = {m[0]: m[1].split() for m in re.findall(rf"^    ({'|'.join(phases)})\s+(.*)$", out, re.M)}
    assert set(rows) == set(phases), out
    # columns: w1 w2 w3 w4 total capacity (percent)
    assert float(rows["three links"][4]) > 20, rows  # more than the fastest line alone
    # w2 out (what it still sends is probes and stuck connections' retransmissions), w1 carries on
    silent = rows["w2's ISP silent"]
    assert (silent[1] == "-" or float(silent[1]) < 1.0) and float(silent[0]) > 5, rows
    assert rows["w2 back"][1] != "-", rows
    assert rows["3G joined"][3] != "-" and float(rows["3G joined"][3]) > 1, (
        rows
    )  # the 3G link carries traffic
    assert "active now: w1, w2, w3, w4" in out
    # status from the daemon: w2 at 5 of 30 Mbit/s of lines (17 %), give or take the 15 %
    w2 = re.search(r"^    w2\s+active\s+auto \((\d+)%\)\s+\d+% ", out, re.M)
    assert w2 is not None and 14 <= int(w2.group(1)) <= 20, out
    assert "auto weights, from each link's measured capacity" in out
    assert png_size(chart) == (1100, 750)


@pytest.mark.parametrize(
    ("when", "sig"),
    [
        ("== wanhooks starts", signal.SIGINT),  # what Ctrl-C sends
        ("== w2's ISP goes silent", signal.SIGINT),
        ("== w2's ISP goes silent", signal.SIGHUP),  # the terminal closed, ssh dropped
    ],
)
def test_ctrl_c_at_any_point_removes_everything(tmp_path: Path, when: str, sig: signal.Signals) -> None:
    chart = tmp_path / "demo.png"
    with subreaper():
        before = children()
        proc, tmpdir = demo(tmp_path, "--short", "--png", str(chart))
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith(when):
                proc.send_signal(sig)
                break
        rest, _ = proc.communicate(timeout=60)
        out = "".join(seen) + rest
        prefix = re.search(r"namespaces (\S+)-\*", out)
        left = leftovers(tmpdir, prefix.group(1) if prefix else None, before)
    assert proc.returncode == 130, out
    assert "interrupted: the lab's namespaces, processes and files are gone" in out
    assert prefix is not None and left == [], left
    assert not chart.exists()
