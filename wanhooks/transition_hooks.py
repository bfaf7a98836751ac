"""Run the admin's executables on each link transition (DDNS updates, notifications).

Every executable file in the hooks directory runs, in name order, with the
transition in its environment (WANHOOKS_LINK, WANHOOKS_FAMILY,
WANHOOKS_OLD_STATE, WANHOOKS_NEW_STATE, WANHOOKS_REASON).  Hooks run in the
background with a time limit: a slow or hung hook never delays failover.
Like networkd-dispatcher, only files owned by root and writable by no one
else are run: the hooks run as root.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import stat

log = logging.getLogger("wanhooks.hooks")

HOOK_TIMEOUT_S = 30.0


def runnable_hooks(directory: str) -> list[str]:
    """Executables in directory that are safe to run as root, in name order."""
    try:
        names = sorted(os.listdir(directory))
    except (FileNotFoundError, NotADirectoryError):
        return []
    except OSError as exc:
        log.warning("hooks: cannot read %s: %s", directory, exc.strerror)
        return []
    out = []
    for name in names:
        path = os.path.join(directory, name)
        try:
            info = os.stat(path)
        except OSError:
            continue
        if not stat.S_ISREG(info.st_mode) or not info.st_mode & stat.S_IXUSR:
            continue
        if info.st_uid != 0 or info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            log.warning("hooks: %s skipped: it must be owned by root and writable by no one else", path)
            continue
        out.append(path)
    return out


async def run_hooks(directory: str, env: dict[str, str], timeout: float = HOOK_TIMEOUT_S) -> None:
    for path in runnable_hooks(directory):
        try:
            proc = await asyncio.create_subprocess_exec(
                path,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **env},
                start_new_session=True,
            )
        except OSError as exc:
            log.warning("hooks: %s did not start: %s", path, exc.strerror)
            continue
        try:
            _out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except asyncio.TimeoutError:
            # the whole session: a hook's own children would keep its pipe open
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            log.warning("hooks: %s killed after %g s", path, timeout)
            continue
        if proc.returncode:
            tail = err.decode("utf-8", "replace").strip().splitlines()[-1:] if err else []
            log.warning("hooks: %s exited %d%s", path, proc.returncode, f": {tail[0]}" if tail else "")
        else:
            log.info("hooks: %s ran", path)
