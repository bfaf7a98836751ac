"""`weight: auto` in the daemon: every second, what each auto link carried and how its
round trip stood, into its estimator (health/capacity.py); the estimates into weights.

The round trip is the health probes' own (no extra traffic, nothing sent on a
metered link that would not be sent anyway).  Probes go to several targets
whose distances differ, so mixing them would read one target's longer path as
queueing: each target's replies are measured against that target's own
lowest round trip, and the estimator sees the median excess over the second,
added to the reference target's lowest (the same idle round trip whichever
target answers).

A link is weighed by its capacity: the larger of its download and upload
estimates (a line is usually full in the direction it is bought for: an ADSL
line's download, a backup uplink's upload; both are measured as they fill).
Which value (decided here, applied by AutoWeights' hysteresis, turned into
kernel weights by plan/weights.py):

* a link whose larger estimate was measured saturated, or is its `capacity:`
  hint: its capacity;
* a link not yet measured: what it carried (a lower bound), but never less than
  the mean of the measured links -- an unmeasured link is assumed as good as
  the others until it proves otherwise, because a link weighed too low gets
  too few connections to ever show its capacity (the "stuck at the minimum"
  trap), while one weighed too high fills, saturates, and is measured;
* nothing measured anywhere: no value; plan/weights.py gives every auto link the
  same (or its hint).

Fixed-weight links beside them count as their weight in Mbit/s (plan/weights.py)
when AutoWeights judges how far a change would move the shares.

A link that vanishes (a ppp or wwan device re-created) keeps what was learnt of
it for KEEP_GONE_S.  A link that fails or vanishes forgets its idle round trip:
it may come back on another path (an LTE reattach).  It learns it again from
the probes that judge its return -- every target every 0.1 s while no traffic
is routed to it yet -- not from the first seconds after its return, which may
already be loaded: a baseline learnt under load reads every queue as the idle
round trip, and the link is never seen full.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..model import Capacity, Config, IPAddress, LinkCounters
from ..plan.planner import match_entry
from ..plan.weights import FIXED_UNIT_BPS
from .capacity import AutoWeights, DirectionEstimate, Estimate, LinkEstimator, Observation, WeightDecision
from .probes import RoundTrip

log = logging.getLogger("wanhooks")

SAMPLE_S = 1.0  # one observation a second: a saturated second is a measurement
# What was learnt of a link that vanished is kept this long: a modem re-created after a
# reset is the same line, not a new one to learn from nothing.
KEEP_GONE_S = 600.0


@dataclass
class _Link:
    estimator: LinkEstimator
    hint: Capacity | None
    floors: dict[IPAddress, float] = field(default_factory=dict)  # each target's lowest round trip
    reference: IPAddress | None = None  # the target whose floor is the idle round trip
    seen_until: float = 0.0  # replies up to here are read
    healthy: bool = True  # as of the last tick
    gone_since: float | None = None  # not among the links since then

    def forget_path(self) -> None:
        """Failed or gone: the idle round trip is learnt again (module docstring)."""
        self.floors.clear()
        self.reference = None
        self.estimator.forget_baseline()

    def measured(self) -> bool:
        """Whether its capacity -- the larger direction's estimate -- is a capacity, not a
        lower bound: measured full, or the admin's hint."""
        return _larger(self.estimator.estimate()).evidence in ("saturated", "hint")


class CapacityWatch:
    def __init__(self) -> None:
        self.links: dict[str, _Link] = {}
        self.weights = AutoWeights()
        self.changes: list[tuple[float, str]] = []  # (when, why) of the last few weight changes

    def tick(
        self,
        now: float,
        config: Config,
        counters: Mapping[str, LinkCounters],
        replies: Callable[[str], Iterable[RoundTrip]],
        healthy: Callable[[str], bool],
    ) -> WeightDecision | None:
        """Observe every auto link once; the decision when the applied values changed."""
        present = set()
        fixed: dict[str, float] = {}
        for name, count in counters.items():
            entry = match_entry(config, name)
            if entry is None:
                continue
            if not entry.auto_weight:
                fixed[name] = entry.weight * FIXED_UNIT_BPS
                continue
            present.add(name)
            hint = entry.capacity
            link = self.links.get(name)
            if link is None or link.hint != hint:  # new, or its hint was edited: start again
                link = self.links[name] = _Link(LinkEstimator(hint), hint)
            up = healthy(name)
            if link.healthy and not up:
                link.forget_path()
            link.gone_since, link.healthy = None, up
            rtt = self._round_trip(link, replies(name))
            link.estimator.observe(Observation(now, count.rx_bytes, count.tx_bytes, rtt, up))
        for name, link in list(self.links.items()):
            if name in present:
                continue
            if link.gone_since is None:
                link.gone_since = now
                link.forget_path()
            if now - link.gone_since > KEEP_GONE_S:
                del self.links[name]
        decision = self.weights.decide(now, self.wanted(), fixed)
        if not decision.changed:
            return None
        self.changes = [*self.changes, (now, decision.reason)][-5:]
        return decision

    def _round_trip(self, link: _Link, replies: Iterable[RoundTrip]) -> float | None:
        """This second's round trip as the reference target would show it (module docstring)."""
        by_target: dict[IPAddress, list[float]] = {}
        for when, target, rtt in replies:
            if when > link.seen_until:
                by_target.setdefault(target, []).append(rtt)
                link.seen_until = max(link.seen_until, when)
        if not by_target:
            return None
        excess = []
        for target, rtts in by_target.items():
            floor = min(link.floors.get(target, rtts[0]), *rtts)
            link.floors[target] = floor
            excess.append(statistics.median(rtts) - floor)
        if link.reference not in link.floors:
            link.reference = min(by_target, key=lambda t: link.floors[t])
        return link.floors[link.reference] + statistics.median(excess)

    def wanted(self) -> dict[str, float]:
        """The value each auto link should be weighed by now, where one is known (docstring)."""
        here = {name: link for name, link in self.links.items() if link.gone_since is None}
        capacity = {name: _larger(link.estimator.estimate()).bps or 0.0 for name, link in here.items()}
        measured = {name: bps for name, bps in capacity.items() if here[name].measured() and bps}
        if not measured:
            return {}
        prior = statistics.fmean(measured.values())
        return {name: measured.get(name, max(bps, prior)) for name, bps in capacity.items()}

    def capacities(self) -> dict[str, float]:
        """What plan() weighs the auto links by (bits a second)."""
        return self.weights.applied()

    def status(self, name: str, now: float) -> dict[str, Any] | None:
        """The `status` view of one auto link: its estimate, evidence, age and why."""
        link = self.links.get(name)
        if link is None or link.gone_since is not None:
            return None
        est: Estimate = link.estimator.estimate()

        def direction(d: DirectionEstimate) -> dict[str, Any]:
            return {
                "bps": round(d.bps) if d.bps is not None else None,
                "evidence": d.evidence,
                "age_s": round(now - d.at, 1) if d.at is not None else None,
            }

        applied = self.weights.applied().get(name)
        return {
            "down": direction(est.down),
            "up": direction(est.up),
            "measured": link.measured(),
            "applied_bps": round(applied) if applied is not None else None,
            "baseline_rtt_ms": round(est.baseline_rtt * 1000, 1) if est.baseline_rtt is not None else None,
            "delay_ms": round(est.delay * 1000, 1) if est.delay is not None else None,
            "saturated": est.saturated,
            "why": self._why(name, link, applied),
        }

    def _why(self, name: str, link: _Link, applied: float | None) -> str:
        both = link.estimator.estimate()
        est = _larger(both)
        way = "download" if est is both.down else "upload"
        if applied is None:
            return "no link measured yet: weighed like the other auto links"
        if not link.measured():
            return (
                f"not seen saturated yet: weighed as {_mbit(applied)} "
                "(what it carried, at least the measured links' mean)"
            )
        if est.evidence == "hint":
            return f"its capacity hint, {_mbit(applied)}: no measurement yet"
        return f"{way} capacity {_mbit(applied)} ({est.evidence})"


def _larger(est: Estimate) -> DirectionEstimate:
    """The direction whose estimate is a link's capacity: the larger (download on a tie)."""
    return est.down if (est.down.bps or 0.0) >= (est.up.bps or 0.0) else est.up


def _mbit(bps: float) -> str:
    return f"{bps / 1e6:.1f} Mbit/s"
