"""The pure parts of `status`: link states, and traffic shares from counter samples."""

from __future__ import annotations

import tempfile
from typing import Any

import pytest

from wanhooks.model import LinkCounters, LinkPlan
from wanhooks.observe.status import link_state, render_status, why_not
from wanhooks.observe.traffic_share import CounterSnapshot, TrafficWindow
from wanhooks.plan import verdicts
from wanhooks.plan.verdicts import Exclusion, HealthDown, HealthState, Out


def plan_of(reasons: dict[int, Exclusion | None], tier: int = 1) -> LinkPlan:
    return LinkPlan(
        name="w1",
        index=3,
        weight=1,
        table=2000000003,
        eligible={f: r is None for f, r in reasons.items()},
        gateways={4: None, 6: None},
        addresses={4: (), 6: ()},
        reasons=reasons,
        tier=tier,
    )


def health(state: HealthState, why: str = "") -> Exclusion:
    return Exclusion(Out.HEALTH, 4, health=HealthDown(state, why))


NO_V6 = Exclusion(Out.NO_ADDRESS, 6)
STANDBY = Exclusion(Out.STANDBY, 4, tier=2, best=1)


@pytest.mark.parametrize(
    ("reasons", "live", "state"),
    [
        ({4: None, 6: None}, {4: True, 6: True}, "active"),
        ({4: None, 6: NO_V6}, {4: True, 6: False}, "active IPv4 only"),
        ({4: None, 6: None}, {4: False, 6: False}, "pending"),
        ({4: health(HealthState.DOWN, "no reply for 0.8 s"), 6: NO_V6}, {}, "failed"),
        ({4: health(HealthState.PROBING), 6: NO_V6}, {}, "probing"),
        (
            {4: health(HealthState.RECOVERING, "answering for 2.0 s"), 6: Exclusion(Out.NO_CARRIER, 6)},
            {},
            "recovering",
        ),
        ({4: STANDBY, 6: Exclusion(Out.NO_GATEWAY, 6)}, {}, "standby tier 2"),
        ({4: Exclusion(Out.DISABLED, 4), 6: Exclusion(Out.DISABLED, 6)}, {}, "disabled"),
        ({4: Exclusion(Out.DRAINING, 4), 6: Exclusion(Out.DRAINING, 6)}, {}, "draining"),
        ({4: Exclusion(Out.NO_CARRIER, 4), 6: Exclusion(Out.NO_CARRIER, 6)}, {}, "excluded"),
    ],
)
def test_a_links_state_says_the_most_telling_thing(
    reasons: dict[int, Exclusion | None], live: dict[int, bool], state: str
) -> None:
    assert link_state(plan_of(reasons, tier=2 if reasons[4] == STANDBY else 1), live) == state


def test_a_links_state_reads_no_wording(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rewording every reason changes what status prints, not what it decides."""
    monkeypatch.setattr(verdicts, "_TEXT", dict.fromkeys(Out, "reworded {detail}"))
    assert link_state(plan_of({4: health(HealthState.PROBING), 6: NO_V6}), {}) == "probing"
    assert link_state(plan_of({4: STANDBY, 6: NO_V6}, tier=2), {}) == "standby tier 2"
    assert why_not(plan_of({4: NO_V6, 6: NO_V6})) == "reworded "


def test_why_says_a_shared_reason_once_and_different_ones_per_family() -> None:
    carrier = {4: Exclusion(Out.NO_CARRIER, 4), 6: Exclusion(Out.NO_CARRIER, 6)}
    assert why_not(plan_of({4: None, 6: None})) is None
    assert why_not(plan_of(carrier)) == "no carrier"
    assert (
        why_not(plan_of({4: health(HealthState.DOWN, "silent"), 6: Exclusion(Out.NO_GATEWAY, 6)}))
        == "IPv4: health: down: silent; IPv6: no IPv6 gateway (none configured, none in the main table)"
    )


def counters(rx: int, tx: int, index: int = 3) -> LinkCounters:
    return LinkCounters(0, 0, rx, tx, index=index)


def test_shares_are_each_links_part_of_the_bytes_over_the_window() -> None:
    window = TrafficWindow(span_s=60, every_s=5)
    window.add(CounterSnapshot(0.0, {"w1": counters(1000, 1000), "w2": counters(0, 0, index=4)}))
    rates = window.rates(
        CounterSnapshot(10.0, {"w1": counters(1000 + 2500, 1000 + 2500), "w2": counters(0, 15000, 4)})
    )
    assert rates["w1"].share == pytest.approx(0.25) and rates["w2"].share == pytest.approx(0.75)
    assert rates["w1"].rx_bps == pytest.approx(8 * 2500 / 10) and rates["w2"].tx_bps == pytest.approx(12000)
    assert rates["w1"].window_s == 10.0


def test_the_window_keeps_a_minute_and_samples_no_faster_than_asked() -> None:
    window = TrafficWindow(span_s=60, every_s=5)
    for t in range(0, 200):  # a sample offered every second: one in five is kept
        window.add(CounterSnapshot(float(t), {"w1": counters(1000 * t, 0)}))
    rates = window.rates(CounterSnapshot(200.0, {"w1": counters(200_000, 0)}))
    # the oldest kept sample still reaches back a minute, and no further than one step more
    assert 60 <= rates["w1"].window_s <= 65
    assert rates["w1"].rx_bps == pytest.approx(8 * 1000)


def test_a_renamed_link_keeps_its_history_and_each_counter_resets_on_its_own() -> None:
    window = TrafficWindow(span_s=60, every_s=5)
    window.add(CounterSnapshot(0.0, {"eth1": counters(9_000_000, 5_000_000, index=3)}))
    # renamed (same ifindex), and its rx counter went back to zero while tx did not
    rates = window.rates(CounterSnapshot(10.0, {"wan1": counters(1000, 5_000_000 + 3000, index=3)}))
    assert rates["wan1"].rx_bps == pytest.approx(800) and rates["wan1"].tx_bps == pytest.approx(2400)


def test_a_recreated_link_counts_from_zero_and_a_new_one_counts_everything() -> None:
    window = TrafficWindow(span_s=60, every_s=5)
    window.add(CounterSnapshot(0.0, {"w1": counters(9_000_000, 0, index=3)}))
    later = CounterSnapshot(10.0, {"w1": counters(1000, 0, index=7), "w9": counters(3000, 0, index=9)})
    rates = window.rates(later)
    assert rates["w1"].rx_bps == pytest.approx(800) and rates["w9"].rx_bps == pytest.approx(2400)
    assert rates["w1"].share == pytest.approx(0.25)


def test_no_bytes_no_share_and_no_samples_no_rates() -> None:
    window = TrafficWindow(span_s=60, every_s=5)
    assert window.rates(CounterSnapshot(1.0, {"w1": counters(0, 0)})) == {}
    window.add(CounterSnapshot(0.0, {"w1": counters(5, 5)}))
    assert window.rates(CounterSnapshot(1.0, {"w1": counters(5, 5)}))["w1"].share is None


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


# --------------------------------------------------------------------------
# The top of status: the mode, whether the daemon runs, what the view cannot see
# --------------------------------------------------------------------------


def out_of_sync_doc(mode: str = "daemon", **extra: Any) -> dict[str, Any]:
    """A real status document (the planner on the fake lab kernel) whose kernel still holds w2,
    which has just lost its carrier: four changes pending (w2 out of both groups, its nexthops gone)."""
    from dataclasses import replace

    from fakes import lab_config, lab_kernel, wan

    from wanhooks.model import RunMode
    from wanhooks.observe.status import status_json
    from wanhooks.plan.planner import plan, resolve_group_kind
    from wanhooks.reconcile.diff import diff, reconcile

    kernel = lab_kernel()
    config = replace(lab_config(), mode=RunMode(mode))
    with tempfile.TemporaryDirectory() as run_dir:  # where reconcile records the sysctls it set
        reconcile(plan(config, kernel.observe()), kernel, run_dir)
    kernel.set_link(wan(12, "w2", 2, carrier=False))
    observed = kernel.observe()
    desired = plan(config, observed)
    kind, _ = resolve_group_kind(config, observed)
    owned = kernel.dump_owned()
    return status_json(config, observed, desired, owned, kind, diff(desired, owned), **extra)


def test_from_the_daemon_the_mode_and_its_pid_lead_and_apply_is_never_advised() -> None:
    doc = out_of_sync_doc()
    doc["daemon"] = {"pid": 4242, "rounds": 7, "disabled": [], "draining": [], "held_gateways": []}
    assert doc["mode"] == "daemon" and doc["daemon_running"] is None and doc["in_sync"] is False
    lines = render_status(doc).splitlines()
    assert lines[:3] == ["mode: daemon; the daemon runs (pid 4242)", "", lines[2]]
    assert lines[2].startswith("LINK")
    assert lines[-1] == "kernel differs from the plan by 4 change(s): the daemon makes them at its next round"
    assert "wanhooks apply" not in render_status(doc)


def test_without_a_daemon_in_daemon_mode_it_says_the_hooks_do_nothing() -> None:
    text = render_status(out_of_sync_doc(daemon_running=False))
    lines = text.splitlines()
    assert lines[0] == (
        "mode: daemon; daemon not running: hooks do nothing; start it: systemctl start wanhooks"
    )
    assert lines[-1] == (
        "kernel differs from the plan by 4 change(s): the daemon is not running "
        "(start it: systemctl start wanhooks); or run `wanhooks apply` once"
    )


def test_hooks_only_mode_advises_apply_unless_a_daemon_runs_all_the_same() -> None:
    text = render_status(out_of_sync_doc("hooks-only", daemon_running=False))
    assert text.startswith("mode: hooks-only: no daemon, the dispatcher hooks apply each change\n\nLINK")
    assert text.endswith("kernel differs from the plan by 4 change(s): run `wanhooks apply`")
    text = render_status(out_of_sync_doc("hooks-only", daemon_running=True))
    assert text.splitlines()[0].endswith("; a daemon runs all the same and owns the routing")
    assert "wanhooks apply" not in text


def test_a_daemon_that_does_not_answer_is_said_and_what_the_view_lacks_too() -> None:
    from wanhooks.cli import DAEMON_ONLY

    blind = {"what": DAEMON_ONLY, "why": "the daemon did not answer: timed out"}
    doc = out_of_sync_doc(daemon_running=True, cannot_see=blind)  # root: its lock is held
    lines = render_status(doc).splitlines()
    assert lines[0] == "mode: daemon; the daemon runs"
    assert lines[1] == (
        "this view cannot see health verdicts, held gateways, the admin's overrides (disable, drain), "
        "traffic shares: the daemon did not answer: timed out"
    )
    assert lines[2] == "" and lines[3].startswith("LINK")
    assert "wanhooks apply" not in "\n".join(lines)
    # not root, and the daemon's socket out of reach: whether one runs cannot be told
    blind = {"what": DAEMON_ONLY, "why": "not root, and cannot reach the daemon's socket: permission denied"}
    text = render_status(out_of_sync_doc(daemon_running=None, cannot_see=blind))
    assert text.startswith(
        "mode: daemon; whether the daemon runs cannot be seen from here\nthis view cannot see"
    )
    assert "wanhooks apply" not in text.replace("root's `wanhooks status`", "")
    assert "a daemon, if one runs, makes them" in text


def test_an_older_daemons_document_has_no_mode_line() -> None:
    doc = out_of_sync_doc()
    del doc["mode"], doc["daemon_running"], doc["cannot_see"]
    doc["daemon"] = {"pid": 1, "rounds": 1, "disabled": [], "draining": [], "held_gateways": []}
    assert render_status(doc).splitlines()[0].startswith("LINK")


def test_an_auto_link_shows_auto_its_estimate_and_why() -> None:
    doc = out_of_sync_doc()
    w1 = doc["links"][0]
    w1["auto_weight"] = True
    w1["capacity"] = {
        "down": {"bps": 5_000_000, "evidence": "saturated", "age_s": 12.0},
        "up": {"bps": 1_200_000, "evidence": "carried", "age_s": 130.0},
        "measured": True,
        "applied_bps": 5_000_000,
        "baseline_rtt_ms": 10.0,
        "delay_ms": 41.5,
        "saturated": True,
        "why": "download capacity 5.0 Mbit/s (saturated)",
    }
    change = {"ago_s": 40.0, "why": "w1 48% -> 31% of the links' capacity"}
    doc["daemon"] = {"pid": 1, "rounds": 3, "disabled": [], "draining": [], "held_gateways": [],
                     "weight_changes": [change]}  # fmt: skip
    text = render_status(doc)
    row = next(line for line in text.splitlines() if line.startswith("w1 "))
    assert row.split()[2] == "auto"
    assert "auto weights, from each link's measured capacity (its fuller direction):" in text
    assert (
        "  w1: down 5.0 Mbit/s (saturated, 12s ago), up 1.2 Mbit/s (carried, 2m ago); round trip 10 ms "
        "idle, +41.5 ms now (queueing): download capacity 5.0 Mbit/s (saturated)"
    ) in text
    assert "  weights changed 40s ago: w1 48% -> 31% of the links' capacity" in text
    assert "auto weights" not in render_status(out_of_sync_doc())  # no auto link, no section
