"""The health machine is sans-IO: simulated probing, simulated time, hours of it in seconds."""

from __future__ import annotations

import ipaddress
import random
import statistics

import pytest

from wanhooks import constants as c
from wanhooks.health import machine as health
from wanhooks.health.machine import Params
from wanhooks.health.simulation import Address, simulate
from wanhooks.plan.verdicts import HealthState

T1 = ipaddress.ip_address("203.0.113.10")
T2 = ipaddress.ip_address("203.0.113.11")
T3 = ipaddress.ip_address("203.0.113.12")
PARAMS = Params(targets=(T1, T2), heartbeat=0)  # steady: every target every interval
ADAPTIVE = Params(targets=(T1, T2))  # the defaults: probes only where traffic proves nothing


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
    one_is_enough = Params(targets=(T1, T2), silent_targets=1, heartbeat=0)
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
    assert set(health.PACE_TEXT) == set(health.Pace)
    assert all(any(line.split()[:1] == [pace.value] for line in lines) for pace in health.Pace)
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
    assert per_day <= 5.0e6 * (1 - c.PROBE_BURST_SHARE) + 1 and 3.0 < budgeted.interval < 3.2
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
    slow = Params(targets=(T1, T2), max_rtt=0.3, heartbeat=0)
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


# --- adaptive probing: probes only where traffic proves nothing ----------------------------


def bytes_per_day(h: health.Health, seconds: float, family: int = 4) -> float:
    return (h.sent + h.received) * health.PROBE_BYTES[(health.Kind.ICMP, family)] / 2 * 86400 / seconds


def test_an_idle_link_sends_a_heartbeat_to_each_target_in_turn() -> None:
    asked: list[Address] = []
    h = health.start(ADAPTIVE, 0.0, trusted=True)
    h, transitions = simulate(h, 0.0, 600.0, answers=lambda t: asked.append(t) is None)
    assert transitions == [] and health.pace(h) is health.Pace.HEARTBEAT
    assert 295 <= h.sent <= 305  # one echo every 2 s
    assert asked[:6] == [T1, T2, T1, T2, T1, T2]
    assert bytes_per_day(h, 600.0) < 3.2e6 and bytes_per_day(h, 600.0, 6) < 5e6  # README's arithmetic


def test_a_link_whose_traffic_is_heard_sends_no_probes() -> None:
    h = health.start(ADAPTIVE, 0.0, trusted=True)
    h, transitions = simulate(h, 0.0, 600.0, traffic=0.02)
    assert transitions == [] and h.last_heard is not None
    # one heartbeat at the start, then one each PROBE_BUSY_HEARTBEAT_S (traffic proves the way in only)
    assert 600 / 30 <= h.sent <= 600 / 30 + 2, h.sent


def test_a_weight_auto_link_measures_its_round_trips_while_it_carries_traffic() -> None:
    """Its capacity shows in the queueing: every target every `measure` while traffic is heard."""
    measuring = Params(targets=(T1, T2), measure=0.2)
    h = health.start(measuring, 0.0, trusted=True)
    h, transitions = simulate(h, 0.0, 60.0, traffic=0.02)
    assert transitions == [] and 2 * 290 <= h.sent <= 2 * 305 and h.received == h.sent
    h, _ = simulate(h, 60.0, 60.0)  # idle: heartbeats again
    assert 2 * 290 + 28 <= h.sent <= 2 * 305 + 32
    on_budget = health.within_budget(measuring, 4, 5.0)
    assert on_budget.measure > 1.5 and on_budget.heartbeat == 2.0  # a metered link keeps to its budget


def detections(params: Params, *, traffic: float | None, trials: int = 20) -> list[float]:
    found = []
    for seed in range(trials):
        h = health.start(params, 0.0, trusted=True)
        fail_at = 30.0 + random.Random(seed).uniform(0, params.heartbeat)
        h, transitions = simulate(h, 0.0, 36.0, dead_after=fail_at, seed=seed, traffic=traffic)
        assert [t.new for t in transitions] == [HealthState.DOWN], (seed, transitions)
        found.append(transitions[0].at - fail_at)
    return sorted(found)


def test_a_silent_failure_under_traffic_is_found_within_a_second() -> None:
    """Traffic sent, nothing heard for 0.25 s: suspected, probed fast, failed 0.5 s later."""
    found = detections(ADAPTIVE, traffic=0.02)
    assert statistics.median(found) <= 1.0 and max(found) < 1.1, found


def test_a_silent_failure_of_an_idle_link_is_found_within_three_seconds() -> None:
    """The next heartbeat goes unanswered: suspected, probed fast, failed 0.5 s later."""
    found = detections(ADAPTIVE, traffic=None)
    assert statistics.median(found) <= 3.0 and max(found) < ADAPTIVE.heartbeat + 1.0, found


@pytest.mark.parametrize("traffic", [None, 0.1], ids=["idle", "busy"])
def test_no_false_failover_in_a_day_at_10_percent_loss_each_way(traffic: float | None) -> None:
    """24 simulated hours idle (every lost heartbeat is a suspicion: ~8,000 of them), and
    busy (traffic every 0.1 s, lost like the echoes): nothing fails, and the probes stay
    within 10 MB a day, bursts included."""
    hours = 24 if traffic is None else 2  # busy costs ~20 samples a simulated second
    h = health.start(ADAPTIVE, 0.0, trusted=True)
    h, transitions = simulate(h, 0.0, hours * 3600, loss=1 - 0.9**2, seed=11, traffic=traffic)
    assert transitions == [] and h.state is HealthState.UP
    assert bytes_per_day(h, hours * 3600) < 10e6


def test_a_rate_limiting_target_is_set_aside_not_blamed() -> None:
    """T1 answers one echo in five; T2 answers all: the link never fails, T1 is set aside
    (no heartbeats) for a minute at a time, and while it is, T2 alone decides."""
    counts = {T1: 0, T2: 0}

    def answers(target: Address) -> bool:
        counts[target] += 1
        return target != T1 or counts[target] % 5 == 0

    h = health.start(ADAPTIVE, 0.0, trusted=True)
    h, transitions = simulate(h, 0.0, 600.0, answers=answers)
    assert transitions == [] and h.state is HealthState.UP
    assert counts[T2] > 2 * counts[T1]  # T1 mostly set aside: heartbeats went to T2
    h, _ = simulate(h, 600.0, 10.0, answers=answers)
    assert T1 in h.set_aside or h.misses.get(T1)  # still rate-limited: aside, or on its way there
    # fast probing reaches T1 too: its rare answers prove the link alive when T2 dies
    h, transitions = simulate(h, 610.0, 60.0, answers=lambda t: t == T1 and answers(t))
    assert transitions == [] and h.state is HealthState.UP


def test_only_an_echo_sent_since_a_suspicion_clears_it_not_traffic_heard() -> None:
    up = health.start(ADAPTIVE, 0.0, trusted=True)
    h, _ = simulate(up, 0.0, 10.0)
    suspected = health.suspect(h, 10.0)
    assert health.pace(suspected) is health.Pace.FAST and health.next_round(suspected) == 10.0
    # the far end's retransmissions still come in over a way out that is dead: no proof
    still = health.heard(suspected, 10.1)
    assert still.suspected_since == 10.0 and health.pace(still) is health.Pace.FAST
    # an echo sent before the suspicion proves nothing either; one sent after it does
    assert health.replied(still, T1, 0.2, 10.15).suspected_since == 10.0
    cleared = health.replied(still, T1, 0.05, 10.2)
    assert cleared.suspected_since is None and health.pace(cleared) is health.Pace.HEARTBEAT
    # a failed link rests: every target every heartbeat, at once when traffic is heard on it
    down, transitions = simulate(up, 0.0, 10.0, dead_after=5.0)
    assert down.state is HealthState.DOWN and health.pace(down) is health.Pace.RESTING
    assert down.last_round is not None and health.next_round(down) == down.last_round + ADAPTIVE.heartbeat
    assert health.next_round(health.heard(down, 10.0)) == down.last_round + ADAPTIVE.interval
    # and comes back after its hold-down once it answers
    _, transitions = simulate(down, 10.0, 12.0)
    assert [t.new for t in transitions] == [HealthState.RECOVERING, HealthState.UP]
    assert transitions[1].at - 10.0 < ADAPTIVE.heartbeat + ADAPTIVE.hold_down + 0.5


def test_an_adaptive_link_keeps_to_its_budget_by_its_heartbeat() -> None:
    assert health.within_budget(ADAPTIVE, 4, 5.0).heartbeat == ADAPTIVE.heartbeat  # 3.1 MB fits 4
    six = health.within_budget(ADAPTIVE, 6, 5.0)  # 112-byte echoes: 4.8 MB at 2 s does not
    assert 2.4 <= six.heartbeat < 2.5 and six.interval == ADAPTIVE.interval
    assert not Params(targets=(T1,), max_loss=0.2).adaptive  # loss needs a steady stream
    assert not Params(targets=(T1,), passive=False).adaptive
