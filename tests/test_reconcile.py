"""The reconciler against the fake kernel: ordering, ownership, convergence (no root)."""

from __future__ import annotations

import ipaddress
import random
from dataclasses import replace
from pathlib import Path

from fakes import lab_config, lab_kernel, wan

from wanhooks import constants as c
from wanhooks.kernel.fake import FakeKernel
from wanhooks.model import Action, GroupKind, Nexthop, Route, Rule
from wanhooks.plan.planner import plan
from wanhooks.reconcile.diff import Report, cleanup, diff, reconcile


def converge(kernel: FakeKernel, cfg, run_dir: Path):  # type: ignore[no-untyped-def]
    desired = plan(cfg, kernel.observe())
    report = reconcile(desired, kernel, str(run_dir))
    return desired, report


def balance_route(kernel: FakeKernel, family: int = 4) -> Route | None:
    dst = ipaddress.ip_network("0.0.0.0/0" if family == 4 else "::/0")
    metric = c.METRIC_V4 if family == 4 else c.METRIC_V6
    found = kernel.routes.get(Route(family=family, table=c.TABLE_BALANCE, dst=dst, metric=metric).key)
    return None if found is None else found[0]


def test_first_apply_converges_and_second_is_a_no_op(tmp_path: Path) -> None:
    kernel = lab_kernel()
    cfg = lab_config()
    desired, report = converge(kernel, cfg, tmp_path)
    assert report.ok and report.changed
    owned = kernel.dump_owned()
    assert owned.rules == desired.rules and owned.routes == desired.routes
    assert owned.nexthops == desired.nexthops and owned.groups == desired.groups
    _, again = converge(kernel, cfg, tmp_path)
    assert not again.changed and again.ok


def test_adds_come_before_deletes_and_the_balance_route_is_never_deleted(tmp_path: Path) -> None:
    kernel = lab_kernel()
    cfg = lab_config()
    converge(kernel, cfg, tmp_path)
    kernel.executed.clear()
    kernel.set_link(wan(12, "w2", 2, carrier=False))  # the plan drops w2 from the group
    converge(kernel, cfg, tmp_path)
    actions = [op.action for op in kernel.executed]
    first_delete = actions.index(Action.DELETE)
    assert all(a is Action.DELETE for a in actions[first_delete:])
    assert not any(
        op.action is Action.DELETE and isinstance(op.obj, Route) and op.obj.table == c.TABLE_BALANCE
        for op in kernel.executed
    )
    assert balance_route(kernel) is not None


def test_link_down_then_up_restores_what_the_kernel_deleted(tmp_path: Path) -> None:
    kernel = lab_kernel()
    cfg = lab_config()
    desired, _ = converge(kernel, cfg, tmp_path)
    kernel.link_down(12)  # the kernel drops w2's nexthop and its table routes
    assert kernel.dump_owned().nexthops != desired.nexthops
    kernel.link_up(12)
    converge(kernel, cfg, tmp_path)
    assert kernel.dump_owned().nexthops == desired.nexthops
    assert kernel.dump_owned().routes == desired.routes


def test_foreign_objects_are_never_touched(tmp_path: Path) -> None:
    kernel = lab_kernel()
    foreign_rule = Rule(4, c.PRIO_LINK_SOURCE, 100, ipaddress.ip_network("100.64.9.0/24"))
    foreign_route = Route(4, c.link_table(11), ipaddress.ip_network("198.51.100.0/24"), oif=11)
    foreign_nh = Nexthop(id=c.link_nexthop_id(4, 12), family=4, oif=12)  # squats on our id
    kernel.add_foreign([foreign_rule, foreign_route, foreign_nh])
    _, report = converge(kernel, lab_config(), tmp_path)
    assert kernel.rules[foreign_rule] == 4
    assert kernel.routes[foreign_route.key] == (foreign_route, 4)
    assert kernel.nexthops[foreign_nh.id] == (foreign_nh, 4)
    assert any(str(foreign_nh.id) in text for text in report.conflicts)
    cleanup(kernel, str(tmp_path))
    assert kernel.rules == {foreign_rule: 4}
    assert list(kernel.routes) == [foreign_route.key]
    assert list(kernel.nexthops) == [foreign_nh.id]


def test_group_rebuild_goes_through_the_spare_id(tmp_path: Path) -> None:
    kernel = lab_kernel()
    converge(kernel, lab_config((1, 2, 1)), tmp_path)
    kernel.executed.clear()
    bigger = lab_config((1, 200, 1))  # more buckets: the group must be rebuilt
    desired, report = converge(kernel, bigger, tmp_path)
    assert report.ok
    assert kernel.dump_owned().groups == desired.groups
    touched = {op.obj.id for op in kernel.executed if hasattr(op.obj, "members")}
    assert c.NH_GROUP_V4_SPARE in touched
    assert c.NH_GROUP_V4_SPARE not in kernel.nexthops
    # the balance route was re-pointed, never deleted
    assert not any(op.action is Action.DELETE and isinstance(op.obj, Route) for op in kernel.executed)
    assert balance_route(kernel).nhid == c.NH_GROUP_V4  # type: ignore[union-attr]


def test_switching_group_kind(tmp_path: Path) -> None:
    kernel = lab_kernel()
    for kind in (GroupKind.RESILIENT, GroupKind.HASH_THRESHOLD, GroupKind.LEGACY, GroupKind.RESILIENT):
        desired, report = converge(kernel, lab_config(group=kind), tmp_path)
        assert report.ok, report.failed
        assert not diff(desired, kernel.dump_owned())
        assert balance_route(kernel) is not None


def test_a_failing_link_does_not_stop_the_others(tmp_path: Path) -> None:
    kernel = lab_kernel()
    kernel.set_link(replace(wan(12, "w2", 2), name="w2"))
    original = kernel._nexthop

    def refuse_w2(action, obj):  # type: ignore[no-untyped-def]
        if getattr(obj, "oif", None) == 12 and action is not Action.DELETE:
            return 22  # EINVAL
        return original(action, obj)

    kernel._nexthop = refuse_w2  # type: ignore[method-assign]
    _, report = converge(kernel, lab_config(), tmp_path)
    assert not report.ok and report.failed
    for result in report.failed:  # only w2's nexthop and what depends on it
        obj = result.op.obj
        assert getattr(obj, "oif", None) == 12 or hasattr(obj, "members") or obj.table == c.TABLE_BALANCE
    assert any(r.table == c.link_table(11) for r, _ in kernel.routes.values())
    assert any(r.table == c.link_table(13) for r, _ in kernel.routes.values())
    assert kernel.rules  # the rules for the healthy links are there


def test_cleanup_restores_sysctls_and_removes_everything(tmp_path: Path) -> None:
    kernel = lab_kernel()
    before = dict(kernel.sysctls)
    converge(kernel, lab_config(), tmp_path)
    assert kernel.sysctls != before
    report = cleanup(kernel, str(tmp_path))
    assert report.ok
    assert kernel.sysctls == before
    assert not kernel.rules and not kernel.routes and not kernel.nexthops
    assert not (tmp_path / c.SYSCTL_RECORD).exists()


def test_saved_sysctls_keep_the_original_across_applies(tmp_path: Path) -> None:
    kernel = lab_kernel()
    converge(kernel, lab_config(), tmp_path)
    kernel.sysctls["net/ipv4/conf/w1/rp_filter"] = "1"  # someone changed it meanwhile
    converge(kernel, lab_config(), tmp_path)
    cleanup(kernel, str(tmp_path))
    assert kernel.sysctls["net/ipv4/conf/w1/rp_filter"] == "0"


def test_random_event_sequences_converge(tmp_path: Path) -> None:
    rng = random.Random(7)
    kernel = lab_kernel()
    cfg = lab_config()
    for _ in range(200):
        index = rng.choice([11, 12, 13])
        i = index - 10
        event = rng.choice(["down", "carrier", "up"])
        if event == "down":
            kernel.link_down(index)
        elif event == "carrier":
            kernel.link_down(index, carrier_only=True)
        else:
            kernel.set_link(wan(index, f"w{i}", i))
        desired, report = converge(kernel, cfg, tmp_path)
        assert report.ok, (event, report.failed)
        assert not diff(desired, kernel.dump_owned())


def refuse(kernel: FakeKernel, predicate) -> None:  # type: ignore[no-untyped-def]
    """Make the fake kernel refuse (EINVAL) every add/replace whose object matches."""
    original = kernel._one

    def one(op):  # type: ignore[no-untyped-def]
        if op.action is not Action.DELETE and predicate(op.obj):
            return 22
        return original(op)

    kernel._one = one  # type: ignore[method-assign]


def test_a_failed_rebuild_keeps_the_old_group_and_the_balance_route(tmp_path: Path) -> None:
    kernel = lab_kernel()
    converge(kernel, lab_config(group=GroupKind.HASH_THRESHOLD), tmp_path)
    before = balance_route(kernel)
    refuse(kernel, lambda obj: getattr(obj, "id", None) == c.NH_GROUP_V4_SPARE)
    _, report = converge(kernel, lab_config(group=GroupKind.RESILIENT), tmp_path)
    assert not report.ok
    assert balance_route(kernel) == before  # still pointing at the old, working group
    assert c.NH_GROUP_V4 in kernel.nexthops and not kernel.nexthops[c.NH_GROUP_V4][0].resilient  # type: ignore[union-attr]
    assert balance_route(kernel, 6) is not None


def test_a_failed_switch_to_legacy_keeps_the_group(tmp_path: Path) -> None:
    kernel = lab_kernel()
    converge(kernel, lab_config(), tmp_path)
    refuse(kernel, lambda obj: isinstance(obj, Route) and bool(obj.multipath) and obj.family == 6)
    _, report = converge(kernel, lab_config(group=GroupKind.LEGACY), tmp_path)
    assert not report.ok
    v6 = balance_route(kernel, 6)
    assert v6 is not None and v6.nhid == c.NH_GROUP_V6 and c.NH_GROUP_V6 in kernel.nexthops
    assert balance_route(kernel, 4) is not None and balance_route(kernel, 4).multipath  # type: ignore[union-attr]


def test_a_foreign_spare_id_is_neither_used_nor_deleted(tmp_path: Path) -> None:
    kernel = lab_kernel()
    converge(kernel, lab_config(group=GroupKind.RESILIENT), tmp_path)
    squatter = Nexthop(id=c.NH_GROUP_V4_SPARE, family=4, oif=11)
    kernel.add_foreign([squatter])
    _, report = converge(kernel, lab_config(group=GroupKind.HASH_THRESHOLD), tmp_path)
    assert kernel.nexthops[c.NH_GROUP_V4_SPARE] == (squatter, 4)
    assert any("spare" in text for text in report.conflicts)
    assert balance_route(kernel).nhid == c.NH_GROUP_V4  # type: ignore[union-attr]


def test_a_foreign_nexthop_at_a_member_id_is_not_adopted_into_the_group(tmp_path: Path) -> None:
    kernel = lab_kernel()
    squatter = Nexthop(
        id=c.link_nexthop_id(4, 13), family=4, oif=13, gateway=ipaddress.ip_address("100.64.3.99")
    )
    kernel.add_foreign([squatter])
    _, report = converge(kernel, lab_config(), tmp_path)
    group = kernel.nexthops[c.NH_GROUP_V4][0]
    assert squatter.id not in {i for i, _w in group.members}  # type: ignore[union-attr]
    assert kernel.nexthops[squatter.id] == (squatter, 4)
    assert any(str(squatter.id) in text for text in report.conflicts)


def test_cleanup_leaves_a_knob_an_admin_changed_since(tmp_path: Path) -> None:
    kernel = lab_kernel()
    converge(kernel, lab_config(), tmp_path)
    kernel.sysctls["net/ipv4/conf/w2/rp_filter"] = "1"  # the admin's choice, after ours
    report = cleanup(kernel, str(tmp_path))
    assert kernel.sysctls["net/ipv4/conf/w2/rp_filter"] == "1"
    assert any("w2.rp_filter" in note for note in report.notes)
    assert kernel.sysctls["net/ipv4/conf/w1/rp_filter"] == "0"


def test_an_unreadable_record_is_kept_aside_not_overwritten(tmp_path: Path) -> None:
    kernel = lab_kernel()
    (tmp_path / c.SYSCTL_RECORD).write_text("{not json")
    _, report = converge(kernel, lab_config(), tmp_path)
    assert any("unreadable" in e for e in report.sysctl_errors)
    assert list(tmp_path.glob(c.SYSCTL_RECORD + ".corrupt-*"))


def test_a_small_weight_edit_keeps_the_buckets_and_moves_no_flow(tmp_path: Path) -> None:
    kernel = lab_kernel()
    converge(kernel, lab_config((1, 2, 1)), tmp_path)
    before = kernel.nexthops[c.NH_GROUP_V4][0]
    kernel.executed.clear()
    _, report = converge(kernel, lab_config((1, 3, 1)), tmp_path)  # wants 256 buckets, has 128
    after = kernel.nexthops[c.NH_GROUP_V4][0]
    assert report.ok and after.buckets == before.buckets  # type: ignore[union-attr]
    assert dict(after.members)[c.link_nexthop_id(4, 12)] == 3  # type: ignore[union-attr]
    assert all(getattr(op.obj, "id", None) != c.NH_GROUP_V4_SPARE for op in kernel.executed)
    _, again = converge(kernel, lab_config((1, 3, 1)), tmp_path)
    assert not again.changed


def test_a_retry_keeps_what_the_earlier_attempt_wrote_and_noted() -> None:
    """converge() retries, and re-plans when NAT failed: the round's report is all of it."""
    kernel = lab_kernel()
    first = reconcile(plan(lab_config(), kernel.observe()), kernel, "/nonexistent")
    first.notes.append("a note of the first attempt")
    first.firewall_changed = True
    again = reconcile(plan(lab_config(), kernel.observe()), kernel, "/nonexistent")
    both = again.after(first)
    assert first.done and again.done == [] and both.done == first.done  # nothing left to write
    assert both.notes.count("a note of the first attempt") == 1 and both.firewall_changed
    assert both.after(first).notes == both.notes  # a note both attempts make is said once
    assert Report().after(Report(failed=first.done)).failed == []  # failures are judged again
