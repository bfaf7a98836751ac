"""Run the admin's executables on each link transition (DDNS updates, notifications).

Every executable file in the hooks directory runs, in name order, with the
transition in its environment (WANHOOKS_LINK, WANHOOKS_FAMILY,
WANHOOKS_OLD_STATE, WANHOOKS_NEW_STATE, WANHOOKS_REASON), as root, with
stdin and stdout on /dev/null, cwd "/" and a clean environment.  Hooks run in
the background with a time limit: a slow or hung hook never delays failover.

Because they run as root, a hook runs only when no one but root could have
put it there or changed it:

* the hooks directory and every directory above it, up to /, are owned by
  root and writable by no one else (a sticky world-writable directory such
  as /tmp may be on the way: see _walk), and so is every symbolic link the
  path goes through;
* the hook is a regular file in that directory -- not a symbolic link --
  owned by root, writable by no one else, executable by its owner.

Those checks are made on descriptors, and the hook is executed through the
descriptor that was checked (/proc/self/fd/N), never by its name again: a
file swapped for a link to someone else's script after the check cannot be
what runs.  So a script's $0 is /proc/self/fd/N; WANHOOKS_HOOK holds its
path (a binary's argv[0] is its path too).

HookRunner is what the daemon uses: per link, only the latest transition
waits while that link's hooks run (a flapping link does not queue hundreds of
runs), at most MAX_RUNNING hook processes run at once, and a hook's stderr is
kept only as its last STDERR_KEPT bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import signal
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ..events import HealthChanged
from ..plan.names import shown

log = logging.getLogger("wanhooks.hooks")

HOOK_TIMEOUT_S: Final = 30.0
# Hook processes at once, across all links.  Hooks are DDNS updates and
# notifications: a few at a time keep up with any real transition rate, and
# 64 flapping links must not mean 64 root processes (and their children)
# competing with the probes for the CPU.
MAX_RUNNING: Final = 4
# The tail of a hook's stderr that is kept for the log (its last line is
# logged when it fails).  The rest is read and thrown away as it arrives:
# a hook writing gigabytes must not grow the daemon.
STDERR_KEPT: Final = 4096
LOG_TAIL_CHARS: Final = 200  # of that last line, in the log
# close(): how long running hooks get to finish after SIGTERM before SIGKILL
CLOSE_GRACE_S: Final = 2.0
# Symbolic links followed in the hooks directory's path, as the kernel's own limit (ELOOP)
MAX_SYMLINKS: Final = 40
PATH_ENV: Final = "/usr/sbin:/usr/bin:/sbin:/bin"
_OTHERS_WRITE: Final = stat.S_IWGRP | stat.S_IWOTH


def _printable(text: str, limit: int = LOG_TAIL_CHARS) -> str:
    """Text from a hook or the file system as one short log line: controls escaped, cut short."""
    return shown(text, limit)


# --- the directory ----------------------------------------------------------------


class _Refused(Exception):  # noqa: N818 -- a verdict, not an error: the message says why
    """The hooks directory cannot be trusted; the message says why."""


def _owner_problem(info: os.stat_result, shown: str, what: str) -> str | None:
    if info.st_uid != 0:
        return f"{what} {shown} is owned by uid {info.st_uid}, not root: its owner could replace the hooks"
    return None


def _walk(directory: str) -> int | None:
    """An O_RDONLY descriptor of directory, every step to it checked; None if it does not exist.

    The path is resolved here one component at a time (openat with
    O_NOFOLLOW from a directory already checked), not by the kernel, so each
    directory and symbolic link on the way is checked as it is used: each
    must be owned by root, and each directory writable by no one else --
    except that a directory with the sticky bit (/tmp) may be writable by
    all on the way, because the sticky bit stops anyone but root renaming or
    removing root's entries in it, and the entry we take from it must be
    root's.  The hooks directory itself must be writable by root alone.
    Raises _Refused with the reason otherwise.
    """
    pending = [part for part in reversed(directory.split("/")) if part]  # a stack: next part last
    shown = ""  # the path walked so far, for messages
    root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    stack: list[tuple[int, str]] = [(root, "/")]  # the directories walked through, checked
    links = 0
    try:
        _check_directory(os.fstat(root), "/", final=False)
        while pending:
            part = pending.pop()
            current, shown = stack[-1]
            if part == ".":
                continue
            if part == "..":  # physically: the directory we came through
                if len(stack) > 1:
                    os.close(stack.pop()[0])
                continue
            name = os.path.join(shown, part)
            try:
                fd = os.open(part, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            except FileNotFoundError:
                return None
            try:
                info = os.fstat(fd)
            except OSError:
                os.close(fd)
                raise
            if stat.S_ISLNK(info.st_mode):
                os.close(fd)
                problem = _owner_problem(info, _printable(name), "the symbolic link")
                if problem:
                    raise _Refused(problem)
                links += 1
                if links > MAX_SYMLINKS:
                    raise _Refused(f"{_printable(directory)}: too many levels of symbolic links")
                # read through the directory checked above: only root can change the link
                target = os.readlink(part, dir_fd=current)
                if target.startswith("/"):
                    while len(stack) > 1:
                        os.close(stack.pop()[0])
                pending.extend(p for p in reversed(target.split("/")) if p)
                continue
            if not stat.S_ISDIR(info.st_mode):
                os.close(fd)
                raise _Refused(f"{_printable(name)} is not a directory")
            stack.append((fd, name))
            _check_directory(info, name, final=False)
        # Checked here, not as the last part is met: "/tmp/." or "x/.." end on
        # a directory met earlier, checked then only as one on the way.
        _check_directory(os.fstat(stack[-1][0]), stack[-1][1], final=True)
        # O_PATH was enough to walk; listing needs a descriptor opened for reading
        return os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=stack[-1][0])
    except _Refused:
        raise
    except OSError as exc:
        raise _Refused(f"{_printable(shown or directory)}: {exc.strerror or exc}") from None
    finally:
        for fd, _name in stack:
            os.close(fd)


def _check_directory(info: os.stat_result, name: str, *, final: bool) -> None:
    shown = _printable(name)
    problem = _owner_problem(info, shown, "the hooks directory" if final else "the directory")
    if problem:
        raise _Refused(problem)
    if info.st_mode & _OTHERS_WRITE and (final or not info.st_mode & stat.S_ISVTX):
        who = "group" if not info.st_mode & stat.S_IWOTH else "others"
        where = "the hooks directory" if final else "the directory"
        raise _Refused(
            f"{where} {shown} is writable by {who} (mode {stat.S_IMODE(info.st_mode):04o}): "
            "they could put their own hooks in it"
        )


# --- the hooks --------------------------------------------------------------------


def _open_hook(dir_fd: int, name: str) -> int:
    """A descriptor of the entry itself, never what a symbolic link points to.

    O_PATH: nothing is read and no device is opened, but it can be
    executed (/proc/self/fd/N) -- and checked with fstat first.
    """
    return os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def _hook_problem(info: os.stat_result, name: str) -> str | None:
    """Why an executable entry may not run ('' for an entry that is not a hook at all)."""
    mode = info.st_mode
    if stat.S_ISLNK(mode):
        return f"{name} is a symbolic link: a hook must be a file in the hooks directory itself"
    if not stat.S_ISREG(mode) or not mode & stat.S_IXUSR:
        return ""  # a subdirectory, a README: not meant to run
    if info.st_uid != 0 or mode & _OTHERS_WRITE:
        return f"{name} skipped: it must be owned by root and writable by no one else"
    return None


@dataclass
class _Hooks:
    """The checked hooks directory, open, and what its listing said."""

    dir_fd: int
    names: list[str]  # the runnable ones, in name order
    problems: list[str]  # hooks refused, one line each


def _scan(directory: str) -> _Hooks | None:
    """The hooks directory, checked and open, with its runnable hooks; None when there is none.

    Raises _Refused when the directory cannot be trusted.
    """
    dir_fd = _walk(directory)
    if dir_fd is None:
        return None
    hooks = _Hooks(dir_fd, [], [])
    try:
        names = sorted(os.listdir(dir_fd))
    except OSError as exc:
        os.close(dir_fd)
        raise _Refused(f"cannot read {_printable(directory)}: {exc.strerror or exc}") from None
    for name in names:
        try:
            fd = _open_hook(dir_fd, name)
        except OSError:
            continue  # gone since the listing
        try:
            problem = _hook_problem(os.fstat(fd), os.path.join(directory, name))
        finally:
            os.close(fd)
        if problem is None:
            hooks.names.append(name)
        elif problem:
            hooks.problems.append(_printable(problem))
    return hooks


def runnable_hooks(directory: str) -> list[str]:
    """Paths of the hooks in directory that would run now, in name order."""
    try:
        hooks = _scan(directory)
    except _Refused as refused:
        _direct_warnings.state([f"none run from {_printable(directory)}: {refused}"])
        return []
    if hooks is None:
        return []
    os.close(hooks.dir_fd)
    _direct_warnings.state(hooks.problems)
    return [os.path.join(directory, name) for name in hooks.names]


# --- running them -----------------------------------------------------------------


class _Warnings:
    """Each problem logged once while it lasts, not on every transition.

    A scan reports the whole set of problems the directory has now; one not
    in the last set is new and is logged.  A problem that goes away and comes
    back is logged again.
    """

    def __init__(self) -> None:
        self._current: frozenset[str] = frozenset()

    def state(self, problems: list[str]) -> None:
        for problem in problems:
            if problem not in self._current:
                log.warning("hooks: %s", problem)
        self._current = frozenset(problems)

    def once(self, problem: str) -> None:
        if problem not in self._current:
            log.warning("hooks: %s", problem)
            self._current |= {problem}


# run_hooks' and runnable_hooks' own, so that their callers do not repeat warnings either
_direct_warnings = _Warnings()


class _Tail(asyncio.Protocol):
    """A pipe's last `keep` bytes; everything before them is dropped as it arrives."""

    def __init__(self, keep: int) -> None:
        self.kept = bytearray()
        self.total = 0
        self._keep = keep
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        self.total += len(data)
        self.kept += data[-self._keep :]
        if len(self.kept) > self._keep:
            del self.kept[: len(self.kept) - self._keep]

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)

    def last_line(self) -> str:
        lines = self.kept.decode("utf-8", "replace").strip().splitlines()
        return _printable(lines[-1]) if lines else ""


@dataclass
class _Context:
    """What one run of a transition's hooks shares with the others (HookRunner's, or run_hooks')."""

    timeout: float
    slots: asyncio.Semaphore
    warnings: _Warnings
    procs: set[asyncio.subprocess.Process] = field(default_factory=set)
    stopping: Callable[[], bool] = lambda: False


async def _run_transition(directory: str, env: dict[str, str], ctx: _Context) -> None:
    """Each runnable hook in directory, in name order, one after the other."""
    try:
        hooks = _scan(directory)
    except _Refused as refused:
        ctx.warnings.state([f"none run from {_printable(directory)}: {refused}"])
        return
    if hooks is None:
        ctx.warnings.state([])
        return
    ctx.warnings.state(hooks.problems)
    try:
        for name in hooks.names:
            if ctx.stopping():
                return
            async with ctx.slots:
                if ctx.stopping():
                    return
                await _run_one(hooks.dir_fd, directory, name, env, ctx)
    finally:
        os.close(hooks.dir_fd)


async def _run_one(dir_fd: int, directory: str, name: str, env: dict[str, str], ctx: _Context) -> None:
    path = os.path.join(directory, name)
    shown = _printable(path)
    # Opened again, and checked again on this descriptor: the scan's check is
    # stale by now (an earlier hook ran meanwhile).  What runs is this file.
    try:
        fd = _open_hook(dir_fd, name)
    except OSError:
        return  # removed since the scan
    try:
        problem = _hook_problem(os.fstat(fd), path)
        if problem is not None:
            if problem:
                ctx.warnings.once(_printable(problem))
            return
        await _spawn_and_wait(fd, path, shown, env, ctx)
    finally:
        os.close(fd)


async def _spawn_and_wait(fd: int, path: str, shown: str, env: dict[str, str], ctx: _Context) -> None:
    loop = asyncio.get_running_loop()
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    try:
        transport, tail = await loop.connect_read_pipe(
            lambda: _Tail(STDERR_KEPT), os.fdopen(read_end, "rb", buffering=0)
        )
    except BaseException:
        os.close(read_end)
        os.close(write_end)
        raise
    proc: asyncio.subprocess.Process | None = None
    try:
        try:
            # Executed through the checked descriptor: the kernel runs exactly
            # that file.  pass_fds keeps it open in the child across exec, so
            # a #! script's interpreter can open /proc/self/fd/N too.
            proc = await asyncio.create_subprocess_exec(
                path,  # argv[0], for the hook's own messages
                executable=f"/proc/self/fd/{fd}",
                pass_fds=(fd,),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=write_end,
                cwd="/",
                env={"PATH": PATH_ENV, **env, "WANHOOKS_HOOK": path},
                start_new_session=True,  # its own process group: killed as one
            )
        except OSError as exc:
            reason = exc.strerror or str(exc)
            if exc.errno == errno.ENOENT and not os.path.isdir("/proc/self/fd"):
                reason = "/proc is not mounted: hooks are executed through /proc/self/fd"
            log.warning("hooks: %s did not start: %s", shown, reason)
            return
        finally:
            os.close(write_end)  # the child has its copy: EOF comes when it (and its children) close theirs
        ctx.procs.add(proc)
        # Done when it has exited and its stderr is closed (a hook's children
        # may hold that open and go on working): both within the time limit.
        exited = loop.create_task(proc.wait())
        try:
            await asyncio.wait((exited, tail.closed), timeout=ctx.timeout)
        finally:
            exited.cancel()  # still waiting only after a timeout or a cancel: proc.wait() again below
        if proc.returncode is None or not tail.closed.done():
            _kill(proc, signal.SIGKILL)
            await proc.wait()
            log.warning("hooks: %s killed after %g s", shown, ctx.timeout)
            return
        if proc.returncode:
            line = tail.last_line()
            how = (
                f"exited {proc.returncode}" if proc.returncode > 0 else f"ended by signal {-proc.returncode}"
            )
            log.warning("hooks: %s %s%s", shown, how, f": {line}" if line else "")
        else:
            log.info("hooks: %s ran", shown)
    finally:
        if proc is not None:
            ctx.procs.discard(proc)
            if proc.returncode is None:  # cancelled (close()): it must not outlive us
                _kill(proc, signal.SIGKILL)
                log.info("hooks: %s killed: its run was cancelled (wanhooks is stopping)", shown)
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.shield(proc.wait())
        transport.close()  # a hook's child that kept the pipe open gets EPIPE, we keep no fd


def _kill(proc: asyncio.subprocess.Process, sig: int) -> None:
    # the whole session (start_new_session): a hook's own children keep its
    # pipe open and its work going
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


async def run_hooks(directory: str, env: dict[str, str], timeout: float = HOOK_TIMEOUT_S) -> None:
    """Run directory's hooks for one transition, now, in name order (no coalescing: HookRunner)."""
    ctx = _Context(timeout, asyncio.Semaphore(1), _direct_warnings)
    await _run_transition(directory, env, ctx)


class HookRunner:
    """Runs the hooks for the daemon's transitions, from its event loop, without awaiting.

    transition(link, env) returns at once; the hooks run in tasks on the
    running loop.  Per link, runs are coalesced: while a link's hooks are
    running, later transitions of that link are not queued one by one --
    only the latest is kept, and the hooks run once more for it when the
    current run ends (so a link that flaps 50 times during a slow hook gives
    2 runs, the first and the latest, and the last state the hooks see is
    the link's last state).  `link` is the coalescing key: a caller wanting
    each address family's transitions kept apart passes e.g. "w1/6".

    At most max_running hook processes run at once, across all links.
    `directory` may be reassigned (a config reload); each run uses the value
    it finds when it starts.  close() ends everything on daemon stop.
    """

    def __init__(
        self, directory: str, *, timeout: float = HOOK_TIMEOUT_S, max_running: int = MAX_RUNNING
    ) -> None:
        self.directory = directory
        self.timeout = timeout
        self.runs = 0  # transitions whose hooks were run (coalesced ones not counted)
        self._latest: dict[str, dict[str, str]] = {}  # per link: the transition waiting, the latest
        self._links: dict[str, asyncio.Task[None]] = {}  # per link: the task running its hooks
        self._closing = False
        self._ctx = _Context(timeout, asyncio.Semaphore(max_running), _Warnings(), stopping=self._stopping)

    def _stopping(self) -> bool:
        return self._closing

    @property
    def running(self) -> int:
        """Hook processes running now."""
        return len(self._ctx.procs)

    def health_changed(self, event: HealthChanged) -> None:
        """A link's health changed state: its hooks run with what changed in their environment."""
        self.transition(
            f"{event.iface}/{event.family}",
            {
                "WANHOOKS_EVENT": "health",
                "WANHOOKS_LINK": event.iface,
                "WANHOOKS_FAMILY": str(event.family),
                "WANHOOKS_OLD_STATE": event.old,
                "WANHOOKS_NEW_STATE": event.new,
                "WANHOOKS_REASON": event.reason,
            },
        )

    def transition(self, link: str, env: dict[str, str]) -> None:
        """Schedule link's hooks for this transition; replaces one of link's still waiting."""
        if self._closing:
            return
        self._latest[link] = dict(env)
        if link not in self._links:
            self._links[link] = asyncio.get_running_loop().create_task(self._drain(link))

    async def _drain(self, link: str) -> None:
        try:
            while not self._closing and (env := self._latest.pop(link, None)) is not None:
                self.runs += 1
                self._ctx.timeout = self.timeout
                try:
                    await _run_transition(self.directory, env, self._ctx)
                except OSError as exc:  # the directory vanished mid-run, fd limits: not the daemon's end
                    log.warning("hooks: %s: %s", _printable(self.directory), exc.strerror or exc)
        finally:
            # no await between the loop's last pop and here: a transition()
            # in between is impossible, so none is left waiting without a task
            self._links.pop(link, None)

    async def close(self, grace: float = CLOSE_GRACE_S) -> None:
        """End all hooks: no new ones start, running ones get SIGTERM, then SIGKILL after grace."""
        self._closing = True
        self._latest.clear()
        tasks = list(self._links.values())
        for proc in list(self._ctx.procs):
            _kill(proc, signal.SIGTERM)
        if tasks:
            _done, pending = await asyncio.wait(tasks, timeout=grace)
            for task in pending:
                task.cancel()  # _spawn_and_wait's finally kills its process group
            await asyncio.gather(*tasks, return_exceptions=True)
