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

import errno
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import TypeVar

from .. import constants as c
from ..kernel import Kernel
from ..model import (
    Action,
    Desired,
    Firewall,
    FirewallLink,
    KernelObject,
    Nexthop,
    NexthopGroup,
    Op,
    OpResult,
    Owned,
    Route,
    Rule,
)
from ..router import nft, sysctls
from ..router.sysctls import SysctlChange

_GONE = (errno.ENOENT, errno.ESRCH, errno.ENODEV)
T = TypeVar("T", Rule, Route, Nexthop, NexthopGroup)


@dataclass
class Report:
    """What a reconcile did: the operations that took effect and those that did not."""

    done: list[OpResult] = field(default_factory=list)
    failed: list[OpResult] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    sysctls: list[SysctlChange] = field(default_factory=list)
    sysctl_errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    firewall_changed: bool = False  # wanhooks' nftables table was rewritten
    firewall_errors: list[str] = field(default_factory=list)  # nft refused: NAT/sticky not as planned

    @property
    def changed(self) -> bool:
        return bool(self.done or self.sysctls or self.firewall_changed)

    @property
    def ok(self) -> bool:
        return not (self.failed or self.conflicts or self.sysctl_errors or self.firewall_errors)

    def after(self, earlier: Report) -> Report:
        """This attempt's report with what an earlier attempt of the same round did first:
        its writes and notes stand; its failures are this attempt's to judge again."""
        return replace(
            self,
            done=[*earlier.done, *self.done],
            sysctls=[*earlier.sysctls, *self.sysctls],
            notes=list(dict.fromkeys([*earlier.notes, *self.notes])),
            firewall_changed=earlier.firewall_changed or self.firewall_changed,
        )


def _by_id(objs: Iterable[Nexthop | NexthopGroup]) -> dict[int, Nexthop | NexthopGroup]:
    return {o.id: o for o in objs}


def _group_compatible(a: NexthopGroup, b: NexthopGroup) -> bool:
    """Can b replace a in place?  Type and bucket count are fixed at creation."""
    return a.resilient == b.resilient and (not a.resilient or a.buckets == b.buckets)


def fit_to_kernel(desired: Desired, owned: Owned) -> tuple[Desired, list[str]]:
    """Desired, adjusted to what the kernel already holds.

    * A nexthop id in our range that another program holds is neither
      replaced nor put into a group (the group would route through someone
      else's gateway): dropped, with a conflict to report.
    * A resilient group keeps the bucket count it has while that is close
      enough to what the weights ask for: a new count means a rebuild, and
      a rebuild moves every flow.
    """
    foreign = owned.foreign_nexthop_ids
    taken = {n.id for n in desired.nexthops if n.id in foreign} if foreign else set()
    conflicts = (
        [_describe_conflict(n, None) for n in sorted(desired.nexthops) if n.id in taken] if taken else []
    )
    have = _by_id(owned.groups)
    groups = set()
    dropped_groups = set()
    for group in desired.groups:
        members = tuple(m for m in group.members if m[0] not in taken) if taken else group.members
        if not members:
            dropped_groups.add(group.id)
            continue
        if members != group.members:
            group = replace(group, members=members)
        current = have.get(group.id)
        if (
            isinstance(current, NexthopGroup)
            and current.resilient
            and group.resilient
            and group.buckets // c.RES_BUCKETS_KEEP_BELOW
            <= current.buckets
            <= group.buckets * c.RES_BUCKETS_KEEP_ABOVE
        ):
            group = replace(group, buckets=current.buckets)
        groups.add(group)
    return (
        replace(
            desired,
            # (as they were, when nothing is another program's: the usual case, and a copy of
            # thousands of objects each round otherwise)
            nexthops=frozenset(n for n in desired.nexthops if n.id not in taken)
            if taken
            else desired.nexthops,
            groups=frozenset(groups),
            routes=(
                frozenset(r for r in desired.routes if r.nhid not in dropped_groups)
                if dropped_groups
                else desired.routes
            ),
        ),
        conflicts,
    )


def upserts(desired: Desired, owned: Owned) -> list[Op]:
    """Adds and in-place replaces, dependencies first: nexthops, groups, routes, rules.

    Groups that cannot change in place are left to rebuilds(); routes using
    them are left alone here.
    """
    have_nh, have_grp, have_routes = owned.nexthops_by_id, owned.groups_by_id, owned.routes_by_key
    # each kind's operations in a stable order; only those are sorted, not all that is wanted
    # only what the kernel does not hold as it is can need an operation: a set difference
    # (objects that are one and the same object -- model.canonical -- compare at C speed)
    nexthop_ops: list[Op] = []
    for nh in desired.nexthops - owned.nexthops:
        current = have_nh.get(nh.id)
        if current is None:
            nexthop_ops.append(Op(Action.ADD, nh))
        elif current != nh:
            nexthop_ops.append(Op(Action.REPLACE, nh))
    rebuilding = {g.id for g in rebuilds(desired, owned)}
    group_ops: list[Op] = []
    for group in desired.groups - owned.groups:
        held = have_grp.get(group.id)
        if held is None:
            group_ops.append(Op(Action.ADD, group))
        elif group.id not in rebuilding and held != group:
            group_ops.append(Op(Action.REPLACE, group))
    route_ops: list[Op] = []
    for route in desired.routes - owned.routes:
        if route.nhid in rebuilding:
            continue
        now = have_routes.get(route.key)
        if now is None:
            route_ops.append(Op(Action.ADD, route))
        elif now != route:
            route_ops.append(Op(Action.REPLACE, route))
    rule_ops = [Op(Action.ADD, r) for r in desired.rules - owned.rules]
    return [op for ops in (nexthop_ops, group_ops, route_ops, rule_ops) for op in _in_order(ops)]


def _in_order(ops: list[Op]) -> list[Op]:
    return sorted(ops, key=lambda op: _sort_key(op.obj))


def rebuilds(desired: Desired, owned: Owned) -> list[NexthopGroup]:
    """Groups whose type or bucket count must change: rebuilt through the spare id."""
    have_grp = _by_id(owned.groups)
    out = []
    for group in sorted(desired.groups, key=_sort_key):
        current = have_grp.get(group.id)
        if isinstance(current, NexthopGroup) and not _group_compatible(current, group):
            out.append(group)
    return out


def rebuild_steps(group: NexthopGroup, desired: Desired, owned: Owned) -> list[Op]:
    """Move the group's routes to a spare id, rebuild the group, move them back.

    Applied one step at a time, stopping at the first failure: at every step
    the routes point at a group that exists.
    """
    spare = replace(group, id=c.group_id(group.family, spare=True))
    users = sorted((r for r in desired.routes if r.nhid == group.id), key=_sort_key)
    have_grp = _by_id(owned.groups)
    old = have_grp[group.id]
    return [
        Op(Action.REPLACE if spare.id in have_grp else Action.ADD, spare),
        *(
            Op(
                Action.REPLACE if r.key in {o.key for o in owned.routes} else Action.ADD,
                replace(r, nhid=spare.id),
            )
            for r in users
        ),
        Op(Action.DELETE, old),
        Op(Action.ADD, group),
        *(Op(Action.REPLACE, r) for r in users),
        Op(Action.DELETE, spare),
    ]


def deletions(desired: Desired, owned: Owned) -> list[Op]:
    """What we own and no longer want, dependents first: rules, routes, groups, nexthops.

    Computed from a fresh dump taken after the upserts, and never removing
    what something still uses: a group a route points at, a nexthop a group
    or route holds, or the balance route of a family that still wants one
    (its replace failed: the old one is better than none).
    """
    extra = (
        owned.rules - desired.rules,
        owned.routes - desired.routes,
        owned.nexthops - desired.nexthops,
        owned.groups - desired.groups,
    )
    if not any(extra):
        return []  # all that is owned is wanted as it is (the usual round)
    wanted_routes = {r.key for r in desired.routes}
    wanted_groups = {g.id for g in desired.groups}
    wanted_nh = {n.id for n in desired.nexthops}
    keep_balance = {r.key for r in desired.routes if r.table == c.TABLE_BALANCE}
    routes_left = [r for r in owned.routes if r.key in wanted_routes or r.key in keep_balance]
    route_del = [r for r in owned.routes if r.key not in wanted_routes and r.key not in keep_balance]
    used_groups = {r.nhid for r in routes_left}
    group_del = [g for g in owned.groups if g.id not in wanted_groups and g.id not in used_groups]
    groups_left = [g for g in owned.groups if g not in group_del]
    used_nh = {i for g in groups_left for i, _w in g.members} | {r.nhid for r in routes_left}
    nh_del = [n for n in owned.nexthops if n.id not in wanted_nh and n.id not in used_nh]
    ordered: list[KernelObject] = [
        *sorted(owned.rules - desired.rules, key=_sort_key),
        *sorted(route_del, key=_sort_key),
        *sorted(group_del, key=_sort_key),
        *sorted(nh_del, key=_sort_key),
    ]
    return [Op(Action.DELETE, obj) for obj in ordered]


def diff(desired: Desired, owned: Owned) -> list[Op]:
    """Everything a reconcile would do from this state, in order (for plan, status, logs).

    The real apply re-reads the kernel between the phases; this is the
    answer when every step succeeds.
    """
    desired, _conflicts = fit_to_kernel(desired, owned)
    ops = upserts(desired, owned)
    for group in rebuilds(desired, owned):
        ops.extend(rebuild_steps(group, desired, owned))
    rebuilt = {g.id for g in rebuilds(desired, owned)}
    after = Owned(
        rules=owned.rules | desired.rules,
        routes=frozenset(
            {
                r.key: r for r in [*owned.routes, *(r for r in desired.routes if r.nhid not in rebuilt)]
            }.values()
        ),
        nexthops=owned.nexthops | desired.nexthops,
        groups=frozenset({g.id: g for g in [*owned.groups, *desired.groups]}.values()),
    )
    return ops + deletions(desired, after)


def _sort_key(obj: KernelObject) -> tuple[str, int, int, str]:
    if isinstance(obj, Rule):
        return ("rule", obj.family, obj.priority, f"{obj.table} {obj.src}")
    if isinstance(obj, Route):
        return ("route", obj.family, obj.table, str(obj.dst))
    return ("nexthop", obj.family, obj.id, "")


# --------------------------------------------------------------------------
# Applying
# --------------------------------------------------------------------------


def _describe_conflict(obj: KernelObject, holder: int | None) -> str:
    if isinstance(obj, Rule):
        what = f"rule priority {obj.priority} -> table {obj.table}"
    elif isinstance(obj, Route):
        what = f"route {obj.dst} in table {obj.table}"
    else:
        what = f"nexthop id {obj.id}"
    who = f" (protocol {holder})" if holder is not None else ""
    return f"{what} is held by another program{who}: left alone"


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


def _run_rebuild(kernel: Kernel, steps: list[Op], report: Report, conflicted: set[object]) -> bool:
    """One step at a time; stop at the first that fails.  True if it all went through."""
    for step in steps:
        results = kernel.execute([step])
        failed_before = len(report.failed) + len(report.conflicts)
        _settle(kernel, results, report, conflicted)
        if not results[0].ok and len(report.failed) + len(report.conflicts) > failed_before:
            return False
    return True


def _after(owned: Owned, results: Sequence[OpResult]) -> Owned:
    """owned with the adds and replaces that succeeded applied."""
    done = [r.op.obj for r in results if r.ok and r.op.action is not Action.DELETE]
    if not done:
        return owned

    def merged(current: frozenset[T], kind: type[T]) -> frozenset[T]:
        new = {identity(o): o for o in done if isinstance(o, kind)}
        if not new:
            return current
        return frozenset([o for o in current if identity(o) not in new] + list(new.values()))

    return replace(
        owned,
        rules=merged(owned.rules, Rule),
        routes=merged(owned.routes, Route),
        nexthops=merged(owned.nexthops, Nexthop),
        groups=merged(owned.groups, NexthopGroup),
    )


def apply_desired(desired: Desired, kernel: Kernel, *, passes: int = 2) -> Report:
    """Reconcile routing objects (not sysctls) and report.

    Each pass: upserts in one batch; group rebuilds step by step; then, from
    a fresh dump, the deletions of whatever nothing uses any more.
    """
    report = Report()
    conflicted: set[object] = set()
    for _attempt in range(passes):
        report.failed.clear()  # only the last pass's failures stand
        owned = kernel.dump_owned()
        wanted, conflicts = fit_to_kernel(desired, owned)
        for text in conflicts:
            if text not in report.conflicts:
                report.conflicts.append(text)
        ops = [op for op in upserts(wanted, owned) if identity(op.obj) not in conflicted]
        results = kernel.execute(ops) if ops else []
        retry = _settle(kernel, results, report, conflicted)
        rebuilt = False
        for group in rebuilds(wanted, owned):
            spare = c.group_id(group.family, spare=True)
            if spare in owned.foreign_nexthop_ids:
                report.conflicts.append(
                    f"nexthop id {spare} (spare for rebuilding group {group.id}) is held by another "
                    "program: the group keeps its old type/size"
                )
                continue
            retry |= not _run_rebuild(kernel, rebuild_steps(group, wanted, owned), report, conflicted)
            rebuilt = True
        # Deletions look at the kernel as it is now: after a rebuild, a fresh dump; else
        # the snapshot with the upserts that took effect (saves a dump on every change).
        owned = kernel.dump_owned() if rebuilt else _after(owned, results)
        doomed = deletions(wanted, owned)
        if doomed:
            retry |= _settle(kernel, kernel.execute(doomed), report, conflicted)
        if not retry:
            break
    return report


def reconcile(desired: Desired, kernel: Kernel, run_dir: str) -> Report:
    """Sysctls first (the hash policy must be right before traffic is balanced), then the
    firewall with every link's NAT that is or will be routed, then routing, then the
    firewall exactly as planned: a link's NAT is in place before its routes and stays
    until they are gone, so no flow leaves un-NATed."""
    knobs = sysctls.apply(desired, kernel, run_dir)
    before = _firewall_phase(desired.firewall, kernel, keep_leaving_nat=True)
    report = apply_desired(desired, kernel)
    after = _firewall_phase(desired.firewall, kernel, keep_leaving_nat=False)
    report.sysctls = knobs.changes
    report.sysctl_errors = knobs.errors
    report.notes.extend(knobs.notes)
    report.firewall_errors = list(dict.fromkeys(before.errors + after.errors))  # once, if both failed
    report.firewall_changed = before.changed or after.changed
    return report


@dataclass
class _FirewallStep:
    changed: bool = False
    errors: list[str] = field(default_factory=list)


def _firewall_phase(wanted: Firewall, kernel: Kernel, *, keep_leaving_nat: bool) -> _FirewallStep:
    """Bring wanhooks' nftables table to `wanted` (plus, before routing, the NAT of links
    leaving the plan, until their routes are gone)."""
    try:
        now = kernel.read_firewall()
        if keep_leaving_nat:
            planned = {link.name for link in wanted.links}
            leaving = sorted((now.nat | now.nat66) - planned)
            if leaving:
                # appended, not sorted in: the order is part of the digest, and a
                # re-sorted table would be rewritten twice on every apply
                kept = tuple(FirewallLink(name, 0, name in now.nat, name in now.nat66) for name in leaving)
                wanted = replace(wanted, links=wanted.links + kept)
        text = nft.render(wanted)
        if nft.digest_of(text) == now.digest:
            return _FirewallStep()
        kernel.write_firewall(text)
        return _FirewallStep(changed=True)
    except (nft.NftError, OSError, ValueError) as exc:
        return _FirewallStep(errors=[f"nftables: {exc}: NAT and sticky connections are not as planned"])


def cleanup(kernel: Kernel, run_dir: str) -> Report:
    """Remove everything wanhooks owns and restore the sysctls it changed.

    Needs no config and no running state: ownership is the protocol id.
    """
    report = apply_desired(Desired(), kernel)
    removed = _firewall_phase(Firewall(), kernel, keep_leaving_nat=False)
    report.firewall_errors = removed.errors
    report.firewall_changed = removed.changed
    knobs = sysctls.restore(kernel, run_dir)
    report.sysctls = knobs.changes
    report.sysctl_errors = knobs.errors
    report.notes.extend(knobs.notes)
    return report
