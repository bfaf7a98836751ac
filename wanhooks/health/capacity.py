"""Each WAN link's usable capacity, estimated passively, and the weights that follow from it (pure).

For `weight: auto` the balance weight of a link follows its capacity (which
direction counts is health/capacity_watch.py's choice: the larger).  Nothing here ever
sends a byte to measure it: the daemon feeds each link's estimator one
Observation a second -- the WAN device's cumulative byte counters (rx: what the
router receives, i.e. download; tx: upload), the probes' round trip over that
second, and whether the link is healthy -- and this module only judges.  It
knows no clock: time is an argument.

Theory of operation
-------------------
A link that carries R bit/s can carry at least R.  That lower bound is all a
quiet link ever tells, so it is only ever *raised* ("carried" evidence).
Capacity itself shows when traffic meets it: the bottleneck's queue fills and
the round trip rises above the idle one.  A tick whose round trip is raised by
queueing is *congested*, and the rate of the direction that is loading the link
is its capacity ("saturated" evidence) -- higher or lower than the estimate.

* Rates: 8 * delta bytes / delta t between consecutive observations.  A gap
  under 0.2 s is too short to average the counters' burstiness, one over 10 s
  blurs load and idle together; a counter that went backwards is a driver
  reset or a re-created device.  Such a tick is skipped, its counters kept.
* Baseline (the idle round trip): the first round trip seen, then the minimum
  -- queueing only ever adds delay -- healthy or not: a link's round trips while
  it recovers are taken before traffic returns to it, idle ones.  A path change may raise the idle round
  trip for good, so the baseline also creeps up (5 % of the gap a tick, a
  time constant of 20 s) -- but only while the link is lightly loaded (both
  directions under a quarter of their estimate), so minutes of bulk transfer
  never teach it the loaded round trip.
* Congested: delay = rtt - baseline > max(10 ms, baseline / 2).  The absolute
  floor ignores probe jitter on a fast link, the relative part a cellular
  link's wobble.  Without a round trip there is no judgement: only the
  carried rule applies, and only to raise an estimate -- a link probed less
  than once a second (a metered one) must not have its streak of slower
  seconds (below) broken by the seconds between its probes.
* Which direction: a download's ACKs flow the other way and must not be read as
  a saturated upload.  Each direction's utilisation is its rate over its
  capacity (a hint or a saturated measurement), or over the busier direction's
  rate when its capacity is not known -- a carried estimate is only a lower
  bound, and the ACK direction's is the ACK rate itself, which would read as
  fully used.  A direction is loaded when its utilisation is at least half the
  higher one's and it carries 100 kbit/s.
* Saturated rates: a second's count wobbles by several per cent, so the
  estimate is a moving mean of the saturated seconds within 25 % of it (a
  fifth of the way each); a rate further above moves it half the way (a
  faster line); one further below -- a slower line, or a dropout -- only once
  the direction has been congested, loaded and that far below for 5 ticks in
  a row: a shaper that changed stays changed, a dropout or a lull of a few
  seconds does not.  Then it steps to those ticks' median (20 -> 5 Mbit/s:
  followed in 5 s).
* Dropouts: a raised round trip with (almost) nothing flowing is a radio
  dropout or an outage, not a small capacity: no evidence.
* Idle is not small: rates under 100 kbit/s change nothing; estimates never
  decay with time.
* Bounds: a configured hint (`capacity:`, the rate the line is sold at) is the
  starting estimate and clamps it to [hint / 10, hint]: never faster than sold,
  never read as slower than a tenth of it.  Without a hint, never below
  64 kbit/s once known.

AutoWeights turns the estimates into the weights applied, with hysteresis: a
move of a share by less than 4 points and less than a tenth of itself is
noise, a hold of 30 s between changes stops weights chasing every estimate,
and undoing the previous change (A -> B -> A) waits four holds.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from ..model import Capacity

# --- rates ------------------------------------------------------------------
# Counters sampled closer than this are dominated by the burst that happens to
# straddle the sample (a 64 KiB TSO burst is 5 Mbit/s over 0.1 s).
MIN_DT = 0.2
# A longer gap averages load and idle together (and means the daemon stalled).
MAX_DT = 10.0

# --- congestion -------------------------------------------------------------
# Queueing delay below this is probe jitter, not a queue (SRTT of 100 ms probes
# on a quiet wired link wobbles by a few ms).
DELAY_MIN = 0.010
# ... or below this share of the idle round trip: cellular round trips wobble in
# proportion to their size.
DELAY_RELATIVE = 0.5

# --- evidence ---------------------------------------------------------------
# Less than this in a direction is idle: probes, keepalives, DNS.  Its rate says
# nothing about capacity (the probes alone are ~6 kbit/s).
MIN_RATE = 100_000.0
# The lowest estimate of a link without a hint: a link slower than a 64k ISDN
# channel is not worth balancing onto, and zero would starve it for good.
FLOOR_BPS = 64_000.0
# A direction is loaded when its utilisation is at least this share of the
# busier direction's: ACKs of a download run at ~1/40 of its rate.
LOADED_SHARE = 0.5
# A saturated second's rate is the capacity plus noise (a second's count
# wobbles by several per cent: TCP's sawtooth, bursts).  A rate within BAND
# of the estimate is an ordinary second: the estimate is their moving mean,
# each moving it ALPHA of the way.  Taking only the higher ones would ratchet
# it to the noise's peaks, from which ordinary seconds look like a slower
# line.
BAND = 0.25
ALPHA = 0.2
# Further above: a faster line (or a first saturated measurement above a
# lower bound): half the way each second.
ALPHA_UP = 0.5
# Further below: a slower line, or a radio dropout, or a burst of cross
# traffic.  It counts only after this many consecutive congested ticks
# (seconds) that far below -- longer than a dropout -- and then the estimate
# steps to the median of those ticks' rates: they are the evidence, and a
# step follows a reshaped line in ~5 s where sliding to it would trigger a
# weight change on the way and then wait out the hold for the next.
LOWER_AFTER = 5
# ... and while such a streak goes on, this share of the gap per tick.
ALPHA_DOWN = 0.25
# A rate within this share of the estimate confirms it (refreshes `at`).
CONFIRM_WITHIN = 0.10
# A hint is the sold rate: the estimate stays within [hint / HINT_RANGE, hint].
HINT_RANGE = 10.0

# --- baseline ---------------------------------------------------------------
# The baseline rises only while both directions run below this share of their
# estimate: a lightly loaded link's round trip is its idle one.
LIGHT_SHARE = 0.25
# ... or, when a direction's estimate is unknown, while the link's total rate is
# below this (a few web pages; no bulk transfer).
LIGHT_UNKNOWN_BPS = 1_000_000.0
# The share of the gap the baseline rises per tick: a time constant of 20 s,
# slow enough that a few seconds of unexplained delay barely move it.
BASELINE_RISE = 0.05

# What an estimate rests on: nothing yet, the config's `capacity:` hint, a rate the
# link carried without a queue (a lower bound), or one it passed while full.
Evidence = Literal["none", "hint", "carried", "saturated"]


@dataclass(frozen=True)
class Observation:
    at: float  # time.monotonic() seconds
    rx_bytes: int  # cumulative counters of the WAN device
    tx_bytes: int
    rtt: float | None  # smoothed probe round trip, seconds; None: no answer / no probes
    healthy: bool  # False while the link is down/failing: the tick is ignored for estimation


@dataclass(frozen=True)
class DirectionEstimate:
    bps: float | None  # the estimate; None = unknown (no hint, no evidence yet)
    evidence: Evidence
    at: float | None  # monotonic time of the last evidence that changed or confirmed it


@dataclass(frozen=True)
class Estimate:
    down: DirectionEstimate
    up: DirectionEstimate
    baseline_rtt: float | None  # idle round trip
    delay: float | None  # latest rtt - baseline (queueing delay), seconds
    saturated: bool  # the latest tick was judged saturated


@dataclass
class _Direction:
    """One direction's estimate and the streak that may lower it (mutable: the estimator's state)."""

    hint: float | None
    bps: float | None = None
    evidence: Evidence = "none"
    at: float | None = None
    # consecutive congested ticks with this direction loaded at a rate clearly (more than
    # CONFIRM_WITHIN) below its estimate: a saturated tick at or near the estimate shows the
    # capacity is still there and starts the count again
    streak: int = 0
    lower: list[float] = field(default_factory=list)  # the streak's rates

    def __post_init__(self) -> None:
        if self.hint is not None:
            if not self.hint > 0:
                raise ValueError(f"a capacity hint must be positive, not {self.hint}")
            self.bps, self.evidence = self.hint, "hint"

    def snapshot(self) -> DirectionEstimate:
        return DirectionEstimate(bps=self.bps, evidence=self.evidence, at=self.at)

    def utilisation(self, rate: float, busiest: float) -> float:
        """Rate over capacity; only a hint or a saturated measurement is one (see the module doc):
        otherwise the busier direction's rate stands in."""
        if self.bps is not None and self.evidence in ("hint", "saturated"):
            return rate / self.bps
        return rate / busiest

    def light(self, rate: float, total: float) -> bool:
        if self.bps is None:
            return total < LIGHT_UNKNOWN_BPS
        return rate < LIGHT_SHARE * self.bps

    def saturated(self, rate: float, at: float) -> None:
        """A congested tick with this direction loaded: `rate` is what the bottleneck passes.
        An ordinary second (within BAND) moves the moving mean, a higher one moves it fast,
        a much lower one only once it has persisted (see `streak`)."""
        measured = self.evidence in ("saturated", "hint")
        if self.bps is None or (rate >= self.bps and not measured):  # the first measure of capacity
            self.reset_streak()
            self._settle(rate, "saturated", rate, at)
        elif rate >= (1 - BAND) * self.bps:
            self.reset_streak()
            alpha = ALPHA_UP if rate > (1 + BAND) * self.bps else ALPHA
            self._settle(self.bps + alpha * (rate - self.bps), "saturated", rate, at)
        else:
            self.streak += 1
            self.lower.append(rate)
            if self.streak == LOWER_AFTER:
                self._settle(statistics.median(self.lower), "saturated", rate, at)
            elif self.streak > LOWER_AFTER:
                self._settle(self.bps + ALPHA_DOWN * (rate - self.bps), "saturated", rate, at)

    def reset_streak(self) -> None:
        self.streak = 0
        self.lower.clear()

    def carried(self, rate: float, at: float, *, judged: bool = True) -> None:
        """A tick without queueing: the link carried `rate`, so it can carry at least that.
        Not `judged` (no round trip this tick): it may raise the estimate, but it says
        nothing about a queue, so a streak of slower saturated seconds goes on."""
        if judged:
            self.reset_streak()
        if rate < MIN_RATE:
            return
        if self.bps is None or rate > self.bps:
            self._settle(rate, "carried", rate, at)
        else:
            self._confirm(rate, "carried", at)

    def _clamp(self, bps: float) -> float:
        if self.hint is not None:
            return min(self.hint, max(self.hint / HINT_RANGE, bps))
        return max(FLOOR_BPS, bps)

    def _settle(self, bps: float, evidence: Evidence, rate: float, at: float) -> None:
        new = self._clamp(bps)
        if self.bps is None or new != self.bps:
            self.bps, self.evidence, self.at = new, evidence, at
        else:  # clamped to where it was: at most a confirmation
            self._confirm(rate, evidence, at)

    def _confirm(self, rate: float, evidence: Evidence, at: float) -> None:
        assert self.bps is not None
        if abs(rate - self.bps) <= CONFIRM_WITHIN * self.bps:
            self.at = at
            # a saturated rate at the estimate shows it is the capacity, not only a lower bound
            if evidence == "saturated":
                self.evidence = evidence


class LinkEstimator:
    """One link's download and upload capacity, from one Observation per tick (see the module doc)."""

    def __init__(self, hint: Capacity | None = None) -> None:
        hint = hint or Capacity()
        self._down = _Direction(hint.down_bps)  # rx
        self._up = _Direction(hint.up_bps)  # tx
        self._last: Observation | None = None
        self._baseline: float | None = None
        self._delay: float | None = None
        self._saturated = False

    def observe(self, obs: Observation) -> None:
        previous, self._last = self._last, obs
        self._delay, self._saturated = None, False
        rates = self._rates(previous, obs) if obs.healthy else None
        if obs.rtt is not None:
            # queueing only adds delay: any lower round trip is closer to the idle one -- a
            # recovering link's too: its fast probes, before traffic returns, are the best
            # idle samples there are (health/capacity_watch.py)
            self._baseline = obs.rtt if self._baseline is None else min(self._baseline, obs.rtt)
            if obs.healthy:
                self._delay = obs.rtt - self._baseline
        if rates is None:  # nothing measured: a streak of load is broken
            self._down.reset_streak()
            self._up.reset_streak()
            return
        rx, tx = rates
        if self._congested():
            self._judge_saturated(obs.at, rx, tx)
        else:
            judged = self._delay is not None
            self._down.carried(rx, obs.at, judged=judged)
            self._up.carried(tx, obs.at, judged=judged)
        if obs.rtt is not None:
            self._follow_baseline(obs.rtt, rx, tx)

    def forget_baseline(self) -> None:
        """The link came back, perhaps on another path (an LTE reattach): its idle round
        trip is learnt again, from the next round trips (the lowest of them)."""
        self._baseline = None

    def estimate(self) -> Estimate:
        return Estimate(
            down=self._down.snapshot(),
            up=self._up.snapshot(),
            baseline_rtt=self._baseline,
            delay=self._delay,
            saturated=self._saturated,
        )

    @staticmethod
    def _rates(previous: Observation | None, obs: Observation) -> tuple[float, float] | None:
        """(rx, tx) bits per second since `previous`, or None when the interval says nothing."""
        if previous is None:
            return None
        dt = obs.at - previous.at
        if dt <= MIN_DT or dt > MAX_DT:
            return None
        drx, dtx = obs.rx_bytes - previous.rx_bytes, obs.tx_bytes - previous.tx_bytes
        if drx < 0 or dtx < 0:  # a driver reset or a re-created device
            return None
        return 8 * drx / dt, 8 * dtx / dt

    def _congested(self) -> bool:
        if self._delay is None or self._baseline is None:
            return False  # no round trip: no judgement
        return self._delay > max(DELAY_MIN, DELAY_RELATIVE * self._baseline)

    def _judge_saturated(self, at: float, rx: float, tx: float) -> None:
        if rx + tx < MIN_RATE:  # a raised round trip with nothing flowing: a dropout, not a capacity
            self._down.reset_streak()
            self._up.reset_streak()
            return
        busiest = max(rx, tx)
        used = [(d, rate, d.utilisation(rate, busiest)) for d, rate in ((self._down, rx), (self._up, tx))]
        top = max(u for _, _, u in used)
        for direction, rate, u in used:
            if rate >= MIN_RATE and u >= LOADED_SHARE * top:
                direction.saturated(rate, at)
                self._saturated = True
            else:
                direction.reset_streak()

    def _follow_baseline(self, rtt: float, rx: float, tx: float) -> None:
        """Let the baseline creep up towards a higher idle round trip, only while lightly loaded."""
        assert self._baseline is not None
        total = rx + tx
        if rtt > self._baseline and self._down.light(rx, total) and self._up.light(tx, total):
            self._baseline += BASELINE_RISE * (rtt - self._baseline)


# --- weights ----------------------------------------------------------------


@dataclass(frozen=True)
class WeightDecision:
    values: dict[str, float]  # per auto link name: the value applied (its capacity, bps), after hysteresis
    changed: bool
    reason: str  # for the log: why changed or why held


def _shares(values: dict[str, float], over: list[str]) -> dict[str, float]:
    total = sum(values[n] for n in over)
    return {n: values[n] / total for n in over}


def _moved(a: dict[str, float], b: dict[str, float], points: float, relative: float) -> float | None:
    """How far weighting a is from b, over the links both have (shares renormalised over
    those), in units of the thresholds: above 1 when some link's share moved by more than
    `points` or by more than `relative` of its share in b.  The relative bound matters for
    a small link (a 14 % share moving 4 points is off by 28 %); the absolute one for a large
    link.  None when fewer than two links are shared."""
    common = [n for n in a if n in b]
    if len(common) < 2:
        return None
    sa, sb = _shares(a, common), _shares(b, common)
    return max(
        abs(sa[n] - sb[n]) / min(points, relative * sb[n]) if sb[n] > 0 else float("inf") for n in common
    )


def _ratio(a: float, b: float) -> float:
    """How many times larger the larger of two values is (inf when one is not positive)."""
    low, high = min(a, b), max(a, b)
    return high / low if low > 0 else float("inf")


def _fmt_bps(bps: float) -> str:
    if bps >= 1e6:
        return f"{bps / 1e6:.1f} Mbit/s"
    return f"{bps / 1e3:.0f} kbit/s"


def _pct(share: float) -> str:
    return f"{100 * share:.0f}%"


class AutoWeights:
    """Turns estimates into applied values smoothly.

    Each decision proposes a value per link: its estimate; for a link without one, the value
    it already has (no evidence is no reason to move it), or if it has none -- or has only ever
    had a prior -- a prior: the mean of the known estimates, or 1.0 when none is known (all
    equal).  A new link takes its value at once, a vanished one is dropped; the others move
    only when some link's share would move by more than `threshold` and `hold_s` has passed
    since the last change -- 4 * hold_s if the move would undo the last change (A -> B -> A).
    Then all values are replaced by the proposal.
    """

    def __init__(self, *, hold_s: float = 30.0, threshold: float = 0.04, relative: float = 0.10) -> None:
        self.hold_s = hold_s
        self.threshold = threshold
        self.relative = relative
        self._applied: dict[str, float] = {}
        self._prior: set[str] = set()  # links whose applied value is a prior, not an estimate
        self._last_change: float | None = None
        self._before: dict[str, float] | None = None  # the values before the last change

    def applied(self) -> dict[str, float]:
        return dict(self._applied)

    def last_change(self) -> float | None:
        return self._last_change

    def decide(
        self, now: float, estimates: Mapping[str, float | None], fixed: Mapping[str, float] | None = None
    ) -> WeightDecision:
        """`fixed`: the values of the links with a configured weight (bps), which share the
        group with the auto links: shares are weighed over all of them, so an auto link
        beside fixed ones moves under the same thresholds and hold as among auto links."""
        fixed = dict(fixed or {})
        proposed, priors = self._propose(estimates)
        notes: list[str] = []
        for name in sorted(self._applied.keys() - estimates.keys()):
            del self._applied[name]
            notes.append(f"dropped {name}")
        common = list(self._applied)
        taken = [n for n in estimates if n not in self._applied]  # new links: their value at once
        notes += [f"added {n} at {self._describe(n, proposed[n], priors, proposed)}" for n in sorted(taken)]
        changed = bool(notes)

        if not common or len(common) + len(fixed) < 2:
            # no share among the old links to move: a lone link carries everything at any value,
            # so its value follows the estimate quietly (a link added later is weighed against it)
            taken += common
        else:
            before = {n: self._applied[n] for n in common}
            share = _moved({**proposed, **fixed}, {**before, **fixed}, self.threshold, self.relative)
            assert share is not None
            # the log names the cause: the link whose own value moved most, not the share it took
            name = max(common, key=lambda n: _ratio(proposed[n], self._applied[n]))
            # values that were all priors (1.0 each when nothing was known) are replaced by the
            # first estimates whatever the shares: else they would stay on another scale, and a
            # link added later at its estimate in bit/s would dwarf them
            first = set(common) <= self._prior and len(priors) < len(proposed)
            wait = "" if first else self._wait(now, {**proposed, **fixed}, fixed)
            if share <= 1.0 and not first:
                notes.append(
                    f"held: shares within {100 * self.threshold:.0f} points and {100 * self.relative:.0f} %"
                )
            elif wait:
                notes.append(f"held: {wait}")
            else:
                over = common + list(fixed)
                old = _shares({**before, **fixed}, over)[name]
                new = _shares({**proposed, **fixed}, over)[name]
                self._before = dict(self._applied)
                self._last_change = now
                taken = list(proposed)
                changed = True
                notes.append(
                    f"{name} {_pct(old)} -> {_pct(new)} of the links' capacity"
                    f" ({self._describe(name, proposed[name], priors, proposed)})"
                )
        for name in taken:
            self._applied[name] = proposed[name]
            if name in priors:
                self._prior.add(name)
            else:
                self._prior.discard(name)
        self._prior &= self._applied.keys()
        if changed and self._last_change is None and len(priors) < len(proposed):
            self._last_change = now  # the first weighting by evidence starts the hold
        return WeightDecision(values=dict(self._applied), changed=changed, reason="; ".join(notes))

    def _propose(self, estimates: Mapping[str, float | None]) -> tuple[dict[str, float], set[str]]:
        """Each link's value if it were up to the estimates alone, and the links given a prior."""
        known = [v for v in estimates.values() if v is not None]
        prior = sum(known) / len(known) if known else 1.0
        proposed: dict[str, float] = {}
        priors: set[str] = set()
        for name, bps in estimates.items():
            if bps is not None:
                proposed[name] = bps
            elif name in self._applied and name not in self._prior:
                proposed[name] = self._applied[name]  # no evidence is no reason to move
            else:
                proposed[name] = prior
                priors.add(name)
        return proposed, priors

    def _wait(self, now: float, proposed: dict[str, float], fixed: dict[str, float]) -> str:
        """Why a change must wait, or "" when it may happen now."""
        if self._last_change is None:
            return ""
        hold, why = self.hold_s, ""
        undo = (
            _moved(proposed, {**self._before, **fixed}, self.threshold, self.relative)
            if self._before is not None
            else None
        )
        if undo is not None and undo <= 1.0:
            hold, why = 4 * self.hold_s, ": it would undo the previous change"
        ago = now - self._last_change
        if ago >= hold:
            return ""
        return f"last change {ago:.0f} s ago (hold {hold:.0f} s{why})"

    @staticmethod
    def _describe(name: str, value: float, priors: set[str], proposed: dict[str, float]) -> str:
        if name not in priors:
            return _fmt_bps(value)
        if len(priors) == len(proposed):
            return "no estimate: equal"
        return "no estimate: the mean of the others"
