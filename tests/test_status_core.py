"""The pure parts of `status`: link states, and traffic shares from counter samples."""

from __future__ import annotations

import pytest

from wanhooks.model import LinkCounters, LinkPlan
from wanhooks.status import link_state, render_status, why_not
from wanhooks.traffic_share import Sample, TrafficWindow


def plan_of(reasons: dict[int, str], tier: int = 1) -> LinkPlan:
    return LinkPlan(
        name="w1",
        index=3,
        weight=1,
        table=2000000003,
        eligible={f: not r for f, r in reasons.items()},
        gateways={4: None, 6: None},
        addresses={4: (), 6: ()},
        reasons=reasons,
        tier=tier,
    )


@pytest.mark.parametrize(
    ("reasons", "live", "state"),
    [
        ({4: "", 6: ""}, {4: True, 6: True}, "active"),
        ({4: "", 6: "no IPv6 address"}, {4: True, 6: False}, "active IPv4 only"),
        ({4: "", 6: ""}, {4: False, 6: False}, "pending"),
        ({4: "health: down: no reply for 0.8 s", 6: "no IPv6 address"}, {}, "failed"),
        ({4: "health: probing: waiting for replies", 6: "no IPv6 address"}, {}, "probing"),
        ({4: "health: recovering: answering for 2.0 s", 6: "no carrier"}, {}, "recovering"),
        ({4: "standby (tier 2): a tier-1 link is up", 6: "no IPv6 gateway"}, {}, "standby tier 2"),
        ({4: "disabled by the admin", 6: "disabled by the admin"}, {}, "disabled"),
        ({4: "draining: no new connections", 6: "draining: no new connections"}, {}, "draining"),
        ({4: "no carrier", 6: "no carrier"}, {}, "excluded"),
    ],
)
def test_a_links_state_says_the_most_telling_thing(
    reasons: dict[int, str], live: dict[int, bool], state: str
) -> None:
    assert link_state(plan_of(reasons, tier=2 if "standby" in reasons[4] else 1), live) == state


def test_why_says_a_shared_reason_once_and_different_ones_per_family() -> None:
    assert why_not(plan_of({4: "", 6: ""})) is None
    assert why_not(plan_of({4: "no carrier", 6: "no carrier"})) == "no carrier"
    assert (
        why_not(plan_of({4: "health: silent", 6: "no gateway"})) == "IPv4: health: silent; IPv6: no gateway"
    )


def counters(rx: int, tx: int, index: int = 3) -> LinkCounters:
    return LinkCounters(0, 0, rx, tx, index=index)


def test_shares_are_each_links_part_of_the_bytes_over_the_window() -> None:
    window = TrafficWindow(span_s=60, every_s=5)
    window.add(Sample(0.0, {"w1": counters(1000, 1000), "w2": counters(0, 0, index=4)}))
    rates = window.rates(
        Sample(10.0, {"w1": counters(1000 + 2500, 1000 + 2500), "w2": counters(0, 15000, 4)})
    )
    assert rates["w1"].share == pytest.approx(0.25) and rates["w2"].share == pytest.approx(0.75)
    assert rates["w1"].rx_bps == pytest.approx(8 * 2500 / 10) and rates["w2"].tx_bps == pytest.approx(12000)
    assert rates["w1"].window_s == 10.0


def test_the_window_keeps_a_minute_and_samples_no_faster_than_asked() -> None:
    window = TrafficWindow(span_s=60, every_s=5)
    for t in range(0, 200):  # a sample offered every second: one in five is kept
        window.add(Sample(float(t), {"w1": counters(1000 * t, 0)}))
    rates = window.rates(Sample(200.0, {"w1": counters(200_000, 0)}))
    # the oldest kept sample still reaches back a minute, and no further than one step more
    assert 60 <= rates["w1"].window_s <= 65
    assert rates["w1"].rx_bps == pytest.approx(8 * 1000)


def test_a_renamed_link_keeps_its_history_and_each_counter_resets_on_its_own() -> None:
    window = TrafficWindow(span_s=60, every_s=5)
    window.add(Sample(0.0, {"eth1": counters(9_000_000, 5_000_000, index=3)}))
    # renamed (same ifindex), and its rx counter went back to zero while tx did not
    rates = window.rates(Sample(10.0, {"wan1": counters(1000, 5_000_000 + 3000, index=3)}))
    assert rates["wan1"].rx_bps == pytest.approx(800) and rates["wan1"].tx_bps == pytest.approx(2400)


def test_a_recreated_link_counts_from_zero_and_a_new_one_counts_everything() -> None:
    window = TrafficWindow(span_s=60, every_s=5)
    window.add(Sample(0.0, {"w1": counters(9_000_000, 0, index=3)}))
    later = Sample(10.0, {"w1": counters(1000, 0, index=7), "w9": counters(3000, 0, index=9)})
    rates = window.rates(later)
    assert rates["w1"].rx_bps == pytest.approx(800) and rates["w9"].rx_bps == pytest.approx(2400)
    assert rates["w1"].share == pytest.approx(0.25)


def test_no_bytes_no_share_and_no_samples_no_rates() -> None:
    window = TrafficWindow(span_s=60, every_s=5)
    assert window.rates(Sample(1.0, {"w1": counters(0, 0)})) == {}
    window.add(Sample(0.0, {"w1": counters(5, 5)}))
    assert window.rates(Sample(1.0, {"w1": counters(5, 5)}))["w1"].share is None


def test_an_older_daemons_document_still_renders_and_says_so() -> None:
    """After an upgrade, before the daemon restarts: its schema-1 answer has no why, shares or times."""
    family = {"eligible": True, "reason": None, "gateway": "100.64.1.1", "addresses": [], "in_balance": True}
    doc = {
        "schema": 1,
        "config": "/etc/wanhooks/wanhooks.yaml",
        "balance_mode": "per-connection",
        "group_kind": "resilient",
        "links": [{"name": "w1", "index": 3, "state": "active", "weight": 1, "table": 2000000003,
                   "config_line": 2, "ipv4": family, "ipv6": dict(family, gateway=None)}],
        "balance": {"ipv4": {"route": None, "members": [{"link": "w1", "weight": 1}]},
                    "ipv6": {"route": None, "members": []}},
        "in_sync": True,
        "pending_changes": 0,
        "notes": [],
    }  # fmt: skip
    text = render_status(doc)
    assert text.splitlines()[1].split() == ["w1", "active", "1", "100.64.1.1"]
    assert "status schema 1, this wanhooks reads 2: restart the daemon" in text
