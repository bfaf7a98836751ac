"""Drives the passive watch (health/passive.py): samples counters, tells probers to hurry.

Every PASSIVE_PERIOD it dumps the links' counters (one netlink dump, ~0.1 ms)
when some prober is budgeted and watched -- only then -- and suspects a link
whose traffic goes unanswered: every budgeted prober of that link (both
families: counters cannot tell them apart) probes fast and judges at once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from ..model import LinkCounters
from ..plan.verdicts import HealthState
from . import machine as health
from . import passive
from .machine import ProbeKey
from .probes import LinkProber

log = logging.getLogger("wanhooks.passive")


class PassiveWatcher:
    def __init__(
        self,
        probers: Callable[[], Mapping[ProbeKey, LinkProber]],
        counters: Callable[[], dict[str, LinkCounters]],
    ) -> None:
        self._probers = probers
        self._counters = counters
        self.watches: dict[str, passive.TrafficWatch] = {}

    async def run(self) -> None:
        while True:
            await asyncio.sleep(passive.PASSIVE_PERIOD)
            try:
                self.step(time.monotonic())
            except OSError as exc:  # netlink trouble: the probes still judge on their own
                log.debug("passive watch: %s", exc)

    def step(self, now: float) -> None:
        by_link: dict[str, list[LinkProber]] = {}
        for key, prober in self._probers().items():
            by_link.setdefault(key.link, []).append(prober)
        watched = {
            link: probers
            for link, probers in by_link.items()
            if any(p.key.params.budgeted and p.key.params.passive for p in probers)
        }
        for gone in set(self.watches) - set(watched):
            del self.watches[gone]
        if not watched:
            return
        counters = self._counters()
        for link, probers in watched.items():
            seen = counters.get(link)
            if seen is None:
                continue
            sample = passive.Packets(
                tx=seen.tx_packets,
                rx=seen.rx_packets,
                own_tx=sum(p.own_tx for p in probers),
                own_rx=sum(p.own_rx for p in probers),
            )
            watch = self.watches.get(link)
            if watch is None:
                self.watches[link] = passive.start(sample, now)
                continue
            budgeted = [p for p in probers if p.key.params.budgeted and p.key.params.passive]
            rtt = max((p.health.rtt or 0.0) for p in budgeted)
            per_day = min(health.bursts_per_day(p.key.params, p.key.family) for p in budgeted)
            waiting = watch.unanswered, watch.unanswered_since
            armed = any(
                p.health.state is HealthState.UP and p.health.suspected_since is None for p in budgeted
            )
            self.watches[link], fire = passive.observe(
                watch, sample, now, rtt=rtt, bursts_per_day=per_day, armed=armed
            )
            if fire:
                log.info(
                    "health: %s suspected: %d packets sent, none received for %.2f s; probing fast",
                    link, waiting[0] + (sample.other_tx - watch.last.other_tx), now - (waiting[1] or now),
                )  # fmt: skip
                for prober in budgeted:
                    prober.suspect()
