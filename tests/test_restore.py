"""Restore, don't fight (service/restore.py): another program deleting wanhooks' objects, in
simulated time (no root)."""

from __future__ import annotations

from wanhooks.constants import FIGHT_BACKOFF_MAX_S, FIGHT_LIMIT, FIGHT_QUIET_S
from wanhooks.service.restore import Decision, Restore, RestorePolicy

PORT = 4242


def sweep(policy: RestorePolicy, now: float, *, main_has_default: bool = True) -> Decision:
    return policy.deleted(now, PORT, scheduled=False, round_pending=False, main_has_default=main_has_default)


def test_the_first_sweeps_are_restored_at_once_then_later_and_later() -> None:
    policy = RestorePolicy()
    first = [sweep(policy, float(t)) for t in range(FIGHT_LIMIT)]
    assert [d.restore for d in first] == [Restore.NOW] * FIGHT_LIMIT
    assert [d.name_deleter for d in first] == [True] + [False] * (FIGHT_LIMIT - 1)  # named once
    delays = [sweep(policy, FIGHT_LIMIT + 2.0 * i).delay_s for i in range(8)]
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30] and max(delays) == FIGHT_BACKOFF_MAX_S


def test_a_sweep_counts_once_and_a_scheduled_restore_takes_the_rest() -> None:
    policy = RestorePolicy()
    for t in range(10 * FIGHT_LIMIT):  # one sweep: many deletions before its round
        assert policy.deleted(
            0.001 * t, PORT, scheduled=False, round_pending=t > 0, main_has_default=True
        ) in (
            Decision(Restore.NOW, name_deleter=True),
            Decision(Restore.NOW),
        )
    assert policy.recent == [0.0]
    assert policy.deleted(1.0, PORT, scheduled=True, round_pending=False, main_has_default=True).restore is (
        Restore.SCHEDULED
    )


def test_never_delayed_while_main_has_no_default_and_a_quiet_minute_ends_the_fight() -> None:
    policy = RestorePolicy()
    for t in range(FIGHT_LIMIT + 3):
        assert sweep(policy, float(t), main_has_default=False).restore is Restore.NOW
    assert policy.fighting
    assert sweep(policy, 10.0).restore is Restore.LATER
    later = 10.0 + FIGHT_QUIET_S + 1
    quiet = sweep(policy, later)
    assert quiet == Decision(Restore.NOW, name_deleter=True) and not policy.fighting  # named again
