"""Passive capacity estimation and auto weights are pure: synthetic counters, synthetic time."""

from __future__ import annotations

import itertools
import random

import pytest

from wanhooks.health.capacity import (
    LOWER_AFTER,
    AutoWeights,
    DirectionEstimate,
    Estimate,
    LinkEstimator,
    Observation,
    WeightDecision,
)
from wanhooks.model import Capacity

MBIT = 1_000_000.0
BASE = 0.02  # the idle round trip of the synthetic links
LOADED = 0.08  # the round trip with a full bottleneck queue: 60 ms of queueing
PROBES = 6_000.0  # bit/s of health probes: what an idle link carries
ACKS = 1 / 40  # a download's ACKs, as a share of its rate


class Line:
    """A synthetic WAN link: one observation a second, its counters fed by the rates asked for."""

    def __init__(self, hint: Capacity | None = None, *, rtt: float | None = BASE) -> None:
        self.estimator = LinkEstimator(hint)
        self.t = 1000.0
        self.rx = self.tx = 0
        self.estimator.observe(Observation(self.t, self.rx, self.tx, rtt, True))

    def tick(
        self,
        down: float = PROBES,
        up: float = PROBES,
        rtt: float | None = BASE,
        *,
        healthy: bool = True,
        dt: float = 1.0,
    ) -> Estimate:
        self.t += dt
        self.rx += round(down * dt / 8)
        self.tx += round(up * dt / 8)
        self.estimator.observe(Observation(self.t, self.rx, self.tx, rtt, healthy))
        return self.estimator.estimate()

    def run(
        self,
        seconds: int,
        down: float = PROBES,
        up: float = PROBES,
        rtt: float | None = BASE,
        *,
        healthy: bool = True,
    ) -> Estimate:
        for _ in range(seconds):
            self.tick(down, up, rtt, healthy=healthy)
        return self.estimator.estimate()

    def download(self, seconds: int, rate: float, rtt: float | None = BASE) -> Estimate:
        return self.run(seconds, rate, rate * ACKS, rtt)


def summary(d: DirectionEstimate) -> tuple[float | None, str, float | None]:
    """The estimate in Mbit/s to the kbit/s, its evidence and time: comparable exactly."""
    return (None if d.bps is None else round(d.bps / MBIT, 3), d.evidence, d.at)


def saturated_line(rate: float) -> Line:
    """A link that learnt its idle round trip, then ran a download into its bottleneck."""
    line = Line()
    line.run(10)
    e = line.download(30, rate, LOADED)
    assert e.down.bps == pytest.approx(rate)
    assert e.down.evidence == "saturated"
    return line


# --- the estimator -------------------------------------------------------------------------


def test_nothing_known_at_first() -> None:
    e = Line().estimator.estimate()
    assert (e.down.bps, e.down.evidence, e.down.at) == (None, "none", None)
    assert (e.up.bps, e.up.evidence, e.up.at) == (None, "none", None)
    assert e.baseline_rtt == BASE
    assert not e.saturated


def test_a_download_without_queueing_is_a_lower_bound() -> None:
    line = Line()
    line.run(5)
    e = line.run(30, 20 * MBIT, 0.5 * MBIT)
    assert e.down.bps == pytest.approx(20 * MBIT)
    assert e.down.evidence == "carried"
    assert e.down.at == line.t
    # the ACKs are carried too, but nothing says the upload is full
    assert e.up.evidence == "carried"
    assert e.up.bps == pytest.approx(0.5 * MBIT)
    assert not e.saturated
    assert e.delay == pytest.approx(0.0)
    # a lower bound is never lowered by carrying less
    e = line.run(30, 8 * MBIT, 0.2 * MBIT)
    assert e.down.bps == pytest.approx(20 * MBIT)


def test_a_full_bottleneck_reads_the_capacity() -> None:
    line = Line()
    line.run(10)  # the idle round trip: 20 ms
    e = line.download(10, 5 * MBIT, LOADED)
    assert e.down.bps == pytest.approx(5 * MBIT)
    assert e.down.evidence == "saturated"
    assert e.saturated
    assert e.baseline_rtt == pytest.approx(BASE)
    assert e.delay == pytest.approx(LOADED - BASE)
    # the download's ACKs (125 kbit/s) are no saturated upload
    assert e.up.bps is None
    assert e.up.evidence == "none"


def test_a_full_upload_reads_the_upload_capacity() -> None:
    line = Line()
    line.run(10)
    e = line.run(10, 8 * MBIT * ACKS, 8 * MBIT, LOADED)
    assert e.up.bps == pytest.approx(8 * MBIT)
    assert e.up.evidence == "saturated"
    assert e.down.bps is None  # its ACKs, 200 kbit/s, are no saturated download


def test_both_directions_full_at_once_confirm_both() -> None:
    line = saturated_line(20 * MBIT)
    line.run(10)
    line.run(10, 4 * MBIT * ACKS, 4 * MBIT, LOADED)
    line.run(10)
    e = line.run(5, 20 * MBIT, 4 * MBIT, LOADED)
    assert summary(e.down) == (20.0, "saturated", line.t)
    assert summary(e.up) == (4.0, "saturated", line.t)


def test_acks_under_a_carried_estimate_are_not_a_saturated_upload() -> None:
    """The upload's carried estimate is the ACK rate itself: measured against it the ACKs of a
    download into a reshaped (smaller) bottleneck would look as busy as the download."""
    line = Line()
    line.run(5)
    line.download(30, 20 * MBIT)  # carried: down 20, up (the ACKs) 0.5
    e = line.download(30, 5 * MBIT, LOADED)
    assert e.down.bps == pytest.approx(5 * MBIT, rel=0.1)
    assert e.down.evidence == "saturated"
    assert e.up.bps == pytest.approx(0.5 * MBIT)
    assert e.up.evidence == "carried"


def test_a_faster_saturated_rate_is_followed_within_seconds() -> None:
    """Half the way each second while far above: one fast second is not taken whole (noise),
    a lasting one is."""
    line = saturated_line(5 * MBIT)
    e = line.download(1, 12 * MBIT, LOADED)
    assert e.down.bps == pytest.approx(8.5 * MBIT)
    e = line.download(11, 12 * MBIT, LOADED)
    assert e.down.bps == pytest.approx(12 * MBIT, rel=0.03)
    assert e.down.evidence == "saturated"


def test_a_reshaped_link_is_followed_down_but_not_at_once() -> None:
    line = saturated_line(20 * MBIT)
    history = [line.download(1, 5 * MBIT, LOADED).down.bps for _ in range(30)]
    assert history[: LOWER_AFTER - 1] == [pytest.approx(20 * MBIT)] * (LOWER_AFTER - 1)
    close = [i + 1 for i, bps in enumerate(history) if bps is not None and bps <= 5.5 * MBIT]
    assert LOWER_AFTER <= close[0] <= 20
    assert history == sorted(history, key=lambda b: -(b or 0))  # only down, never below the new rate
    assert all(bps is not None and bps >= 5 * MBIT for bps in history)
    e = line.estimator.estimate()
    assert e.down.evidence == "saturated"
    assert e.down.at == line.t


def test_a_link_probed_every_other_second_is_followed_down_too() -> None:
    """A metered link's probes are slower than the ticks: the seconds without a round trip
    judge nothing, so they neither break the streak of slower seconds nor lower anything."""
    line = saturated_line(20 * MBIT)
    for n in range(2 * LOWER_AFTER + 4):
        line.download(1, 5 * MBIT, LOADED if n % 2 else None)
    assert line.estimator.estimate().down.bps == pytest.approx(5 * MBIT, rel=0.05)


def test_a_forgotten_baseline_is_learnt_again_on_a_longer_path() -> None:
    line = Line()
    line.run(10)
    line.estimator.forget_baseline()  # back after an outage, on a path 60 ms longer
    e = line.run(5, rtt=BASE + 0.06)
    assert e.baseline_rtt == pytest.approx(BASE + 0.06) and e.delay == pytest.approx(0.0)
    e = line.download(30, 10 * MBIT, BASE + 0.06)  # its normal round trip is not a queue
    assert not e.saturated and e.down.evidence == "carried"


def test_seconds_a_little_off_are_averaged_not_ratcheted() -> None:
    """Saturated rates wobble: within 25 % of the estimate a second moves a moving mean (a
    fifth of the way), so one second is no news and a lasting small change is followed."""
    line = saturated_line(5 * MBIT)
    assert line.download(1, 5.5 * MBIT, LOADED).down.bps == pytest.approx(5.1 * MBIT)
    assert line.download(1, 4.5 * MBIT, LOADED).down.bps == pytest.approx(4.98 * MBIT)
    e = line.download(30, 4.6 * MBIT, LOADED)
    assert summary(e.down) == (4.6, "saturated", line.t)


def test_a_dropout_with_nothing_flowing_is_no_evidence() -> None:
    line = saturated_line(20 * MBIT)
    before = line.estimator.estimate().down
    e = line.run(3, 20_000, 20_000, rtt=0.4)
    assert e.down == before
    assert not e.saturated
    # ... however long it lasts: a raised round trip without traffic says nothing of capacity
    e = line.run(120, 20_000, 20_000, rtt=0.4)
    assert e.down == before


def test_a_dropout_with_some_traffic_does_not_lower_the_estimate() -> None:
    line = saturated_line(20 * MBIT)
    before = line.estimator.estimate().down
    assert line.download(3, 6 * MBIT, 0.3).down.bps == before.bps
    # dropouts of up to LOWER_AFTER - 1 seconds, again and again, with a good second between
    for _ in range(20):
        line.download(LOWER_AFTER - 1, 6 * MBIT, 0.3)
        line.download(1, 20 * MBIT, LOADED)
    assert line.estimator.estimate().down.bps == pytest.approx(before.bps, rel=0.01)


def test_ten_idle_minutes_change_nothing() -> None:
    line = saturated_line(5 * MBIT)
    before = line.estimator.estimate()
    e = line.run(600)
    assert (e.down, e.up) == (before.down, before.up)
    assert not e.saturated


def test_unhealthy_ticks_are_ignored() -> None:
    line = saturated_line(5 * MBIT)
    before = line.estimator.estimate()
    e = line.run(30, 1 * MBIT, 0.1 * MBIT, 0.5, healthy=False)
    assert (e.down, e.up, e.baseline_rtt) == (before.down, before.up, before.baseline_rtt)
    assert e.delay is None
    assert not e.saturated
    # nor raised by one; but its lower round trip teaches the baseline (queueing only adds delay)
    e = line.run(5, 50 * MBIT, 1 * MBIT, 0.001, healthy=False)
    assert (e.down, e.up, e.baseline_rtt) == (before.down, before.up, 0.001)
    # healthy again: rates count from the last counters seen, whatever their tick
    e = line.download(1, 5 * MBIT, LOADED)
    assert e.down.bps == pytest.approx(5 * MBIT)
    assert e.down.at == line.t


def test_a_counter_reset_is_skipped() -> None:
    line = Line()
    line.run(5)
    line.download(10, 20 * MBIT)
    before = line.estimator.estimate()
    # the device was re-created: its counters are another device's, one of them lower -- the
    # other's difference means nothing either (here it would read as 80 Mbit/s of upload)
    line.rx, line.tx = 0, line.tx + 10_000_000
    e = line.download(1, 20 * MBIT)
    assert (e.down, e.up) == (before.down, before.up)
    e = line.download(1, 30 * MBIT)  # counted from the new device's counters
    assert e.down.bps == pytest.approx(30 * MBIT)


def test_intervals_too_short_or_too_long_are_skipped() -> None:
    line = Line()
    e = line.tick(100 * MBIT, 100 * MBIT, dt=0.1)  # one burst straddling a short interval
    assert e.down.bps is None
    e = line.tick(100 * MBIT, 100 * MBIT, dt=30.0)  # the daemon stalled
    assert e.down.bps is None
    e = line.tick(10 * MBIT, 1 * MBIT, dt=1.0)
    assert e.down.bps == pytest.approx(10 * MBIT)


def test_without_round_trips_only_carried_rates_count() -> None:
    line = Line(rtt=None)
    e = line.download(10, 20 * MBIT, rtt=None)
    assert summary(e.down)[:2] == (20.0, "carried")
    e = line.download(60, 5 * MBIT, rtt=None)
    assert e.down.bps == pytest.approx(20 * MBIT)
    assert e.baseline_rtt is None and e.delay is None and not e.saturated


def test_the_baseline_does_not_drift_up_under_ten_minutes_of_load() -> None:
    rng = random.Random(7)
    line = Line()
    line.run(10)
    for _ in range(600):
        line.download(1, 5 * MBIT * rng.uniform(0.9, 1.1), LOADED * rng.uniform(0.9, 1.1))
    e = line.estimator.estimate()
    assert e.baseline_rtt == pytest.approx(BASE)
    assert e.delay is not None and e.delay > 0.04
    assert e.saturated
    assert e.down.evidence == "saturated"
    assert 4.75 * MBIT <= (e.down.bps or 0) <= 5.25 * MBIT


def test_the_baseline_falls_at_once_and_follows_a_longer_path_while_idle() -> None:
    line = Line()
    assert line.tick(rtt=0.015).baseline_rtt == pytest.approx(0.015)
    e = line.run(120, rtt=0.06)  # a route change: the idle round trip is now 60 ms
    assert e.baseline_rtt == pytest.approx(0.06, abs=0.001)
    e = line.download(10, 5 * MBIT, 0.06)  # so 5 Mbit/s at 60 ms is no queue
    assert e.down.evidence == "carried"
    assert not e.saturated


def test_a_hint_bounds_the_estimate() -> None:
    line = Line(Capacity(down_bps=10 * MBIT))
    e = line.estimator.estimate()
    assert (e.down.bps, e.down.evidence) == (10 * MBIT, "hint")
    assert (e.up.bps, e.up.evidence) == (None, "none")
    e = line.download(30, 30 * MBIT)  # never faster than sold
    assert (e.down.bps, e.down.evidence) == (10 * MBIT, "hint")
    e = line.download(30, 30 * MBIT, LOADED)
    assert e.down.bps == 10 * MBIT
    e = line.download(100, 0.2 * MBIT, LOADED)  # never slower than a tenth
    assert summary(e.down)[:2] == (1.0, "saturated")
    e = line.download(5, 4 * MBIT, LOADED)
    assert e.down.bps == pytest.approx(4 * MBIT)
    e = line.download(5, 25 * MBIT, LOADED)
    assert e.down.bps == 10 * MBIT


def test_a_hint_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LinkEstimator(Capacity(down_bps=0.0))


def test_a_rate_near_the_estimate_confirms_it() -> None:
    line = saturated_line(5 * MBIT)
    line.run(60)
    e = line.download(1, 4.8 * MBIT)  # carried, within 10 %: confirmed
    assert summary(e.down) == (5.0, "saturated", line.t)
    confirmed = line.t
    e = line.download(1, 2 * MBIT)  # far below: no news
    assert e.down.at == confirmed


# --- auto weights --------------------------------------------------------------------------


def shares(values: dict[str, float]) -> dict[str, float]:
    total = sum(values.values())
    return {n: v / total for n, v in values.items()}


def test_the_first_decision_applies_at_once() -> None:
    w = AutoWeights()
    assert w.last_change() is None
    d = w.decide(0.0, {"w1": 10 * MBIT, "w2": 30 * MBIT})
    assert d.changed
    assert d.values == {"w1": 10 * MBIT, "w2": 30 * MBIT} == w.applied()
    assert w.last_change() == 0.0


def test_small_changes_are_held() -> None:
    w = AutoWeights()
    w.decide(0.0, {"w1": 10 * MBIT, "w2": 30 * MBIT})
    d = w.decide(100.0, {"w1": 11 * MBIT, "w2": 30 * MBIT})  # 25 % -> 27 %
    assert not d.changed
    assert d.values == {"w1": 10 * MBIT, "w2": 30 * MBIT}
    assert "within 4 points" in d.reason


def test_a_big_change_waits_for_the_hold() -> None:
    w = AutoWeights()
    w.decide(0.0, {"w1": 10 * MBIT, "w2": 30 * MBIT})
    d = w.decide(12.0, {"w1": 30 * MBIT, "w2": 30 * MBIT})
    assert not d.changed
    assert d.reason == "held: last change 12 s ago (hold 30 s)"
    assert not w.decide(29.9, {"w1": 30 * MBIT, "w2": 30 * MBIT}).changed
    d = w.decide(30.0, {"w1": 30 * MBIT, "w2": 30 * MBIT})
    assert d.changed
    assert d.values == {"w1": 30 * MBIT, "w2": 30 * MBIT}
    assert d.reason == "w1 25% -> 50% of the links' capacity (30.0 Mbit/s)"
    assert w.last_change() == 30.0


def test_undoing_the_previous_change_needs_four_holds() -> None:
    a: dict[str, float | None] = {"w1": 10 * MBIT, "w2": 30 * MBIT}
    b: dict[str, float | None] = {"w1": 30 * MBIT, "w2": 30 * MBIT}
    w = AutoWeights(hold_s=30.0)
    w.decide(0.0, a)
    assert w.decide(30.0, b).changed
    d = w.decide(60.0, a)  # back to A after one hold: a flip
    assert not d.changed
    assert "hold 120 s" in d.reason and "undo" in d.reason
    assert not w.decide(149.0, a).changed
    assert w.decide(150.0, a).changed
    # a third weighting, unlike both, needs only one hold
    assert not w.decide(170.0, {"w1": 60 * MBIT, "w2": 10 * MBIT}).changed
    assert w.decide(180.0, {"w1": 60 * MBIT, "w2": 10 * MBIT}).changed


def test_a_new_link_is_added_at_once_without_moving_the_others() -> None:
    w = AutoWeights()
    w.decide(0.0, {"w1": 10 * MBIT, "w2": 30 * MBIT})
    d = w.decide(5.0, {"w1": 20 * MBIT, "w2": 30 * MBIT, "w3": 10 * MBIT})
    assert d.changed
    assert d.values == {"w1": 10 * MBIT, "w2": 30 * MBIT, "w3": 10 * MBIT}
    assert "added w3 at 10.0 Mbit/s" in d.reason
    assert "held: last change 5 s ago" in d.reason  # w1's move still waits for the hold
    assert w.last_change() == 0.0


def test_an_unknown_link_gets_the_mean_of_the_known() -> None:
    w = AutoWeights()
    d = w.decide(0.0, {"w1": 10 * MBIT, "w2": 30 * MBIT, "w3": None})
    assert d.values["w3"] == pytest.approx(20 * MBIT)
    assert "added w3 at no estimate: the mean of the others" in d.reason


def test_with_nothing_known_all_are_equal_until_estimates_arrive() -> None:
    w = AutoWeights()
    d = w.decide(0.0, {"w1": None, "w2": None})
    assert d.changed
    assert d.values == {"w1": 1.0, "w2": 1.0}
    assert w.last_change() is None  # no evidence yet: the first estimates apply at once
    d = w.decide(1.0, {"w1": 10 * MBIT, "w2": None})
    # w2's value was only a prior: it becomes the new prior, on the estimates' scale
    assert d.changed
    assert d.values == {"w1": 10 * MBIT, "w2": 10 * MBIT}
    assert w.last_change() == 1.0
    d = w.decide(2.0, {"w1": 10 * MBIT, "w2": None, "w3": 20 * MBIT})
    assert d.values["w3"] == 20 * MBIT
    assert shares(d.values)["w3"] == pytest.approx(0.5)


def test_an_unknown_link_keeps_its_applied_value() -> None:
    w = AutoWeights()
    w.decide(0.0, {"w1": 10 * MBIT, "w2": 30 * MBIT})
    d = w.decide(100.0, {"w1": 10 * MBIT, "w2": None})
    assert not d.changed
    assert d.values == {"w1": 10 * MBIT, "w2": 30 * MBIT}
    d = w.decide(200.0, {"w1": 40 * MBIT, "w2": None})  # others may move; it stays
    assert d.changed
    assert d.values == {"w1": 40 * MBIT, "w2": 30 * MBIT}


def test_a_removed_link_is_dropped() -> None:
    w = AutoWeights()
    w.decide(0.0, {"w1": 10 * MBIT, "w2": 30 * MBIT, "w3": 5 * MBIT})
    d = w.decide(1.0, {"w1": 10 * MBIT, "w2": 30 * MBIT})
    assert d.changed
    assert d.values == {"w1": 10 * MBIT, "w2": 30 * MBIT} == w.applied()
    assert "dropped w3" in d.reason
    assert not w.decide(2.0, {"w1": 10 * MBIT, "w2": 30 * MBIT}).changed


def test_a_lone_link_follows_its_estimate_quietly() -> None:
    w = AutoWeights()
    w.decide(0.0, {"w1": None})
    d = w.decide(1.0, {"w1": 20 * MBIT})
    assert not d.changed  # one link carries everything, whatever its value
    assert d.values == {"w1": 20 * MBIT}
    d = w.decide(2.0, {"w1": 20 * MBIT, "w2": 5 * MBIT})
    assert shares(d.values)["w2"] == pytest.approx(0.2)


def test_an_auto_link_beside_fixed_ones_moves_under_the_same_hysteresis() -> None:
    """One auto link beside a fixed `weight: 10` (10 Mbit/s): its share against the fixed
    link is what the thresholds and the hold judge, not a lone link's free value."""
    fixed = {"wg0": 10 * MBIT}
    w = AutoWeights()
    assert w.decide(0.0, {"lte": 10 * MBIT}, fixed).changed
    d = w.decide(40.0, {"lte": 11 * MBIT}, fixed)  # 50 % -> 52 %: noise
    assert not d.changed and d.values == {"lte": 10 * MBIT}
    d = w.decide(41.0, {"lte": 50 * MBIT}, fixed)  # 50 % -> 83 %: a change, applied
    assert d.changed and d.values == {"lte": 50 * MBIT}
    assert d.reason == "lte 50% -> 83% of the links' capacity (50.0 Mbit/s)"
    assert not w.decide(50.0, {"lte": 5 * MBIT}, fixed).changed  # the hold
    # two auto links growing alike beside a fixed one: their shares against it move
    w = AutoWeights()
    w.decide(0.0, {"a": 10 * MBIT, "b": 10 * MBIT}, {"c": 50 * MBIT})
    d = w.decide(40.0, {"a": 100 * MBIT, "b": 100 * MBIT}, {"c": 50 * MBIT})
    assert d.changed and d.values == {"a": 100 * MBIT, "b": 100 * MBIT}


def test_steady_estimates_change_nothing_after_the_first_decision() -> None:
    w = AutoWeights()
    decisions = [w.decide(float(t), {"w1": 5 * MBIT, "w2": 20 * MBIT, "w3": None}) for t in range(600)]
    assert [t for t, d in enumerate(decisions) if d.changed] == [0]


def test_closed_loop_three_saturated_links() -> None:
    """Three links of 5, 20 and 10 Mbit/s down (a quarter of that up), full both ways with rates
    and round trips noisy by +-10 %, estimated and weighed every second."""
    rng = random.Random(1)
    capacity = {"w1": 5 * MBIT, "w2": 20 * MBIT, "w3": 10 * MBIT}
    lines = {name: Line() for name in capacity}
    weights = AutoWeights()
    changes: list[tuple[float, WeightDecision]] = []

    def second(t: float, load: bool) -> None:
        for name, line in lines.items():
            if load:
                down, up = capacity[name] * rng.uniform(0.9, 1.1), capacity[name] / 4 * rng.uniform(0.9, 1.1)
                line.tick(down, up, LOADED * rng.uniform(0.9, 1.1))
            else:
                line.tick(rtt=BASE * rng.uniform(1.0, 1.1))
        d = weights.decide(t, {name: line.estimator.estimate().down.bps for name, line in lines.items()})
        if d.changed:
            changes.append((t, d))

    for t in range(10):  # idle: the baselines are learnt, nothing is known
        second(float(t), load=False)
    for t in range(10, 130):
        second(float(t), load=True)
    total = sum(capacity.values())
    for name, share in shares(weights.applied()).items():
        assert share == pytest.approx(capacity[name] / total, rel=0.15)
    for name, line in lines.items():
        e = line.estimator.estimate()
        assert e.down.evidence == "saturated"
        assert 0.9 * capacity[name] <= (e.down.bps or 0) <= 1.1 * capacity[name]

    settled = len(changes)
    for t in range(130, 730):
        second(float(t), load=True)
    later = [t for t, _ in changes[settled - 1 :]]  # the last change before, and those since
    assert all(b - a >= 60 for a, b in itertools.pairwise(later))
    for name, share in shares(weights.applied()).items():
        assert share == pytest.approx(capacity[name] / total, rel=0.15)
