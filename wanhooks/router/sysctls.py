"""The kernel knobs wanhooks sets, and putting them back.

Before changing a knob wanhooks records, under the run directory, the value
it found and the value it wrote.  `cleanup` restores a knob only while it
still holds what wanhooks wrote: if an admin changed it since, theirs
stands.  A record that cannot be read is moved aside, never silently
replaced, so the original values are not lost.

The record is input, not trust: anyone who can write it (or a bug, or an
older version) decides what `cleanup` writes, as root, under /proc/sys.  So
only the knobs named here -- the ones plan/planner.py sets, built by `family_knob`
and `link_knob` -- are ever read from it or written back, each with a value
that looks like one of theirs; any other entry (`../../../tmp/x`,
`kernel/modprobe`) is dropped and reported, never written.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import os
import re
import stat
import time
from dataclasses import dataclass, field
from typing import Final

from .. import constants as c
from ..kernel import Kernel
from ..model import Desired
from ..plan.names import ifname_problem
from ..service.lock import write_private

# The knobs plan/planner.py sets, and the only ones the record may name.  One place
# for both, so the planner cannot start setting a knob that cleanup would
# then refuse to put back (tests/test_sysctls.py checks every knob plan()
# builds against knob_problem).
PROTOS: Final = ("ipv4", "ipv6")
# net/<proto>/<knob>: the multipath hash (the balance mode)
FAMILY_KNOBS: Final = frozenset({"fib_multipath_hash_policy", "fib_multipath_hash_fields"})
# net/<proto>/conf/<ifname>/<knob>: on each managed link
LINK_KNOBS: Final = frozenset(
    {("ipv4", "rp_filter"), ("ipv4", "ignore_routes_with_linkdown"), ("ipv6", "ignore_routes_with_linkdown")}
)
# conf/all and conf/default are not links: writing them changes every
# interface, or every new one.  The kernel cannot have a device with either
# name (its conf directory would collide), so plan() never names them.
_NOT_LINKS: Final = frozenset({"all", "default"})
# These knobs hold small unsigned numbers; a record holding anything else
# was not written by wanhooks.
_VALUE: Final = re.compile(r"[0-9]{1,10}|0x[0-9a-fA-F]{1,8}")
# ~100 bytes a knob: room for 10,000 of them.  A larger record was not
# written by wanhooks, and is not read into memory.
RECORD_MAX: Final = 1 << 20
_KEY_SHOWN: Final = 80  # characters of a hostile key worth quoting


def family_knob(proto: str, knob: str) -> str:
    """The path of a per-family knob wanhooks sets (ValueError for any other)."""
    path = f"net/{proto}/{knob}"
    problem = knob_problem(path)
    if problem is not None:
        raise ValueError(problem)
    return path


def link_knob(proto: str, ifname: str, knob: str) -> str:
    """The path of a per-link knob wanhooks sets (ValueError for any other, or a bad name)."""
    path = f"net/{proto}/conf/{ifname}/{knob}"
    problem = knob_problem(path)
    if problem is not None:
        raise ValueError(problem)
    return path


@functools.lru_cache(maxsize=8192)  # every round asks of every link's knobs
def knob_problem(path: str) -> str | None:
    """Why path is not a knob wanhooks sets; None when it is.

    An exact match on the path's parts, never a prefix or a normalised path:
    `net/ipv4/conf/../../../x` has five parts too, and its link name ('..')
    is refused like any name with '/' in it.
    """
    parts = path.split("/")
    if len(parts) == 3 and parts[0] == "net" and parts[1] in PROTOS and parts[2] in FAMILY_KNOBS:
        return None
    if len(parts) == 5 and parts[0] == "net" and parts[2] == "conf" and (parts[1], parts[4]) in LINK_KNOBS:
        name = parts[3]
        if name in _NOT_LINKS:
            return f"conf/{name} is not a link"
        problem = ifname_problem(name)
        return None if problem is None else problem
    return "not a knob wanhooks sets"


def _shown_key(key: str) -> str:
    return repr(key[:_KEY_SHOWN]) + ("..." if len(key) > _KEY_SHOWN else "")


@dataclass(frozen=True)
class SysctlChange:
    path: str
    old: str
    new: str


@dataclass
class SysctlReport:
    changes: list[SysctlChange] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass
class Saved:
    original: str  # what was there before wanhooks
    written: str  # what wanhooks wrote


def _path(run_dir: str) -> str:
    return os.path.join(run_dir, c.SYSCTL_RECORD)


class _UnreadableError(Exception):
    """The record is there but is not a file wanhooks wrote."""


def _read_record(path: str) -> bytes:
    """The record's bytes, or FileNotFoundError / _UnreadableError.

    O_NOFOLLOW: a symlink planted at the record's name is refused, not
    followed to some other file; O_NONBLOCK: a FIFO there cannot hang
    cleanup in open().  Checked on the descriptor, so what is checked is what
    is read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise FileNotFoundError(exc.errno, exc.strerror, path) from None
        if exc.errno == errno.ELOOP:
            raise _UnreadableError("it is a symbolic link") from None
        raise _UnreadableError(exc.strerror or str(exc)) from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise _UnreadableError("it is not a regular file")
        if info.st_size > RECORD_MAX:
            raise _UnreadableError(f"it is {info.st_size} bytes: wanhooks writes at most {RECORD_MAX}")
        chunks: list[bytes] = []
        size = 0
        while chunk := os.read(fd, 65536):
            size += len(chunk)
            if size > RECORD_MAX:  # it grew after fstat
                raise _UnreadableError(f"it is more than {RECORD_MAX} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def load(run_dir: str, report: SysctlReport) -> dict[str, Saved]:
    """The record: only knobs wanhooks sets with values they can hold; the rest reported in errors."""
    path = _path(run_dir)
    try:
        data = json.loads(_read_record(path))
        entries = {str(k): (v["original"], v["written"]) for k, v in data.items()}
    except FileNotFoundError:
        return {}
    except (_UnreadableError, ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        aside = f"{path}.corrupt-{int(time.time())}"
        with contextlib.suppress(OSError):
            os.replace(path, aside)  # renames a symlink itself, never its target
        why = f" ({exc})" if isinstance(exc, _UnreadableError) else ""
        report.errors.append(
            f"{path} was unreadable{why}: moved to {aside}; the values it held are not restored"
        )
        return {}
    record: dict[str, Saved] = {}
    for key, (original, written) in sorted(entries.items()):
        problem = knob_problem(key)
        if problem is None and not (_is_value(original) and _is_value(written)):
            problem = "its values are not numbers such a knob holds"
        if problem is not None:
            report.errors.append(f"{path}: dropped {_shown_key(key)}, never written: {problem}")
            continue
        record[key] = Saved(str(original), str(written))
    return record


def _is_value(value: object) -> bool:
    return isinstance(value, str) and _VALUE.fullmatch(value) is not None


def save(run_dir: str, record: dict[str, Saved]) -> None:
    data = {k: {"original": v.original, "written": v.written} for k, v in sorted(record.items())}
    write_private(_path(run_dir), json.dumps(data, indent=1))


def apply(desired: Desired, kernel: Kernel, run_dir: str) -> SysctlReport:
    report = SysctlReport()
    pending: list[tuple[str, str, str]] = []
    for sysctl in desired.sysctls:  # (what is written is sorted below: not every knob each round)
        # plan() builds only whitelisted knobs; refusing here too means a knob
        # added to plan/planner.py alone fails loudly at once, not at cleanup
        problem = knob_problem(sysctl.path)
        if problem is not None:
            report.errors.append(f"sysctl {_shown_key(sysctl.path)} not set: {problem}")
            continue
        current = kernel.read_sysctl(sysctl.path)
        if current is None or current == sysctl.value:
            continue  # no such knob on this kernel/device, or already right
        pending.append((sysctl.path, current, sysctl.value))
    report.errors.sort()
    if not pending:
        return report
    pending.sort()
    # Record first: a crash after the write must still let cleanup restore.
    record = load(run_dir, report)
    for path, old, new in pending:
        saved = record.get(path)
        record[path] = Saved(saved.original if saved else old, new)
    save(run_dir, record)
    for path, old, new in pending:
        try:
            kernel.write_sysctl(path, new)
            report.changes.append(SysctlChange(path, old, new))
        except OSError as exc:
            report.errors.append(f"sysctl {path}={new}: {exc.strerror or exc}")
    return report


def restore(kernel: Kernel, run_dir: str) -> SysctlReport:
    """Put back each recorded knob that still holds wanhooks' value; only knobs wanhooks sets (load)."""
    report = SysctlReport()
    for path, saved in sorted(load(run_dir, report).items()):
        current = kernel.read_sysctl(path)
        if current is None or current == saved.original:
            continue  # the device is gone, or it is as it was
        if current != saved.written:
            report.notes.append(
                f"sysctl {path.replace('/', '.')} is {current}, not the {saved.written} wanhooks set: "
                f"left as it is (the original was {saved.original})"
            )
            continue
        try:
            kernel.write_sysctl(path, saved.original)
            report.changes.append(SysctlChange(path, current, saved.original))
        except OSError as exc:
            report.errors.append(f"sysctl {path}={saved.original}: {exc.strerror or exc}")
    if not report.errors:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_path(run_dir))
    return report
