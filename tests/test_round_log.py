"""What a round says (service/round_log.py): its decision, systemd's STATUS= line, why the
kernel does not match the plan, and log lines only when something changed."""

from __future__ import annotations

import logging

import pytest
from fakes import lab_config, lab_kernel

from wanhooks.events import HookNotified, Resync
from wanhooks.model import Overrides
from wanhooks.plan.planner import plan
from wanhooks.reconcile.diff import Report
from wanhooks.reconcile.round import converge
from wanhooks.service.round_log import RoundLog, decision, status_line, summarize, sync_problem


def test_the_decision_and_status_line_name_every_link() -> None:
    kernel = lab_kernel(2)
    desired = plan(lab_config((1, 2)), kernel.observe(), Overrides(disabled=frozenset({"w1"})))
    assert decision(desired).startswith("IPv4 balance w2 x2 (w1: disabled by the admin")
    assert (
        status_line(desired)
        == "1 of 2 links balanced: w2; w1 disabled (disabled by the admin (wanhooks link enable))"
    )


def test_sync_problem_names_the_first_thing_wrong() -> None:
    assert sync_problem(Report(), 0) == ""
    assert sync_problem(Report(), 3) == "3 change(s) still to make"
    assert sync_problem(Report(sysctl_errors=["rp_filter: EPERM"]), 0) == "sysctl: rp_filter: EPERM"
    assert sync_problem(Report(conflicts=["rule 100 held by another"]), 0).startswith("1 conflict(s)")


def test_triggers_are_summed_up() -> None:
    assert summarize([]) == "timer"
    many = [HookNotified("manual", f"w{i}", "up") for i in range(6)]
    assert summarize(many).endswith("(+2 more)")


def test_a_round_is_logged_when_it_changes_something_and_not_when_it_repeats(
    caplog: pytest.LogCaptureFixture,
) -> None:
    kernel, config, rounds = lab_kernel(2), lab_config((1, 1)), RoundLog()
    caplog.set_level(logging.INFO, logger="wanhooks")
    rounds.after(1, [Resync("start-up")], converge(config, kernel, "/nonexistent"), 1.0)
    first = caplog.text
    assert "decision: IPv4 balance w1 x1, w2 x1" in first and "round 1:" in first and "kernel: +" in first
    caplog.clear()
    rounds.after(2, [Resync("timer")], converge(config, kernel, "/nonexistent"), 1.0)
    assert caplog.text == ""  # nothing changed: nothing said
