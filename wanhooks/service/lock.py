"""The run directory: whose it is, and the locks and files in it.

The run dir (/run/wanhooks) holds the control socket, the saved sysctls, the
admin's overrides and two locks.  Root acts on what is in it, so it must be
root's own: a directory another user owns or can write could hold a symlink
where root will create a file, or a record that makes root write elsewhere.
`trusted_run_dir` refuses any other, and every file in it is opened without
following links.  Others may enter it (0755: the control socket serves them
`status`), never write to it; its files are root's alone (0600).

Two locks, both flocks (released by the kernel when the holder dies, however
it dies -- what a pid file or a 2 s ping cannot promise):
  lock         taken by every round (apply, cleanup, the daemon): they take turns;
  daemon.lock  held by a running daemon for its whole life: a hook or an
               `apply` that finds it held knows a daemon exists, even one too
               busy to answer, and never runs a round of its own beside it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from collections.abc import Iterator

LOCK_FILE = "lock"
DAEMON_LOCK_FILE = "daemon.lock"
_OPEN_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW


class RunDirError(Exception):
    """The run directory is not one root can trust."""


CONTROL_SOCKET = "control"  # the daemon's control socket, in the run directory (control.py)
SUN_PATH_MAX = 107  # bytes of a Unix socket's path: sockaddr_un.sun_path is 108 with its NUL


def trusted_run_dir(run_dir: str) -> None:
    """Create run_dir (0755) if missing; refuse it unless it is a real directory, this
    user's (root's), and writable by no one else (group and others may only enter it)."""
    socket = os.fsencode(os.path.join(run_dir, CONTROL_SOCKET))
    if len(socket) > SUN_PATH_MAX:
        raise RunDirError(
            f"run directory {run_dir} is too long a path for its control socket ({len(socket)} bytes "
            f"with /{CONTROL_SOCKET}; a Unix socket's path has at most {SUN_PATH_MAX}): choose a shorter one"
        )
    try:
        os.makedirs(os.path.dirname(run_dir) or "/", mode=0o755, exist_ok=True)
        os.mkdir(run_dir, 0o755)
    except FileExistsError:
        pass
    except OSError as exc:
        raise RunDirError(f"run directory {run_dir}: cannot create it: {exc.strerror or exc}") from None
    try:
        info = os.lstat(run_dir)
    except OSError as exc:
        raise RunDirError(f"run directory {run_dir}: {exc.strerror or exc}") from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise RunDirError(f"run directory {run_dir} is not a directory (a symlink?): refused")
    if info.st_uid != os.geteuid():
        raise RunDirError(
            f"run directory {run_dir} belongs to uid {info.st_uid}, not {os.geteuid()}: refused "
            "(remove it, or choose another with --run-dir)"
        )
    if info.st_mode & 0o022:
        raise RunDirError(
            f"run directory {run_dir} has mode {stat.S_IMODE(info.st_mode):04o}: others may write to it; "
            f"refused (chmod 755 {run_dir})"
        )


def _open_in(run_dir: str, name: str, flags: int) -> int:
    trusted_run_dir(run_dir)
    return os.open(os.path.join(run_dir, name), flags | _OPEN_FLAGS, 0o600)


@contextlib.contextmanager
def run_lock(run_dir: str) -> Iterator[None]:
    """Hold an exclusive flock on <run_dir>/lock; released when the process dies, too."""
    fd = _open_in(run_dir, LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def hold_daemon_lock(run_dir: str) -> int | None:
    """The daemon's lifelong lock: its descriptor (keep it open), or None when another
    daemon holds it."""
    fd = _open_in(run_dir, DAEMON_LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())  # for people; the lock is what counts
    return fd


def daemon_present(run_dir: str) -> bool:
    """Whether a daemon holds its lock on run_dir now (answering or not)."""
    try:
        fd = os.open(os.path.join(run_dir, DAEMON_LOCK_FILE), os.O_RDONLY | _OPEN_FLAGS)
    except OSError:
        # none (ENOENT); not root (EACCES): cannot know, and cannot run a round either; a
        # link (ELOOP): not a daemon's -- the round that follows refuses that run dir
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def daemon_pid(run_dir: str) -> int | None:
    """The pid a running daemon wrote in its lock file (root may read it), or None."""
    try:
        fd = os.open(os.path.join(run_dir, DAEMON_LOCK_FILE), os.O_RDONLY | _OPEN_FLAGS)
    except OSError:
        return None
    try:
        text = os.read(fd, 32).decode("ascii", "replace").strip()
    finally:
        os.close(fd)
    return int(text) if text.isdigit() and len(text) < 10 else None


def write_private(path: str, text: str) -> None:
    """Replace a run-dir file atomically, readable by root alone (0600, whatever the umask)."""
    directory = os.path.dirname(path)
    trusted_run_dir(directory)
    tmp = path + ".tmp"
    # O_NOFOLLOW: a symlink planted at the .tmp name is refused, not followed
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _OPEN_FLAGS, 0o600)
    try:
        os.fchmod(fd, 0o600)  # a .tmp left by an older version may have other bits
        data = memoryview(text.encode())
        while data:
            data = data[os.write(fd, data) :]
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(dir_fd)  # the rename itself survives a power cut
    finally:
        os.close(dir_fd)
