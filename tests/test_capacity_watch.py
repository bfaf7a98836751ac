"""health/capacity_watch.py: the daemon's side of weight: auto, fed synthetic seconds (no root)."""

from __future__ import annotations

import ipaddress

from wanhooks.health.capacity_watch import CapacityWatch
from wanhooks.health.probes import RoundTrip
from wanhooks.model import Config, LinkConfig, LinkCounters

MBIT = 1e6
NEAR, FAR = ipaddress.ip_address("203.0.113.10"), ipaddress.ip_address("203.0.113.11")
CONFIG = Config(links=(LinkConfig("a", auto_weight=True), LinkConfig("b", auto_weight=True), LinkConfig("c")))


class World:
    """Three links' counters and probe replies, one second at a time."""

    def __init__(self) -> None:
        self.t = 100.0
        self.bytes = {name: [0, 0] for name in "abc"}
        self.queue = {name: 0.0 for name in "abc"}  # queueing delay on each link now
        self.down: set[str] = set()  # links whose probes say they are not carrying traffic
        self.watch = CapacityWatch()

    def second(self, rates: dict[str, tuple[float, float]]) -> None:
        self.t += 1.0
        for name, (down, up) in rates.items():
            self.bytes[name][0] += round(down / 8)
            self.bytes[name][1] += round(up / 8)
        counters = {
            n: LinkCounters(0, 0, rx, tx, index=i) for i, (n, (rx, tx)) in enumerate(self.bytes.items())
        }
        self.watch.tick(self.t, CONFIG, counters, self.replies, lambda name: name not in self.down)

    def replies(self, name: str) -> list[RoundTrip]:
        """Ten replies a second from each target: NEAR 10 ms away, FAR 30 ms, plus the queue."""
        out = []
        for k in range(10):
            at = self.t - 1 + (k + 0.5) / 10
            out += [(at, NEAR, 0.010 + self.queue[name]), (at + 0.01, FAR, 0.030 + self.queue[name])]
        return out


def test_two_targets_at_different_distances_are_not_read_as_queueing() -> None:
    world = World()
    for _ in range(20):
        world.second({"a": (8 * MBIT, 1 * MBIT), "b": (0, 0)})
    status = world.watch.status("a", world.t)
    assert status is not None
    assert status["baseline_rtt_ms"] == 10.0 and status["delay_ms"] == 0.0 and not status["saturated"]
    assert status["down"]["evidence"] == "carried" and not status["measured"]
    assert world.watch.capacities() == {}  # nothing measured yet: plan/weights.py weighs them alike
    assert world.watch.status("c", world.t) is None  # a fixed link is not weighed


def test_a_saturated_link_is_measured_and_an_unmeasured_one_is_assumed_as_good() -> None:
    world = World()
    for _ in range(5):
        world.second({"a": (0, 0), "b": (0, 0)})
    world.queue["a"] = 0.040  # a's shaper queues: its round trip rises 40 ms at 5 Mbit/s
    for _ in range(5):
        world.second({"a": (5 * MBIT, 1 * MBIT), "b": (2 * MBIT, 0.2 * MBIT)})
    status = world.watch.status("a", world.t)
    assert status is not None and status["saturated"] and status["measured"]
    assert world.watch.capacities() == {"a": 5 * MBIT, "b": 5 * MBIT}  # b carried 2: not less than a
    assert "saturated" in world.watch.changes[-1][1] or "added" in world.watch.changes[-1][1]
    world.queue["b"] = 0.040
    for _ in range(40):  # b fills at 20 Mbit/s; the change waits for the hold (30 s)
        world.second({"a": (5 * MBIT, 1 * MBIT), "b": (20 * MBIT, 2 * MBIT)})
    assert world.watch.capacities() == {"a": 5 * MBIT, "b": 20 * MBIT}
    changes = len(world.watch.changes)
    for _ in range(300):  # steady: nothing moves
        world.second({"a": (5 * MBIT, 1 * MBIT), "b": (20 * MBIT, 2 * MBIT)})
    world.queue = {name: 0.0 for name in "abc"}
    for _ in range(300):  # idle: no traffic is not no capacity
        world.second({"a": (0, 0), "b": (0, 0)})
    assert len(world.watch.changes) == changes
    assert world.watch.capacities() == {"a": 5 * MBIT, "b": 20 * MBIT}


def test_a_link_full_one_way_only_is_no_measured_capacity() -> None:
    """An ADSL line whose upload fills at 1 Mbit/s while its download carried 3 has a
    capacity of at least 3 (a lower bound): it counts as at least the measured links' mean."""
    world = World()
    for _ in range(5):
        world.second({"a": (0, 0), "b": (0, 0)})
    world.queue = {"a": 0.040, "b": 0.040, "c": 0.0}
    for _ in range(10):  # b fills its download at 20; a its upload at 1 (a backup)
        world.second({"a": (0.05 * MBIT, 1 * MBIT), "b": (20 * MBIT, 2 * MBIT)})
    world.queue["a"] = 0.0
    for _ in range(40):  # then a downloads 3 without a queue (a lower bound), past the hold
        world.second({"a": (3 * MBIT, 0.1 * MBIT), "b": (20 * MBIT, 2 * MBIT)})
    a = world.watch.status("a", world.t)
    assert a is not None and a["up"]["evidence"] == "saturated" and a["down"]["evidence"] != "saturated"
    assert not a["measured"]
    assert world.watch.capacities()["a"] >= 20 * MBIT  # at least b's, the measured mean


def test_a_vanished_link_keeps_what_was_learnt_and_relearns_its_idle_round_trip() -> None:
    world = World()
    for _ in range(5):
        world.second({"a": (0, 0), "b": (0, 0)})
    world.queue["a"] = world.queue["b"] = 0.040
    for _ in range(40):
        world.second({"a": (5 * MBIT, 1 * MBIT), "b": (20 * MBIT, 2 * MBIT)})
    assert world.watch.capacities() == {"a": 5 * MBIT, "b": 20 * MBIT}
    saved = world.bytes.pop("a")  # a's modem is re-created: gone for a minute
    world.queue["a"] = 0.0
    for _ in range(60):
        world.second({"b": (20 * MBIT, 2 * MBIT)})
    assert world.watch.status("a", world.t) is None and "a" not in world.watch.capacities()
    world.bytes["a"] = [0, 0]  # back, counters from zero, on a path 25 ms longer
    world.queue["a"] = 0.025
    world.second({"a": (0, 0), "b": (20 * MBIT, 2 * MBIT)})
    world.second({"a": (0, 0), "b": (20 * MBIT, 2 * MBIT)})
    a = world.watch.status("a", world.t)
    assert a is not None and a["down"]["bps"] == 5 * MBIT and a["measured"]  # what was learnt
    assert a["baseline_rtt_ms"] == 35.0 and a["delay_ms"] == 0.0  # the longer path is idle
    assert world.watch.capacities()["a"] == 5 * MBIT
    assert saved != [0, 0]


def test_a_link_loaded_as_soon_as_it_returns_is_measured_against_its_idle_round_trip() -> None:
    """A failed link forgets its idle round trip (it may return on another path) and learns
    it from the probes that judge its return, before traffic comes back to it: learnt from
    its first healthy, already loaded, seconds it would read the queue as idle for good."""
    world = World()
    for _ in range(5):
        world.second({"a": (0, 0), "b": (0, 0)})
    world.down.add("a")  # a fails ...
    world.queue["a"] = 0.020  # ... and comes back on a path 20 ms longer
    for _ in range(3):  # recovering: probed, idle, not yet in use
        world.second({"a": (0, 0), "b": (0, 0)})
    world.down.discard("a")
    world.queue["a"] = 0.020 + 0.040  # in use at once, and full: 40 ms of queue at 5 Mbit/s
    for _ in range(10):
        world.second({"a": (5 * MBIT, 0.2 * MBIT), "b": (0, 0)})
    a = world.watch.status("a", world.t)
    assert a is not None
    assert a["baseline_rtt_ms"] == 30.0 and a["delay_ms"] == 40.0 and a["saturated"]
    assert a["down"]["evidence"] == "saturated" and a["down"]["bps"] == 5 * MBIT
