"""Transition hooks: what runs, with what, and that a hung one cannot hold anything up.

Root only (the hooks run only when root owns them); files in a temporary
directory, no networking.  Also: that nobody else's file can be made to run
(symbolic links, swaps between check and exec, writable directories), that a
flapping link's runs are coalesced and all links' capped, and that a hook's
output cannot grow the daemon.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sys
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from wanhooks.service import transition_hooks as th
from wanhooks.service.transition_hooks import HookRunner, run_hooks, runnable_hooks

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="hooks run only when root owns them")

NOBODY = 65534


def hook(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


def nobody_dir(path: Path) -> Path:
    path.mkdir(mode=0o755)
    os.chown(path, NOBODY, NOBODY)
    return path


def evil_script(tmp_path: Path, out: Path) -> Path:
    """A script of nobody's, in nobody's directory: what an attacker wants root to run."""
    home = nobody_dir(tmp_path / "nobody")
    script = hook(home, "evil", f'echo "evil ran as uid $(id -u)" >> {out}\n')
    os.chown(script, NOBODY, NOBODY)
    return script


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "wanhooks.hooks" and r.levelno >= logging.WARNING
    ]


async def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


# --- what runs, with what ---------------------------------------------------------


def test_hooks_get_the_transition_in_their_environment(tmp_path: Path) -> None:
    out = tmp_path / "out"
    fields = "$WANHOOKS_LINK $WANHOOKS_FAMILY $WANHOOKS_OLD_STATE $WANHOOKS_NEW_STATE $WANHOOKS_REASON"
    hook(tmp_path, "10-record", f'echo "{fields} $(pwd) $PATH $WANHOOKS_HOOK" >> {out}\n')
    hook(tmp_path, "20-not-executable", "exit 0\n", mode=0o644)
    hook(tmp_path, "30-world-writable", f"echo bad >> {out}\n", mode=0o777)
    env = {"WANHOOKS_LINK": "w2", "WANHOOKS_FAMILY": "4", "WANHOOKS_OLD_STATE": "up",
           "WANHOOKS_NEW_STATE": "down", "WANHOOKS_REASON": "no reply; $(reboot)"}  # fmt: skip
    asyncio.run(run_hooks(str(tmp_path), env))
    # data, never evaluated; cwd /, the clean PATH, and the hook's own path ($0 is /proc/self/fd/N)
    assert out.read_text() == f"w2 4 up down no reply; $(reboot) / {th.PATH_ENV} {tmp_path}/10-record\n"
    assert [Path(p).name for p in runnable_hooks(str(tmp_path))] == ["10-record"]


def test_a_hung_hook_is_killed_and_the_caller_never_waits_for_it(tmp_path: Path) -> None:
    hook(tmp_path, "10-hang", "sleep 60\n")

    async def scenario() -> float:
        started = time.monotonic()
        task = asyncio.get_running_loop().create_task(run_hooks(str(tmp_path), {}, timeout=0.5))
        await asyncio.sleep(0)  # the caller goes on at once
        waited = time.monotonic() - started
        await task
        return waited

    assert asyncio.run(scenario()) < 0.1


def test_a_missing_directory_means_no_hooks(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert runnable_hooks(str(tmp_path / "nope")) == []
    assert runnable_hooks(str(tmp_path / "nope" / "deeper")) == []
    assert not warnings(caplog)  # the default hooks_dir need not exist


def test_scripts_and_binaries_run_through_the_checked_descriptor(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    out = tmp_path / "out"
    hook(hooks, "10-sh", f'echo "sh $WANHOOKS_LINK" >> {out}\n')
    python = hooks / "20-python"
    record = f"open({str(out)!r}, 'a').write('py ' + os.environ['WANHOOKS_LINK'] + '\\n')"
    python.write_text(f"#!{sys.executable}\nimport os\n{record}\n")
    python.chmod(0o755)
    shutil.copy(shutil.which("touch") or "/usr/bin/touch", hooks / "30-elf")  # no operand: exits 1
    (hooks / "30-elf").chmod(0o755)
    caplog.set_level(logging.INFO, logger="wanhooks.hooks")
    asyncio.run(run_hooks(str(hooks), {"WANHOOKS_LINK": "w1"}))
    assert lines(out) == ["sh w1", "py w1"]
    # the binary ran, with the hook's path as its argv[0] (not /proc/self/fd/N)
    assert any("30-elf exited 1" in w and f"{hooks}/30-elf --help" in w for w in warnings(caplog)), (
        caplog.text
    )


# --- nobody else's file -------------------------------------------------------------


def test_a_symlinked_hook_is_not_run(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    out = tmp_path / "out"
    elsewhere = hook(tmp_path, "rootscript", f"echo linked >> {out}\n")  # root's, even
    (hooks / "10-link").symlink_to(elsewhere)
    (hooks / "20-evil").symlink_to(evil_script(tmp_path, out))
    hook(hooks, "30-real", f"echo real >> {out}\n")
    assert [Path(p).name for p in runnable_hooks(str(hooks))] == ["30-real"]
    asyncio.run(run_hooks(str(hooks), {}))
    assert lines(out) == ["real"]
    assert sum("symbolic link" in w for w in warnings(caplog)) == 2


def test_a_hook_swapped_for_a_symlink_after_the_check_does_not_run(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # The attack on the old code: every hook was checked (stat, which follows
    # links) before the first ran, then each was executed by its name.  The
    # first hook -- or anyone racing it -- swaps the second for a link to
    # nobody's script, and root ran that.
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    out = tmp_path / "out"
    evil = evil_script(tmp_path, out)
    hook(hooks, "10-swap", f"rm -f {hooks}/20-ddns && ln -s {evil} {hooks}/20-ddns\n")
    hook(hooks, "20-ddns", f"echo ddns >> {out}\n")
    assert [Path(p).name for p in runnable_hooks(str(hooks))] == ["10-swap", "20-ddns"]
    asyncio.run(run_hooks(str(hooks), {}))
    assert (hooks / "20-ddns").is_symlink()  # the swap happened
    assert lines(out) == []  # and nobody's script did not run
    assert any("20-ddns is a symbolic link" in w for w in warnings(caplog))


def test_a_hook_swapped_right_after_it_was_opened_runs_what_was_checked(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The narrowest window: between the check on the descriptor and exec.  The
    # swap is made right after the runner opened the hook for its run; what
    # runs is the file checked, through its descriptor, not the name's new target.
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    out = tmp_path / "out"
    evil = evil_script(tmp_path, out)
    hook(hooks, "20-ddns", f"echo ddns >> {out}\n")
    opened: list[str] = []
    real_open = th._open_hook

    def open_then_swap(dir_fd: int, name: str) -> int:
        fd = real_open(dir_fd, name)
        opened.append(name)
        if len(opened) == 2:  # the scan's open, then the run's
            (hooks / name).unlink()
            (hooks / name).symlink_to(evil)
        return fd

    monkeypatch.setattr(th, "_open_hook", open_then_swap)
    asyncio.run(run_hooks(str(hooks), {}))
    assert opened == ["20-ddns", "20-ddns"] and (hooks / "20-ddns").is_symlink()
    assert lines(out) == ["ddns"]  # root's original, unlinked but still open, ran


@pytest.mark.parametrize(("mode", "who"), [(0o775, "group"), (0o757, "others"), (0o1777, "others")])
def test_a_hooks_directory_others_can_write_runs_nothing_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, mode: int, who: str
) -> None:
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    hooks.chmod(mode)  # sticky or not: others could add their own hooks
    out = tmp_path / "out"
    hook(hooks, "10-record", f"echo ran >> {out}\n")
    assert transitions(hooks, 3) == 3
    assert lines(out) == []
    found = warnings(caplog)
    assert len(found) == 1 and f"writable by {who}" in found[0] and str(hooks) in found[0], found


def transitions(directory: Path, count: int, links: int = 1) -> int:
    """count transitions of each of links links, one after another's hooks ended; the runs made."""

    async def scenario() -> int:
        runner = HookRunner(str(directory))
        for _ in range(count):
            for link in range(links):
                runner.transition(f"w{link}", {"WANHOOKS_LINK": f"w{link}"})
            await until(lambda: not runner._links)
        return runner.runs

    return asyncio.run(scenario())


def test_a_hooks_directory_under_nobodys_runs_nothing_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    parent = nobody_dir(tmp_path / "parent")  # nobody could rename hooks.d and put their own there
    hooks = parent / "hooks.d"
    hooks.mkdir()
    out = tmp_path / "out"
    hook(hooks, "10-record", f"echo ran >> {out}\n")
    assert transitions(hooks, 3) == 3
    assert lines(out) == []
    found = warnings(caplog)
    assert len(found) == 1 and f"{parent} is owned by uid {NOBODY}, not root" in found[0], found


def test_the_warning_comes_again_only_when_the_problem_does(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    hooks = tmp_path / "hooks.d"
    hooks.mkdir()
    out = tmp_path / "out"
    hook(hooks, "10-record", f"echo ran >> {out}\n")

    async def scenario() -> None:
        runner = HookRunner(str(hooks))
        for mode in (0o777, 0o777, 0o755, 0o755, 0o777, 0o777):
            hooks.chmod(mode)
            runner.transition("w1", {})
            await until(lambda: not runner._links)

    asyncio.run(scenario())
    assert lines(out) == ["ran", "ran"]
    assert len(warnings(caplog)) == 2  # once each time it became writable


def test_a_sticky_directory_on_the_way_is_fine_when_root_owns_what_is_below(tmp_path: Path) -> None:
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)  # like /tmp: others may add their entries, not rename root's
    out = tmp_path / "out"
    (sticky / "hooks.d").mkdir()
    hook(sticky / "hooks.d", "10-record", f"echo ran >> {out}\n")
    assert transitions(sticky / "hooks.d", 1) == 1
    assert lines(out) == ["ran"]
    # ... and refused when what is below is not root's
    theirs = nobody_dir(sticky / "theirs")
    (theirs / "hooks.d").mkdir()
    hook(theirs / "hooks.d", "10-record", f"echo theirs >> {out}\n")
    assert runnable_hooks(str(theirs / "hooks.d")) == []
    # the sticky directory itself is no hooks directory, however it is named
    hook(sticky, "10-record", f"echo sticky >> {out}\n")
    for name in (str(sticky), f"{sticky}/.", f"{sticky}/hooks.d/..", f"{sticky}/hooks.d/../"):
        assert runnable_hooks(name) == [], name
    # and a writable directory on the way without the sticky bit is refused
    sticky.chmod(0o777)
    assert runnable_hooks(str(sticky / "hooks.d")) == []


def test_symbolic_links_on_the_way_must_be_roots_too(tmp_path: Path) -> None:
    real = tmp_path / "real"
    (real / "hooks.d").mkdir(parents=True)
    hook(real / "hooks.d", "10-record", "exit 0\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "wanhooks").symlink_to("../real")  # relative, in root's directory: fine
    assert [Path(p).name for p in runnable_hooks(str(tmp_path / "etc/wanhooks/hooks.d"))] == ["10-record"]
    sticky = tmp_path / "sticky"
    sticky.mkdir()
    sticky.chmod(0o1777)
    (sticky / "link").symlink_to(real)
    os.chown(sticky / "link", NOBODY, NOBODY, follow_symlinks=False)  # theirs: they chose the target
    assert runnable_hooks(str(sticky / "link" / "hooks.d")) == []
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    assert runnable_hooks(str(tmp_path / "loop" / "hooks.d")) == []


# --- coalescing, the cap, the output ----------------------------------------------


def test_a_flapping_link_runs_its_hooks_for_the_first_and_the_latest_transition(tmp_path: Path) -> None:
    out = tmp_path / "out"
    hook(tmp_path, "10-slow", f'echo "$WANHOOKS_REASON" >> {out}\nsleep 0.5\n')

    async def scenario() -> int:
        runner = HookRunner(str(tmp_path))
        runner.transition("w1", {"WANHOOKS_REASON": "0"})
        await until(lambda: bool(lines(out)))  # its hook is running
        for i in range(1, 50):
            runner.transition("w1", {"WANHOOKS_REASON": str(i)})
        runner.transition("w2", {"WANHOOKS_REASON": "other link"})  # its own, not coalesced with w1's
        await until(lambda: not runner._links)
        return runner.runs

    assert asyncio.run(scenario()) == 3
    assert sorted(lines(out)) == sorted(["0", "49", "other link"])
    assert lines(out).index("0") < lines(out).index("49")


def test_at_most_max_running_hooks_run_at_once_across_links(tmp_path: Path) -> None:
    out = tmp_path / "out"
    hook(tmp_path, "10-slow", f"echo start >> {out}\nsleep 0.3\necho end >> {out}\n")
    seen: list[int] = []

    async def scenario() -> None:
        runner = HookRunner(str(tmp_path))
        for link in range(12):
            runner.transition(f"w{link}", {})
        while runner._links:
            seen.append(runner.running)
            await asyncio.sleep(0.01)

    asyncio.run(scenario())
    events = lines(out)
    assert events.count("start") == 12
    running = peak = 0
    for event in events:
        running += 1 if event == "start" else -1
        peak = max(peak, running)
    assert peak == max(seen) == th.MAX_RUNNING == 4


def test_a_hook_writing_100_mb_to_stderr_leaves_memory_and_the_log_line_small(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # one line of 100 MB, never ended, then a failure
    hook(
        tmp_path,
        "10-chatty",
        "yes xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx | tr -d '\\n' | head -c 100000000 >&2\nexit 3\n",
    )
    tracemalloc.start()
    try:
        asyncio.run(run_hooks(str(tmp_path), {}, timeout=60))
        _now, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 4 * 1024 * 1024  # the pipe is read 256 KiB at a time, only the last 4 KiB kept
    found = warnings(caplog)
    assert len(found) == 1 and "10-chatty exited 3: xxx" in found[0], found
    assert len(found[0]) < len(str(tmp_path)) + th.LOG_TAIL_CHARS + 40


# --- the daemon's side: reload, stop ----------------------------------------------


def test_the_directory_can_change_between_runs(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    out = tmp_path / "out"
    hook(first, "10", f"echo a >> {out}\n")
    hook(second, "10", f"echo b >> {out}\n")

    async def scenario() -> None:
        runner = HookRunner(str(first))
        runner.transition("w1", {})
        await until(lambda: not runner._links)
        runner.directory = str(second)  # a config reload
        runner.transition("w1", {})
        await until(lambda: not runner._links)

    asyncio.run(scenario())
    assert lines(out) == ["a", "b"]


def test_close_ends_running_hooks_and_starts_no_more(tmp_path: Path) -> None:
    pids, after = tmp_path / "pids", tmp_path / "after"
    hook(tmp_path, "10-sleep", f'[ "$WANHOOKS_LINK" = w2 ] && trap "" TERM\necho $$ >> {pids}\nsleep 60\n')
    hook(tmp_path, "20-after", f"echo ran >> {after}\n")

    async def scenario() -> float:
        runner = HookRunner(str(tmp_path))
        runner.transition("w1", {"WANHOOKS_LINK": "w1"})
        runner.transition("w2", {"WANHOOKS_LINK": "w2"})  # its hook ignores SIGTERM (and so its sleep)
        await until(lambda: runner.running == 2 and len(lines(pids)) == 2)
        started = time.monotonic()
        await runner.close(grace=0.5)
        runner.transition("w3", {"WANHOOKS_LINK": "w3"})  # after close: ignored
        assert not runner._links and runner.running == 0
        return time.monotonic() - started

    assert 0.5 <= asyncio.run(scenario()) < 5  # w2's waited out the grace, then SIGKILL
    assert len(lines(pids)) == 2 and not after.exists()  # 20-after never started; w3 ran nothing
    for pid in lines(pids):  # the hook and its sleep: its whole process group, once init reaped it
        asyncio.run(until(lambda pid=int(pid): not group_alive(pid)))


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True
