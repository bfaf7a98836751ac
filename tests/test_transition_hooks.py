"""Transition hooks: what runs, with what, and that a hung one cannot hold anything up."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from wanhooks.transition_hooks import run_hooks, runnable_hooks

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="hooks run only when root owns them")


def hook(directory: Path, name: str, body: str, mode: int = 0o755) -> Path:
    path = directory / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(mode)
    return path


def test_hooks_get_the_transition_in_their_environment(tmp_path: Path) -> None:
    out = tmp_path / "out"
    fields = "$WANHOOKS_LINK $WANHOOKS_FAMILY $WANHOOKS_OLD_STATE $WANHOOKS_NEW_STATE $WANHOOKS_REASON"
    hook(tmp_path, "10-record", f'echo "{fields}" >> {out}\n')
    hook(tmp_path, "20-not-executable", "exit 0\n", mode=0o644)
    hook(tmp_path, "30-world-writable", f"echo bad >> {out}\n", mode=0o777)
    env = {"WANHOOKS_LINK": "w2", "WANHOOKS_FAMILY": "4", "WANHOOKS_OLD_STATE": "up",
           "WANHOOKS_NEW_STATE": "down", "WANHOOKS_REASON": "no reply; $(reboot)"}  # fmt: skip
    asyncio.run(run_hooks(str(tmp_path), env))
    assert out.read_text() == "w2 4 up down no reply; $(reboot)\n"  # data, never evaluated
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


def test_a_missing_directory_means_no_hooks(tmp_path: Path) -> None:
    assert runnable_hooks(str(tmp_path / "nope")) == []
