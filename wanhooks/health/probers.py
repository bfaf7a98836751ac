"""The daemon's probers, one per link and family the config probes: started when a link
appears, replaced when what they probe changes, and read for verdicts, round trips and
status.  All on the event loop."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

from ..model import Config, Observed
from ..observe.log_format import about, link_context
from ..plan.planner import probes_wanted
from ..plan.verdicts import HealthDown, HealthVerdicts
from . import machine
from .machine import ProbeKey
from .probes import TRANSPORTS, LinkProber, RoundTrip, Transports

log = logging.getLogger("wanhooks")


class Probers:
    def __init__(
        self,
        on_change: Callable[[LinkProber], None],
        on_failure: Callable[[LinkProber, BaseException], None],
        transports: Transports = TRANSPORTS,
    ) -> None:
        self._on_change = on_change  # a prober's health changed state
        self._transports = transports  # sockets; a test's scripted answers
        self._on_failure = on_failure  # a prober's loop ended by a bug
        self.by_key: dict[ProbeKey, LinkProber] = {}
        self.held: list[LinkProber] = []  # started by the round in progress: released after it
        self.trusted: set[tuple[str, int]] = set()  # start-up trust (service/startup.py), first round only

    def __iter__(self) -> Iterator[LinkProber]:
        return iter(list(self.by_key.values()))

    def sync(self, config: Config, observed: Observed) -> None:
        """Start the probers the config wants on the links present, stop the others.  A new
        one is held (sends nothing) until release(): the round that planned it is still
        writing the link's table and rule."""
        wanted = set(probes_wanted(config, observed))
        carried = {(k.link, k.family) for k, p in self.by_key.items() if p.health.carries_traffic()}
        for key in [k for k in self.by_key if k not in wanted]:
            self.by_key.pop(key).stop()
        for key in wanted - set(self.by_key):
            # trusted: in the kernel's group when the daemon started, or judged up by the
            # prober this one replaces (a reload, a new address): no needless exit
            trusted = (key.link, key.family) in carried | self.trusted
            prober = self._start(key, trusted)
            if prober is not None:
                self.by_key[key] = prober
        self.trusted = set()  # only the first round trusts the kernel's group

    def _start(self, key: ProbeKey, trusted: bool) -> LinkProber | None:
        prober = LinkProber(
            key, self._on_change, trusted=trusted, clock=time.monotonic, transports=self._transports,
            on_failure=self._on_failure,
        )  # fmt: skip
        try:
            with link_context(key.link, key.family):  # its task logs as the link's
                prober.start(asyncio.get_running_loop(), held=True)
        except OSError as exc:
            log.warning(
                "health: cannot probe %s IPv%d: %s", key.link, key.family, exc.strerror or exc,
                extra=about(key.link, key.family),
            )  # fmt: skip
            return None
        self.held.append(prober)
        log.info(
            "health: probing %s IPv%d from %s: %s %s (%s)",
            key.link, key.family, key.source, ", ".join(str(t) for t in key.params.targets), _pace_text(key),
            "trusted" if trusted else "kept out until it answers",
            extra=about(key.link, key.family),
        )  # fmt: skip
        return prober

    def release(self) -> None:
        """The round that started the held probers is done: they may send."""
        for prober in self.held:
            prober.release()
        self.held = []

    def stop(self) -> None:
        for prober in self.by_key.values():
            prober.stop()

    def verdicts(self) -> HealthVerdicts:
        down = {}
        for key, prober in self.by_key.items():
            if not prober.health.carries_traffic():
                last = prober.health.last
                down[(key.link, key.family)] = HealthDown(prober.health.state, last.reason if last else "")
        return HealthVerdicts(down=down)

    def replies(self, link: str) -> list[RoundTrip]:
        """The link's recent probe replies, both families' (each target is measured against its
        own lowest round trip, so an IPv6 target's path is not read as queueing on IPv4's)."""
        found = [r for key, prober in self.by_key.items() if key.link == link for r in prober.replies]
        return sorted(found, key=lambda r: r[0])

    def carries_traffic(self, link: str) -> bool:
        """Whether the link's probes say it is up (or it is not probed at all)."""
        probed = [p for k, p in self.by_key.items() if k.link == link]
        return not probed or any(p.health.carries_traffic() for p in probed)

    def status(
        self, passive_suspicions: Callable[[str], int | None]
    ) -> dict[tuple[str, int], dict[str, Any]]:
        """Each prober's part of `status`, by (link, family)."""
        return {(key.link, key.family): _doc(p, passive_suspicions) for key, p in self.by_key.items()}


def _pace_text(key: ProbeKey) -> str:
    """How the prober will pace itself, for the log."""
    p = key.params
    if not p.adaptive:
        return f"every {p.interval:g} s"
    idle = f"one every {p.heartbeat:g} s in turn while idle"
    return f"{idle}, none while traffic is heard, all every {p.interval:g} s when checked"


def _doc(prober: LinkProber, passive_suspicions: Callable[[str], int | None]) -> dict[str, Any]:
    h, params, now = prober.health, prober.key.params, time.monotonic()
    measured = machine.window_loss(h, now)
    # what proved the link alive last: traffic heard from beyond it within a heartbeat, or probes
    heard = machine.heard_lately(h, now)
    spent = (h.sent + h.received) * machine.PROBE_BYTES[(params.kind, prober.key.family)] // 2
    elapsed = max(now - prober.started, 1.0)
    return {
        "state": h.state.value,
        "since_s": round(now - h.since, 1),
        "rtt_ms": round(h.rtt * 1000, 1) if h.rtt is not None else None,
        "loss": round(measured[0], 3) if measured is not None else None,
        "loss_window_s": params.loss_window,
        "kind": params.kind.value,
        "targets": [str(t) for t in params.targets],
        "interval_s": round(machine.round_gap(h, now), 3),
        "pace": machine.pace(h).value,
        "alive_by": "passive" if heard else ("probe" if h.last_reply else None),
        "probes_sent": h.sent,
        "probe_bytes": spent,
        "probe_bytes_per_day": round(spent * 86400 / elapsed),
        "set_aside": sorted(str(t) for t, until in h.set_aside.items() if until > now),
        "suspected": h.suspected_since is not None,
        "passive_suspicions": passive_suspicions(prober.key.link),
        "last_change": h.last.reason if h.last else None,
    }
