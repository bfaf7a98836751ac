"""The daemon's status document (observe/status_doc.py), built against the fake kernel (no
root): the plan's view, what only the daemon knows, and the counters the metrics read."""

from __future__ import annotations

import time

from fakes import lab_config, lab_kernel

from wanhooks import constants as c
from wanhooks.model import LinkCounters, Overrides
from wanhooks.observe.status_doc import StatusInputs, build_status
from wanhooks.observe.traffic_share import CounterSnapshot, TrafficWindow
from wanhooks.plan.verdicts import HealthDown, HealthState, HealthVerdicts
from wanhooks.reconcile.round import converge


def inputs(**kw: object) -> StatusInputs:
    given: dict[str, object] = dict(
        config=lab_config(), overrides=Overrides(), verdicts=HealthVerdicts(), manager=(), held=(),
        held_doc=[], health={}, link_states={}, capacities={}, weighing={}, weight_changes=[],
        rounds=7, events=42, tasks=9,
    )  # fmt: skip
    given.update(kw)
    return StatusInputs(**given)  # type: ignore[arg-type]


def test_the_document_joins_the_kernels_state_and_the_daemons_own() -> None:
    kernel = lab_kernel()
    converge(lab_config(), kernel, "/nonexistent")
    traffic = TrafficWindow(c.TRAFFIC_WINDOW_S, c.TRAFFIC_SAMPLE_S)
    now = time.monotonic()
    traffic.add(CounterSnapshot(now - 10, kernel.link_counters()))
    kernel.counters = {"w1": LinkCounters(10, 10, 3_000_000, 1_000_000, index=11)}
    since = now - 30
    doc = build_status(kernel, traffic, inputs(link_states={"w1": ("active", since, True)}), True)
    links = {link["name"]: link for link in doc["links"]}
    assert set(links) == {"w1", "w2", "w3"} and all(link["state"] == "active" for link in links.values())
    assert links["w1"]["since_s"] >= 30 and links["w1"]["since_start"] is True
    assert (links["w1"]["rx_bytes"], links["w1"]["tx_bytes"]) == (3_000_000, 1_000_000)  # for metrics
    assert links["w1"]["traffic"]["share"] == 1.0 and links["w2"]["traffic"]["share"] == 0.0
    assert (doc["daemon"]["rounds"], doc["daemon"]["events"], doc["daemon"]["tasks"]) == (7, 42, 9)


def test_a_failed_links_state_comes_from_the_daemons_verdict() -> None:
    kernel = lab_kernel()
    converge(lab_config(), kernel, "/nonexistent")
    dead = HealthVerdicts(down={("w2", 4): HealthDown(HealthState.DOWN, "no reply for 0.7 s")})
    doc = build_status(kernel, TrafficWindow(60, 5), inputs(verdicts=dead), False)
    w2 = next(link for link in doc["links"] if link["name"] == "w2")
    assert w2["ipv4"]["eligible"] is False and w2["ipv4"]["reason"] == "health: down: no reply for 0.7 s"
    assert "rx_bytes" not in w2  # counters only when the metrics ask


def test_each_links_evidence_of_life_is_in_the_document() -> None:
    kernel = lab_kernel()
    converge(lab_config(), kernel, "/nonexistent")
    kernel.heard = {("w1", 4): (120, 80), ("w1", 6): (3, 4)}
    doc = build_status(kernel, TrafficWindow(60, 5), inputs(), False)
    w1, w2 = (next(link for link in doc["links"] if link["name"] == n) for n in ("w1", "w2"))
    assert w1["ipv4"]["evidence"] == {"heard": 120, "sent": 80} and w1["ipv6"]["evidence"] == {
        "heard": 3,
        "sent": 4,
    }
    assert "evidence" not in w2["ipv4"]  # not counted (no table yet, or no nft): not shown as zero
