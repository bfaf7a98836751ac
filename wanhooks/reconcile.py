"""Make the kernel hold what plan() decided, touching only what wanhooks owns.

Theory of operation
-------------------
`diff(desired, owned)` is pure: it compares Desired with a fresh dump of the
objects carrying wanhooks' protocol id and returns an ordered list of
operations.  The order is the safety property:

    nexthops add/replace -> groups add/replace -> routes add/replace
    -> rules add -> rules delete -> routes delete -> groups delete
    -> nexthops delete

Everything new exists before anything old goes (add before delete), and the
balance route is always *replaced* in place, never deleted and re-added, so
there is no moment without a default while one is wanted.  A group whose
type or bucket count must change cannot be replaced in place: its route
moves to a spare group id first, the group is rebuilt, the route moves back.

`reconcile(desired, kernel)` applies that list in one batch.  "Exists" on an
add means something holds the identity: if it is ours (a race with another
wanhooks, or a dump that missed it) the add becomes a replace; if not, it is
a conflict, reported and left alone -- wanhooks never modifies what it does
not own.  "Not found" on a delete is success.  If anything failed, one more
pass from a fresh dump lets dependent operations (a group whose member
failed) settle.  It returns what it actually did.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from . import constants as c
from .kernel import Kernel
from .model import (
    Action,
    Desired,
    KernelObject,
    Nexthop,
    NexthopGroup,
    Op,
    OpResult,
    Owned,
    Route,
    Rule,
)

_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV)


@dataclass(frozen=True)
class SysctlChange:
    path: str
    old: str
    new: str


@dataclass
class Report:
    """What a reconcile did: the operations that took effect and those that did not."""

    done: list[OpResult] = field(default_factory=list)
    failed: list[OpResult] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    sysctls: list[SysctlChange] = field(default_factory=list)
    sysctl_errors: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.done or self.sysctls)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.conflicts or self.sysctl_errors)


def _by_id(objs: Iterable[Nexthop | NexthopGroup]) -> dict[int, Nexthop | NexthopGroup]:
    return {o.id: o for o in objs}


def _group_compatible(a: NexthopGroup, b: NexthopGroup) -> bool:
    """Can b replace a in place?  Type and bucket count are fixed at creation."""
    return a.resilient == b.resilient and (not a.resilient or a.buckets == b.buckets)


def diff(desired: Desired, owned: Owned) -> list[Op]:
    have_nh = _by_id(owned.nexthops)
    have_grp = _by_id(owned.groups)
    have_routes = {r.key: r for r in owned.routes}

    def upsert(objs: Iterable[KernelObject], have: dict[object, KernelObject], key_of: object) -> list[Op]:
        ops: list[Op] = []
        for obj in objs:
            key = key_of(obj)  # type: ignore[operator]
            current = have.get(key)
            if current is None:
                ops.append(Op(Action.ADD, obj))
            elif current != obj:
                ops.append(Op(Action.REPLACE, obj))
        return sorted(ops, key=lambda op: _sort_key(op.obj))  # a stable order for logs

    nh_ops = upsert(desired.nexthops, have_nh, lambda o: o.id)  # type: ignore[arg-type]

    # Groups, with the spare-id dance for the ones that cannot change in place.
    group_ops: list[Op] = []
    rebuild: list[NexthopGroup] = []
    for group in sorted(desired.groups, key=_sort_key):
        current = have_grp.get(group.id)
        if current is None:
            group_ops.append(Op(Action.ADD, group))
        elif not isinstance(current, NexthopGroup) or not _group_compatible(current, group):
            rebuild.append(group)
        elif current != group:
            group_ops.append(Op(Action.REPLACE, group))

    route_ops: list[Op] = []
    after_routes: list[Op] = []
    for group in rebuild:
        spare = replace(group, id=c.group_id(group.family, spare=True))
        users = [r for r in desired.routes if r.nhid == group.id]
        spare_action = Action.REPLACE if spare.id in have_grp else Action.ADD
        group_ops.append(Op(spare_action, spare))
        route_ops.extend(Op(Action.REPLACE, replace(r, nhid=spare.id)) for r in users)
        route_ops.append(Op(Action.DELETE, have_grp[group.id]))
        route_ops.append(Op(Action.ADD, group))
        after_routes.extend(Op(Action.REPLACE, r) for r in users)
        after_routes.append(Op(Action.DELETE, spare))
    rebuilt_users = {r.key for g in rebuild for r in desired.routes if r.nhid == g.id}

    route_ops.extend(
        op
        for op in upsert(desired.routes, have_routes, lambda r: r.key)  # type: ignore[arg-type]
        if not (isinstance(op.obj, Route) and op.obj.key in rebuilt_users)
    )
    route_ops.extend(after_routes)

    rule_add = [Op(Action.ADD, r) for r in sorted(desired.rules - owned.rules, key=_sort_key)]
    rule_del = [Op(Action.DELETE, r) for r in sorted(owned.rules - desired.rules, key=_sort_key)]
    wanted_routes = {r.key for r in desired.routes}
    route_del = [
        Op(Action.DELETE, r)
        for r in sorted((r for r in owned.routes if r.key not in wanted_routes), key=_sort_key)
    ]
    keep_groups = {g.id for g in desired.groups} | {c.group_id(g.family, spare=True) for g in rebuild}
    group_del = [Op(Action.DELETE, g) for g in sorted(owned.groups, key=_sort_key) if g.id not in keep_groups]
    wanted_nh = {n.id for n in desired.nexthops}
    nh_del = [
        Op(Action.DELETE, n)
        for n in sorted((n for n in owned.nexthops if n.id not in wanted_nh), key=_sort_key)
    ]
    return nh_ops + group_ops + route_ops + rule_add + rule_del + route_del + group_del + nh_del


def _sort_key(obj: KernelObject) -> tuple[str, int, int, str]:
    if isinstance(obj, Rule):
        return ("rule", obj.family, obj.priority, f"{obj.table} {obj.src}")
    if isinstance(obj, Route):
        return ("route", obj.family, obj.table, str(obj.dst))
    return ("nexthop", obj.family, obj.id, "")


# --------------------------------------------------------------------------
# Applying
# --------------------------------------------------------------------------


def _describe_conflict(obj: KernelObject, holder: int) -> str:
    if isinstance(obj, Rule):
        what = f"rule priority {obj.priority} -> table {obj.table}"
    elif isinstance(obj, Route):
        what = f"route {obj.dst} in table {obj.table}"
    else:
        what = f"nexthop id {obj.id}"
    return f"{what} is held by another program (protocol {holder}): left alone"


def _settle(kernel: Kernel, results: Sequence[OpResult], report: Report, conflicted: set[object]) -> bool:
    """Sort results into the report; True if anything is worth another pass."""
    retry = False
    for result in results:
        op = result.op
        if result.ok:
            report.done.append(result)
        elif op.action is Action.DELETE and result.error in _GONE:
            continue  # already gone: the kernel did it for us
        elif op.action is Action.ADD and result.error == errno.EEXIST:
            holder = kernel.holder(op.obj)
            if holder == c.RTPROT_WANHOOKS or holder is None:
                retry = True  # ours after all (or gone meanwhile): the next pass replaces it
            else:
                conflicted.add(identity(op.obj))
                report.conflicts.append(_describe_conflict(op.obj, holder))
        else:
            report.failed.append(result)
            retry = True
    return retry


def identity(obj: KernelObject) -> object:
    """What names an object in the kernel: two objects with one identity cannot coexist."""
    if isinstance(obj, Route):
        return obj.key
    if isinstance(obj, (Nexthop, NexthopGroup)):
        return ("nexthop", obj.id)
    return obj


def apply_desired(desired: Desired, kernel: Kernel, *, passes: int = 2) -> Report:
    """Reconcile routing objects (not sysctls) and report."""
    report = Report()
    conflicted: set[object] = set()
    for _attempt in range(passes):
        ops = [op for op in diff(desired, kernel.dump_owned()) if identity(op.obj) not in conflicted]
        if not ops:
            break
        report.failed.clear()  # only the last pass's failures stand
        retry = _settle(kernel, kernel.execute(ops), report, conflicted)
        if not retry:
            break
    return report


# --------------------------------------------------------------------------
# Sysctls: remember what was there before, so cleanup can put it back
# --------------------------------------------------------------------------


def _record_path(run_dir: str) -> str:
    return os.path.join(run_dir, c.SYSCTL_RECORD)


def load_sysctl_record(run_dir: str) -> dict[str, str]:
    try:
        with open(_record_path(run_dir), encoding="utf-8") as f:
            data = json.load(f)
    except (FileNotFoundError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _save_sysctl_record(run_dir: str, record: dict[str, str]) -> None:
    os.makedirs(run_dir, mode=0o700, exist_ok=True)
    tmp = _record_path(run_dir) + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(record, f, indent=1, sort_keys=True)
    os.replace(tmp, _record_path(run_dir))


def apply_sysctls(desired: Desired, kernel: Kernel, run_dir: str, report: Report) -> None:
    record = load_sysctl_record(run_dir)
    pending: list[tuple[str, str, str]] = []
    for sysctl in sorted(desired.sysctls):
        current = kernel.read_sysctl(sysctl.path)
        if current is None or current == sysctl.value:
            continue  # no such knob on this kernel/device, or already right
        pending.append((sysctl.path, current, sysctl.value))
    if not pending:
        return
    # Record first: a crash after the write must still let cleanup restore.
    new_record = dict(record)
    for path, old, _new in pending:
        new_record.setdefault(path, old)
    if new_record != record:
        _save_sysctl_record(run_dir, new_record)
    for path, old, new in pending:
        try:
            kernel.write_sysctl(path, new)
            report.sysctls.append(SysctlChange(path, old, new))
        except OSError as exc:
            report.sysctl_errors.append(f"sysctl {path}={new}: {exc.strerror or exc}")


def reconcile(desired: Desired, kernel: Kernel, run_dir: str) -> Report:
    """Sysctls first (the hash policy must be right before traffic is balanced), then routing."""
    report = Report()
    apply_sysctls(desired, kernel, run_dir, report)
    routing = apply_desired(desired, kernel)
    report.done.extend(routing.done)
    report.failed.extend(routing.failed)
    report.conflicts.extend(routing.conflicts)
    return report


def cleanup(kernel: Kernel, run_dir: str) -> Report:
    """Remove everything wanhooks owns and restore the sysctls it changed.

    Needs no config and no running state: ownership is the protocol id.
    """
    report = apply_desired(Desired(), kernel)
    record = load_sysctl_record(run_dir)
    for path, old in sorted(record.items()):
        current = kernel.read_sysctl(path)
        if current is None or current == old:
            continue  # device gone, or already as it was
        try:
            kernel.write_sysctl(path, old)
            report.sysctls.append(SysctlChange(path, current, old))
        except OSError as exc:
            report.sysctl_errors.append(f"sysctl {path}={old}: {exc.strerror or exc}")
    if not report.sysctl_errors:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_record_path(run_dir))
    return report
