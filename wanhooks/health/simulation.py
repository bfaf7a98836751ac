"""A prober in simulated time: the health machine fed as health/probes.py and the passive
watch feed it, for days of probing in seconds (tests/test_health.py, bench/detection.py)."""

from __future__ import annotations

import heapq
import ipaddress
import math
import random
from collections.abc import Callable

from .. import constants as c
from ..plan.verdicts import HealthState
from . import machine as health
from . import passive

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


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
    traffic: float | None = None,
    answers: Callable[[Address], bool] | None = None,
) -> tuple[health.Health, list[health.Transition]]:
    """The prober's loop in simulated time: rounds when the machine asks for them, replies in
    order, a look when the machine wants one.  Each echo (or packet) is lost with `loss`
    (request or reply), or always when dead; `answers` may refuse some (a rate limiter).
    traffic: a packet every so many seconds from the link's users, each answered like an echo,
    counted and sampled by the passive watch at its pace, as the daemon does."""
    rng = random.Random(seed)
    transitions: list[health.Transition] = []
    replies: list[tuple[float, int, Address, float]] = []  # heap: (at, order, target, rtt)
    arrivals: list[float] = []  # heap: the traffic's answers
    order = 0
    tx = rx = 0
    watch = passive.start(passive.Packets(0, 0, 0, 0), start)
    next_packet = start if traffic else math.inf
    next_sample = start + c.PASSIVE_PERIOD_S if traffic else math.inf
    end = start + seconds

    def dead(at: float) -> bool:
        return (dead_after is not None and at >= dead_after) or any(
            a <= at < b for a, b in dead_windows or []
        )

    t = start
    while True:
        soonest = min(
            max(health.next_round(h), t),
            max(health.next_look(h, t), t),
            replies[0][0] if replies else math.inf,
            arrivals[0] if arrivals else math.inf,
            next_packet,
            next_sample,
        )
        if soonest >= end:
            break
        t, before = soonest, h.last
        while replies and replies[0][0] <= t:
            at, _, target, r = heapq.heappop(replies)
            h = health.replied(h, target, r, at)
        while arrivals and arrivals[0] <= t:
            heapq.heappop(arrivals)
            rx += 1
        if next_packet <= t:
            tx += 1
            if not dead(t) and rng.random() >= loss:
                heapq.heappush(arrivals, t + rng.uniform(*rtt))
            next_packet += traffic or math.inf
        if next_sample <= t:
            watch, fire = passive.observe(
                watch, passive.Packets(tx, rx, 0, 0), t, rtt=h.rtt,
                bursts_per_day=health.bursts_per_day(h.params, 4),
                armed=h.state is HealthState.UP and h.suspected_since is None,
            )  # fmt: skip
            if watch.last_heard == t:
                h = health.heard(h, t)
            if fire:
                h = health.suspect(h, t)
            # the watch's own pace (health/passive_watch.py)
            if watch.unanswered_since is not None:
                next_sample += c.PASSIVE_PERIOD_S
            else:
                next_sample += c.PASSIVE_BUSY_PERIOD_S if watch.moved else c.PASSIVE_IDLE_PERIOD_S
        if t >= health.next_round(h):
            h, targets = health.send_round(h, t)
            for target in targets:
                if not dead(t) and rng.random() >= loss and (answers is None or answers(target)):
                    r = rng.uniform(*rtt)
                    order += 1
                    heapq.heappush(replies, (t + r, order, target, r))
        h = health.evaluate(h, t)
        if h.last is not before and h.last is not None:
            transitions.append(h.last)
    return h, transitions
