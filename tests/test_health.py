"""The health machine is sans-IO: simulated probing, simulated time, hours of it in seconds."""

from __future__ import annotations

import ipaddress
import random

import pytest

from wanhooks.health import machine as health
from wanhooks.health.machine import Params
from wanhooks.plan.verdicts import HealthState

T1 = ipaddress.ip_address("203.0.113.10")
T2 = ipaddress.ip_address("203.0.113.11")
PARAMS = Params(targets=(T1, T2))


def simulate(
    h: health.Health,
    start: float,
    seconds: float,
    *,
    loss: float = 0.0,
    dead_after: float | None = None,
    dead_windows: list[tuple[float, float]] | None = None,
    rtt: tuple[float, float] = (0.02, 0.05),
    seed: int = 1,
) -> tuple[health.Health, list[health.Transition]]:
    """Probe every interval; each echo is lost with `loss` (request or reply), or always when dead."""
    rng = random.Random(seed)
    transitions: list[health.Transition] = []
    pending: list[tuple[float, ipaddress.IPv4Address | ipaddress.IPv6Address, float]] = []
    t = start
    while t < start + seconds:
        # the prober's cadence: the fast interval while the link is suspected
        step = h.params.burst_interval if h.suspected_since is not None else h.params.interval
        dead = (dead_after is not None and t >= dead_after) or any(a <= t < b for a, b in dead_windows or [])
        for target in h.params.targets:
            h = health.sent(h, t)
            if not dead and rng.random() >= loss:
                r = rng.uniform(*rtt)
                pending.append((t + r, target, r))
        # deliver replies due before the next step, in order; the prober evaluates every
        # half fast interval (a budgeted link's heartbeat is checked between its rounds)
        tick = h.params.burst_interval / 2
        ticks = [t + tick * i for i in range(1, round(step / tick) + 1)]
        pending.sort(key=lambda x: x[0])
        for now in ticks:
            while pending and pending[0][0] < now:
                at, target, r = pending.pop(0)
                before = h.last
                h = health.replied(h, target, r, at)
                if h.last is not before and h.last is not None:
                    transitions.append(h.last)
            before = h.last
            h = health.evaluate(h, now)
            if h.last is not before and h.last is not None:
                transitions.append(h.last)
            if h.suspected_since is not None and step > h.params.burst_interval:
                step = now - t  # suspected mid-round: the prober sends a fast round at once
                break
        t += step
    return h, transitions


def test_a_silent_failure_is_declared_within_a_second() -> None:
    detections = []
    for seed in range(20):
        h = health.start(PARAMS, 0.0, trusted=True)
        fail_at = 10.0 + random.Random(seed).uniform(0, 0.1)
        h, transitions = simulate(h, 0.0, 12.0, dead_after=fail_at, seed=seed)
        down = [tr for tr in transitions if tr.new is HealthState.DOWN]
        assert len(down) == 1 and "no reply from 203.0.113.10, 203.0.113.11" in down[0].reason
        detections.append(down[0].at - fail_at)
    detections.sort()
    assert max(detections) < 1.0 and detections[len(detections) // 2] < 0.85, detections


def test_no_false_failover_in_two_hours_at_10_percent_loss_each_way() -> None:
    h = health.start(PARAMS, 0.0, trusted=True)
    echo_loss = 1 - 0.9**2  # 10 % of requests and 10 % of replies lost
    h, transitions = simulate(h, 0.0, 2 * 3600, loss=echo_loss, rtt=(0.02, 0.4), seed=7)
    assert transitions == [] and h.state is HealthState.UP
    assert 0.17 < health.loss(h) < 0.21  # type: ignore[operator]


def test_a_link_that_loses_almost_everything_does_fail() -> None:
    """The same machine is not blind: at 70 % echo loss it takes the link out."""
    h = health.start(PARAMS, 0.0, trusted=True)
    h, transitions = simulate(h, 0.0, 600, loss=0.7, seed=3)
    assert any(tr.new is HealthState.DOWN for tr in transitions)


def test_recovery_waits_for_the_hold_down() -> None:
    h = health.start(PARAMS, 0.0, trusted=True)
    h, transitions = simulate(h, 0.0, 20.0, dead_windows=[(5.0, 8.0)])
    kinds = [(tr.old, tr.new) for tr in transitions]
    assert kinds == [
        (HealthState.UP, HealthState.DOWN),
        (HealthState.DOWN, HealthState.RECOVERING),
        (HealthState.RECOVERING, HealthState.UP),
    ]
    back = transitions[-1].at
    assert 8.0 + PARAMS.hold_down <= back < 8.0 + PARAMS.hold_down + 1.0  # hold-down + 1 s at most


def test_a_flapping_link_stays_out_until_stable() -> None:
    h = health.start(PARAMS, 0.0, trusted=True)
    windows = [(t, t + 2.0) for t in range(4, 60, 4)]  # down 2 s, up 2 s, ... for a minute
    h, transitions = simulate(h, 0.0, 60.0, dead_windows=windows)
    ups = [tr for tr in transitions if tr.new is HealthState.UP]
    assert ups == []  # never trusted again while it flaps
    h, transitions = simulate(h, 60.0, 10.0)  # then stable
    assert h.state is HealthState.UP


def test_k_of_n() -> None:
    one_is_enough = Params(targets=(T1, T2), silent_targets=1)
    h = health.start(one_is_enough, 0.0, trusted=True)
    for t in [x / 10 for x in range(1, 20)]:
        h = health.replied(h, T2, 0.02, t)  # only T2 answers
    assert h.state is HealthState.DOWN
    h = health.start(PARAMS, 0.0, trusted=True)
    for t in [x / 10 for x in range(1, 20)]:
        h = health.replied(h, T2, 0.02, t)
    assert h.state is HealthState.UP  # one silent target of two: not a dead link


def test_a_new_link_is_kept_out_until_it_answers() -> None:
    h = health.start(PARAMS, 0.0)
    assert h.state is HealthState.PROBING and not h.carries_traffic()
    h, _ = simulate(h, 0.0, 1.5)
    assert h.state is HealthState.UP and h.carries_traffic()
    h = health.start(PARAMS, 0.0)
    h, _ = simulate(h, 0.0, 1.5, dead_after=0.0)
    assert h.state is HealthState.DOWN


def test_the_table_is_the_whole_story() -> None:
    """Every (state, signal) pair is in the table, and `wanhooks health-table` shows each."""
    pairs = {(state, sig) for state in HealthState for sig in health.Signal}
    assert set(health.TRANSITIONS) == pairs
    lines = health.table_text().splitlines()
    for (state, sig), new in health.TRANSITIONS.items():
        if new is state:
            stays = next(line for line in lines if line.startswith(f"{state.value} stays on:"))
            assert sig.value in stays.split(": ", 1)[1].split(", "), (state, sig)
        else:
            assert any(line.split() == [state.value, sig.value, new.value] for line in lines), (state, sig)
    assert set(health.CARRIES_TRAFFIC) == set(HealthState)
    assert set(health.SUSPICION) == {(was, clue) for was in (False, True) for clue in health.Clue}
    for (was, clue), now in health.SUSPICION.items():
        if now != was:
            line = next(
                line for line in lines if line.strip().startswith("suspected" if was else "not suspected")
            )
            assert clue.value in line.split(" on: ", 1)[1].split(", "), (was, clue)


def test_suspicion_follows_its_table() -> None:
    up = health.start(PARAMS, 0.0, trusted=True)
    suspected = health.suspect(up, 1.0)
    assert suspected.suspected_since == 1.0
    assert health.suspect(suspected, 2.0).suspected_since == 1.0  # keeps its moment
    answered = health.replied(suspected, PARAMS.targets[0], 0.01, 1.05)  # sent after the suspicion
    assert answered.suspected_since is None
    probing = health.start(PARAMS, 0.0)
    assert health.suspect(probing, 1.0).suspected_since is None  # only an up link is suspected


def test_a_pair_missing_from_the_table_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    table = dict(health.TRANSITIONS)
    del table[(HealthState.UP, health.Signal.SETTLED)]
    monkeypatch.setattr(health, "TRANSITIONS", table)
    h = health.start(PARAMS, 0.0, trusted=True)
    with pytest.raises(KeyError):
        simulate(h, 0.0, 3.0)


def test_a_metered_link_keeps_to_its_probe_budget() -> None:
    budgeted = health.within_budget(PARAMS, 4, 5.0)
    per_day = len(budgeted.targets) * health.ECHO_BYTES[4] * 86400 / budgeted.interval
    assert per_day <= 5.0e6 * (1 - health.BURST_SHARE) + 1 and 3.0 < budgeted.interval < 3.2
    assert budgeted.down_after < 10 and budgeted.burst_interval == PARAMS.interval
    detections = []
    for seed in range(20):  # idle: a missed heartbeat, then a burst confirms
        h = health.start(budgeted, 0.0, trusted=True)
        fail_at = 30.0 + random.Random(seed).uniform(0, budgeted.interval)
        h, transitions = simulate(h, 0.0, 45.0, dead_after=fail_at, seed=seed)
        assert [t.new for t in transitions] == [HealthState.DOWN], seed
        detections.append(transitions[0].at - fail_at)
    detections.sort()
    assert max(detections) < budgeted.interval + 1.0 and detections[10] < 3.0, detections
    assert health.within_budget(PARAMS, 4, 1000.0) == PARAMS  # a generous budget changes nothing
    for budget in (5.0, 20.0):  # no false failover at 10 % loss each way, an hour long,
        h = health.start(health.within_budget(PARAMS, 4, budget), 0.0, trusted=True)
        h, transitions = simulate(h, 0.0, 3600, loss=1 - 0.9**2, seed=int(budget))
        assert transitions == [], budget
        spent = h.sent * health.ECHO_BYTES[4] / 2 * 24  # bursts included, a day's worth
        assert spent <= budget * 1e6, (budget, spent)  # and within the budget


def test_a_suspected_link_is_confirmed_dead_within_a_second() -> None:
    """The passive watch's suspicion: fast probing, silence for confirm_after decides."""
    budgeted = health.within_budget(PARAMS, 4, 5.0)
    h = health.start(budgeted, 0.0, trusted=True)
    h, _ = simulate(h, 0.0, 20.0, dead_after=20.0)
    h = health.suspect(h, 20.2)
    assert h.suspected_since == 20.2
    h, transitions = simulate(h, 20.2, 2.0, dead_after=20.0)
    assert [t.new for t in transitions] == [HealthState.DOWN]
    assert transitions[0].at - 20.2 < budgeted.confirm_after + 0.15
    # a suspicion the link answers clears at once, nothing else happens
    h = health.start(budgeted, 0.0, trusted=True)
    h, _ = simulate(h, 0.0, 20.0)
    h, transitions = simulate(health.suspect(h, 20.0), 20.0, 5.0)
    assert transitions == [] and h.suspected_since is None and h.state is HealthState.UP


def test_latency_and_loss_thresholds() -> None:
    slow = Params(targets=(T1, T2), max_rtt=0.3)
    h = health.start(slow, 0.0, trusted=True)
    h, transitions = simulate(h, 0.0, 30.0, rtt=(0.35, 0.45))
    assert [t.new for t in transitions] == [HealthState.DOWN] and "above max_rtt 300 ms" in transitions[
        0
    ].reason
    h, transitions = simulate(h, 30.0, 30.0, rtt=(0.01, 0.02))  # fast again: back after the hold-down
    assert h.state is HealthState.UP
    lossy = Params(targets=(T1, T2), max_loss=0.3)
    h = health.start(lossy, 0.0, trusted=True)
    h, transitions = simulate(h, 0.0, 120.0, loss=0.1)
    assert transitions == []  # 10 % is below the threshold
    h, transitions = simulate(h, 120.0, 30.0, loss=0.5, seed=2)
    assert [t.new for t in transitions][:1] == [HealthState.DOWN]
    assert "echoes lost over 10 s, above max_loss 30 %" in transitions[0].reason
    loss = health.window_loss(h, 150.0)
    assert loss is not None and 0.4 < loss[0] < 0.6
