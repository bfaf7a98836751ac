"""Drives the passive watch (health/passive.py): samples counts, tells probers what it saw.

Every 0.05-0.2 s (passive.py's periods: soonest while traffic waits for an answer), when
some prober listens:
  adaptive probers  their link and family's evidence counts (one netlink dump of
                    wanhooks' nftables counters, tens of microseconds): traffic
                    heard from beyond tells the prober the link is alive (no
                    heartbeat needed), traffic sent and unanswered suspects it;
  the rest          the links' raw packet counters (one rtnetlink dump, ~0.1 ms),
                    for steady budgeted probers and adaptive ones without evidence
                    (no nf_tables): unanswered traffic suspects every such prober
                    of the link (both families: raw counters cannot tell them apart).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from .. import constants as c
from ..model import LinkCounters
from ..plan.verdicts import HealthState
from . import machine as health
from . import passive
from .machine import ProbeKey
from .probes import LinkProber

log = logging.getLogger("wanhooks.passive")

Evidence = dict[tuple[str, int], tuple[int, int]]  # (link, family) -> (packets heard, sent)
RAW = 0  # the family of a watch on raw counters: both families at once


class PassiveWatcher:
    def __init__(
        self,
        probers: Callable[[], Mapping[ProbeKey, LinkProber]],
        counters: Callable[[], dict[str, LinkCounters]],
        evidence: Callable[[], Evidence],
    ) -> None:
        self._probers = probers
        self._counters = counters
        self._evidence = evidence
        self.watches: dict[tuple[str, int], passive.TrafficWatch] = {}  # (link, family or RAW)
        # whose own packets each watch subtracts: another set (a prober started, replaced or
        # stopped) moves the count of others' packets at a stroke, so the watch starts again
        self._listening: dict[tuple[str, int], tuple[LinkProber, ...]] = {}

    async def run(self) -> None:
        period = c.PASSIVE_PERIOD_S
        while True:
            await asyncio.sleep(period)
            try:
                period = self.step(time.monotonic())
            except OSError as exc:  # netlink trouble: the probes still judge on their own
                log.debug("passive watch: %s", exc)

    def suspicions(self, link: str) -> int | None:
        """How many times the watch has suspected the link (None: not watched)."""
        counts = [w.suspicions for (name, _family), w in self.watches.items() if name == link]
        return sum(counts) if counts else None

    def step(self, now: float) -> float:
        """One sample of every watched link; when the next should come (passive.py: soon
        while traffic waits for an answer, later while it flows both ways or none does)."""
        probers = list(self._probers().values())
        adaptive = [p for p in probers if p.key.params.adaptive]
        evidence = self._read_evidence() if adaptive else {}
        watched: set[tuple[str, int]] = set()
        raw: dict[str, list[LinkProber]] = {}
        for prober in adaptive:
            link, family = prober.key.link, prober.key.family
            seen = evidence.get((link, family))
            if seen is None:
                raw.setdefault(link, []).append(prober)
                continue
            watched.add((link, family))
            heard, sent = seen
            sample = passive.Packets(
                tx=sent, rx=heard, own_tx=prober.own_tx, own_rx=prober.own_rx, in_flight=prober.in_flight()
            )
            self._observe((link, family), [prober], sample, now, evidence=True)
        for prober in probers:
            if not prober.key.params.adaptive and prober.key.params.budgeted and prober.key.params.passive:
                raw.setdefault(prober.key.link, []).append(prober)
        if raw:
            counters = self._counters()
            for link, listening in raw.items():
                seen_raw = counters.get(link)
                if seen_raw is None:
                    continue
                watched.add((link, RAW))
                sample = passive.Packets(
                    tx=seen_raw.tx_packets,
                    rx=seen_raw.rx_packets,
                    own_tx=sum(p.own_tx for p in listening),
                    own_rx=sum(p.own_rx for p in listening),
                    in_flight=sum(p.in_flight() for p in listening),
                )
                self._observe((link, RAW), listening, sample, now, evidence=False)
        for gone in set(self.watches) - watched:
            del self.watches[gone]
            self._listening.pop(gone, None)
        if any(w.unanswered_since is not None for w in self.watches.values()):
            return c.PASSIVE_PERIOD_S
        if any(w.moved for w in self.watches.values()):
            return c.PASSIVE_BUSY_PERIOD_S
        return c.PASSIVE_IDLE_PERIOD_S

    def _read_evidence(self) -> Evidence:
        try:
            return self._evidence()
        except OSError as exc:  # no nf_tables, or the table is being rewritten: raw counters
            log.debug("passive watch: no evidence counts: %s", exc)
            return {}

    def _observe(
        self,
        key: tuple[str, int],
        listening: list[LinkProber],
        sample: passive.Packets,
        now: float,
        *,
        evidence: bool,
    ) -> None:
        watch = self.watches.get(key)
        if watch is None or self._listening.get(key) != tuple(listening):
            self.watches[key] = passive.start(sample, now)
            self._listening[key] = tuple(listening)
            return
        rtt = max((p.health.rtt or 0.0) for p in listening)
        per_day = min(health.bursts_per_day(p.key.params, p.key.family) for p in listening)
        waiting = watch.unanswered, watch.unanswered_since
        armed = any(p.health.state is HealthState.UP and p.health.suspected_since is None for p in listening)
        new, fire = passive.observe(watch, sample, now, rtt=rtt, bursts_per_day=per_day, armed=armed)
        self.watches[key] = new
        if evidence and new.last_heard == now:
            for prober in listening:
                prober.heard()
        if fire:
            family = "" if key[1] == RAW else f" IPv{key[1]}"
            log.info(
                "health: %s%s suspected: %d packets sent, none %s for %.2f s; probing fast",
                key[0], family, waiting[0] + (sample.other_tx - watch.last.other_tx),
                "heard from beyond" if evidence else "received", now - (waiting[1] or now),
            )  # fmt: skip
            for prober in listening:
                prober.suspect()
