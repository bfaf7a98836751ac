"""The kernel knobs wanhooks sets, and putting them back.

Before changing a knob wanhooks records, under the run directory, the value
it found and the value it wrote.  `cleanup` restores a knob only while it
still holds what wanhooks wrote: if an admin changed it since, theirs
stands.  A record that cannot be read is moved aside, never silently
replaced, so the original values are not lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from dataclasses import dataclass, field

from . import constants as c
from .kernel import Kernel
from .lock import write_private
from .model import Desired


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


def load(run_dir: str, report: SysctlReport) -> dict[str, Saved]:
    path = _path(run_dir)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        return {str(k): Saved(str(v["original"]), str(v["written"])) for k, v in data.items()}
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError, KeyError, AttributeError):
        aside = f"{path}.corrupt-{int(time.time())}"
        with contextlib.suppress(OSError):
            os.replace(path, aside)
        report.errors.append(f"{path} was unreadable: moved to {aside}; the values it held are not restored")
        return {}


def save(run_dir: str, record: dict[str, Saved]) -> None:
    data = {k: {"original": v.original, "written": v.written} for k, v in sorted(record.items())}
    write_private(_path(run_dir), json.dumps(data, indent=1))


def apply(desired: Desired, kernel: Kernel, run_dir: str) -> SysctlReport:
    report = SysctlReport()
    pending: list[tuple[str, str, str]] = []
    for sysctl in sorted(desired.sysctls):
        current = kernel.read_sysctl(sysctl.path)
        if current is None or current == sysctl.value:
            continue  # no such knob on this kernel/device, or already right
        pending.append((sysctl.path, current, sysctl.value))
    if not pending:
        return report
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
