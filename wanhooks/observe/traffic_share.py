"""Each link's traffic over the last minute, from its kernel byte counters (pure).

The daemon samples every link's counters every few seconds (constants.TRAFFIC_SAMPLE_S)
and keeps a minute of samples; `status` compares each link's bytes over that
window with the others': the share it really carried, next to the share its
weight asks for.  Samples are matched by ifindex, not name: a renamed device
keeps its history, and a re-created one (a new ifindex) counts from its
creation, inside the window.  Each counter is checked on its own: one that
went backwards (a driver reset) counts from zero.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from ..model import LinkCounters


@dataclass(frozen=True)
class CounterSnapshot:
    at: float  # time.monotonic()
    counters: dict[str, LinkCounters]  # by link name


@dataclass(frozen=True)
class Rate:
    rx_bps: float  # bits per second received over the window
    tx_bps: float
    share: float | None  # of all sampled links' bytes (rx + tx); None when none moved
    window_s: float


class TrafficWindow:
    def __init__(self, span_s: float, every_s: float) -> None:
        self.span_s = span_s
        self.every_s = every_s
        self._samples: deque[CounterSnapshot] = deque()

    def add(self, sample: CounterSnapshot) -> None:
        """Keep `sample` if the newest kept one is at least `every_s` old; drop what is older
        than the span, except the one sample that still reaches back to the span's start."""
        if self._samples and sample.at - self._samples[-1].at < self.every_s:
            return
        self._samples.append(sample)
        while len(self._samples) > 1 and sample.at - self._samples[1].at >= self.span_s:
            self._samples.popleft()

    def rates(self, now: CounterSnapshot) -> dict[str, Rate]:
        """Per link in `now`: its rates and share between the oldest kept sample and `now`."""
        if not self._samples or now.at - self._samples[0].at <= 0:
            return {}
        start = self._samples[0]
        window = now.at - start.at
        earlier = {n.index: n for n in start.counters.values()}
        moved: dict[str, tuple[int, int]] = {}
        for name, counters in now.counters.items():
            before = earlier.get(counters.index)
            rx, tx = counters.rx_bytes, counters.tx_bytes
            if before is not None:
                rx -= before.rx_bytes if rx >= before.rx_bytes else 0
                tx -= before.tx_bytes if tx >= before.tx_bytes else 0
            moved[name] = (rx, tx)
        total = sum(rx + tx for rx, tx in moved.values())
        return {
            name: Rate(
                rx_bps=8 * rx / window,
                tx_bps=8 * tx / window,
                share=(rx + tx) / total if total else None,
                window_s=window,
            )
            for name, (rx, tx) in moved.items()
        }
