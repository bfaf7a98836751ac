"""Each link's state over time, for status ("active for 3 min") and for the log line that
says when a link changed state and why.  The state is the plan's: what the round made."""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Desired
from .status import link_state, why_not


@dataclass(frozen=True)
class StateChange:
    link: str
    old: str
    new: str
    why: str | None  # the plan's reason, in one phrase


class LinkStates:
    def __init__(self) -> None:
        # name -> (state, since: monotonic, seen so at our first round: it may be older)
        self.by_link: dict[str, tuple[str, float, bool]] = {}

    def update(self, desired: Desired, now: float) -> list[StateChange]:
        """Take in a round's plan; the links whose state changed (none at the first round:
        there is nothing to compare with)."""
        first = not self.by_link
        present = {lp.name for lp in desired.links}
        for gone in set(self.by_link) - present:
            del self.by_link[gone]
        changes = []
        for lp in desired.links:
            state = link_state(lp, lp.eligible)
            old = self.by_link.get(lp.name)
            if old is None or old[0] != state:
                self.by_link[lp.name] = (state, now, first)
                if old is not None:
                    changes.append(StateChange(lp.name, old[0], state, why_not(lp)))
        return changes
