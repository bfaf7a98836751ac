"""Each link's state over time (observe/link_states.py): a change is reported with its reason,
the first round reports none, a link that goes is forgotten."""

from __future__ import annotations

from fakes import lab_config, lab_kernel

from wanhooks.model import Overrides
from wanhooks.observe.link_states import LinkStates, StateChange
from wanhooks.plan.planner import plan


def test_changes_are_reported_with_their_reason_and_the_first_round_is_no_change() -> None:
    kernel, config = lab_kernel(2), lab_config((1, 1))
    states = LinkStates()
    assert states.update(plan(config, kernel.observe()), now=10.0) == []
    assert states.by_link["w1"] == ("active", 10.0, True)
    disabled = plan(config, kernel.observe(), Overrides(disabled=frozenset({"w2"})))
    assert states.update(disabled, now=20.0) == [
        StateChange("w2", "active", "disabled", "disabled by the admin (wanhooks link enable)")
    ]
    assert states.by_link["w2"] == ("disabled", 20.0, False) and states.by_link["w1"][1] == 10.0
    kernel.links = [link for link in kernel.links if link.name != "w2"]
    states.update(plan(config, kernel.observe()), now=30.0)
    assert "w2" not in states.by_link
