"""Typed verdicts: which reasons end connections, and their wording made only by str()."""

from __future__ import annotations

import pytest
from fakes import lab_config, lab_kernel

from wanhooks.model import Desired, Overrides
from wanhooks.plan import verdicts
from wanhooks.plan.planner import connections_to_end, plan
from wanhooks.plan.verdicts import Exclusion, HealthDown, HealthState, HealthVerdicts, Out

ENDS = {Out.HEALTH, Out.DISABLED}  # and STANDBY when flush_lower_tiers and no pin uses it


@pytest.mark.parametrize("out", list(Out))
def test_only_a_dead_link_an_admins_disable_and_a_flushed_standby_end_connections(out: Out) -> None:
    why = Exclusion(out, 4)
    assert why.ends_connections(flush_lower_tiers=False, pinned=False) is (out in ENDS)
    assert why.ends_connections(flush_lower_tiers=True, pinned=False) is (out in ENDS | {Out.STANDBY})
    assert why.ends_connections(flush_lower_tiers=True, pinned=True) is (out in ENDS)


@pytest.mark.parametrize("out", list(Out))
def test_every_reason_has_words(out: Out) -> None:
    text = str(Exclusion(out, 6, detail="x", tier=2, best=1))
    assert text and "{" not in text


def test_the_words_carry_what_the_situation_adds() -> None:
    assert str(Exclusion(Out.NO_GATEWAY, 6)).startswith("no IPv6 gateway")
    assert str(Exclusion(Out.STANDBY, 4, tier=3, best=1)) == "standby (tier 3): a tier-1 link is up"
    assert str(Exclusion(Out.NOT_OPERATIONAL, 4, detail="dormant")) == "not operational (dormant)"
    down = HealthDown(HealthState.DOWN, "no reply from 203.0.113.10 for 0.7 s")
    assert str(Exclusion(Out.HEALTH, 4, health=down)) == "health: down: no reply from 203.0.113.10 for 0.7 s"
    assert str(HealthDown(HealthState.PROBING)) == "probing: waiting for replies"


def test_the_connections_ended_do_not_depend_on_the_wording(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dead link's and a disabled link's connections end, a drained link's do not --
    with every message reworded to the same text."""
    config, observed = lab_config(), lab_kernel().observe()
    before = plan(config, observed)
    dead = HealthVerdicts(down={("w1", 4): HealthDown(HealthState.DOWN, "silent")})
    after = plan(config, observed, verdicts=dead, overrides=Overrides(disabled=frozenset({"w2"})))
    drained = plan(config, observed, overrides=Overrides(draining=frozenset({"w3"})))

    def ended(now: Desired) -> set[tuple[str, int, Out]]:
        return {(lp.name, f, why.out) for lp, f, why in connections_to_end(before, now, config)}

    worded = ended(after), ended(drained)
    monkeypatch.setattr(verdicts, "_TEXT", dict.fromkeys(Out, "reworded"))
    assert (ended(after), ended(drained)) == worded
    assert worded[0] == {("w1", 4, Out.HEALTH), ("w2", 4, Out.DISABLED), ("w2", 6, Out.DISABLED)}
    assert worded[1] == set()
