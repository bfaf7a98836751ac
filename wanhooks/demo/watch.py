"""What the demo watches while its story runs: each link's throughput and the balance group.

A Timeline is the record both the live view and the chart read: throughput
samples (from the router's own counters, every SAMPLE_S), the group's
members each time the kernel changes it (from `ip monitor nexthop`: the
moment, not a poll), and the story's events.  Everything is read from inside
the lab's router namespace with `ip`; nothing here changes the kernel.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from .. import constants as c
from ..lab import Lab, LabError

SAMPLE_S = 0.5  # throughput sampling: fine enough for the chart, cheap (one `ip` per sample)


@dataclass
class Timeline:
    links: tuple[str, ...]
    t0: float = field(default_factory=time.monotonic)
    phase: str = ""
    samples: list[tuple[float, dict[str, float]]] = field(default_factory=list)  # t, Mbit/s sent
    groups: list[tuple[float, frozenset[str]]] = field(default_factory=list)  # t, IPv4 members
    weights: list[tuple[float, dict[str, int]]] = field(default_factory=list)  # t, each member's weight
    events: list[tuple[float, str]] = field(default_factory=list)  # t, what the story did or saw
    lock: threading.Lock = field(default_factory=threading.Lock)

    def now(self) -> float:
        return time.monotonic() - self.t0

    def mark(self, text: str) -> float:
        at = self.now()
        with self.lock:
            self.events.append((at, text))
        return at

    def members(self) -> frozenset[str]:
        with self.lock:
            return self.groups[-1][1] if self.groups else frozenset()

    def shares(self) -> dict[str, float]:
        """Each member's part of the group's weights now (what new connections are sent by)."""
        with self.lock:
            weights = self.weights[-1][1] if self.weights else {}
        total = sum(weights.values())
        return {name: w / total for name, w in weights.items()} if total else {}

    def latest(self) -> dict[str, float]:
        with self.lock:
            return dict(self.samples[-1][1]) if self.samples else {}

    def mean(self, start: float, end: float) -> dict[str, float]:
        """Each link's mean Mbit/s over the samples in [start, end]."""
        with self.lock:
            window = [rates for t, rates in self.samples if start <= t <= end]
        if not window:
            return {}
        return {name: sum(r.get(name, 0.0) for r in window) / len(window) for name in self.links}


class Recorder:
    """Two threads filling a Timeline until stop(): a counter sampler and a group monitor."""

    def __init__(self, lab: Lab, timeline: Timeline) -> None:
        self.lab = lab
        self.timeline = timeline
        self._stop = threading.Event()
        self._monitor: subprocess.Popen[str] | None = None
        self.troubles: set[str] = set()
        self._threads = [
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._watch_group, daemon=True),
        ]

    def start(self) -> None:
        # the monitor starts here, not in its thread: stop() then always finds it to end it
        self._monitor = self.lab.popen(
            self.lab.router, ["ip", "monitor", "nexthop"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        self._record_group()
        for t in self._threads:
            t.start()

    def stop(self) -> None:
        self._stop.set()
        if self._monitor is not None and self._monitor.poll() is None:
            self._monitor.terminate()
            self._monitor.wait()
        for t in self._threads:
            if t.is_alive():
                t.join(timeout=5)

    def wait_for(self, want: Sequence[str], present: bool, after: float, timeout: float) -> float | None:
        """The moment (timeline seconds) of the first group change from `after` on that has
        every link of `want` in the group (present) or out of it; None if none came within
        `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self._stop.is_set():
            with self.timeline.lock:
                for at, members in self.timeline.groups:
                    if at >= after and all((name in members) == present for name in want):
                        return at
            time.sleep(0.01)
        return None

    # --- the threads ----------------------------------------------------------------

    def _counters(self) -> dict[str, int]:
        doc = json.loads(self.lab.ip(self.lab.router, "-s", "-j", "link", "show"))
        return {d["ifname"]: d["stats64"]["tx"]["bytes"] for d in doc if d["ifname"] in self.timeline.links}

    def _sample(self) -> None:
        last_t, last = time.monotonic(), self._counters()
        while not self._stop.wait(SAMPLE_S):
            try:
                t, now = time.monotonic(), self._counters()
            except (LabError, ValueError, KeyError) as exc:  # one lost sample, not the chart
                self._complain(f"sampling the counters: {exc}")
                continue
            rates = {
                name: max(0, now[name] - last.get(name, now[name])) * 8 / (t - last_t) / 1e6 for name in now
            }
            with self.timeline.lock:
                self.timeline.samples.append((t - self.timeline.t0, rates))
            last_t, last = t, now

    def _complain(self, text: str) -> None:
        """A watch thread's trouble goes on the timeline (the chart shows it), once per kind."""
        if text not in self.troubles:
            self.troubles.add(text)
            self.timeline.mark(f"demo: {text}")

    def _group(self) -> dict[str, int]:
        """The IPv4 group's members and their weights."""
        nexthops = {n["id"]: n for n in json.loads(self.lab.ip(self.lab.router, "-j", "nexthop", "show"))}
        group = nexthops.get(c.NH_GROUP_V4)
        if group is None:
            return {}
        return {nexthops[m["id"]]["dev"]: m.get("weight", 1) for m in group["group"] if m["id"] in nexthops}

    def _record_group(self) -> None:
        at = self.timeline.now()  # the notification's arrival, before the read that follows it
        weights = self._group()
        members = frozenset(weights)
        with self.timeline.lock:
            if not self.timeline.groups or self.timeline.groups[-1][1] != members:
                self.timeline.groups.append((at, members))
            if not self.timeline.weights or self.timeline.weights[-1][1] != weights:
                self.timeline.weights.append((at, weights))

    def _watch_group(self) -> None:
        """Each nexthop notification: read the group again (few: only when something changes)."""
        assert self._monitor is not None and self._monitor.stdout is not None
        for _line in self._monitor.stdout:
            if self._stop.is_set():
                break
            try:
                self._record_group()
            except (LabError, ValueError, KeyError) as exc:
                self._complain(f"reading the group: {exc}")
