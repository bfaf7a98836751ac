"""Hold a vanished gateway for a moment: a DHCP rebind or `nmcli device reapply`
removes a link's default route and puts it back a second later, while carrier
and address never went.  Dropping the link at once would move every flow off
it and back.  A gateway that *changes* is followed at once; one that goes
with the carrier or the address is not held.

Pure: the caller passes the time and schedules a look at `deadline`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..model import MainDefault, Observed

Key = tuple[int, int]  # (ifindex, family)


@dataclass(frozen=True)
class Holds:
    last_seen: dict[Key, MainDefault] = field(default_factory=dict)  # the gateways seen last round
    held: dict[Key, tuple[MainDefault, float]] = field(default_factory=dict)  # key -> (default, until)

    @property
    def deadline(self) -> float | None:
        """When the earliest hold runs out (the caller should look again then)."""
        return min((until for _d, until in self.held.values()), default=None)


def _still_up(observed: Observed, key: Key) -> bool:
    link = observed.link(key[0])
    return link is not None and link.admin_up and link.carrier and bool(link.addresses_of(key[1]))


def hold_gateways(
    observed: Observed, holds: Holds, managed: set[int], now: float, hold_s: float
) -> tuple[Observed, Holds]:
    """observed with held gateways added back, and the holds for next time."""
    current = {key: d for key, d in observed.main_gateways(live_only=True).items() if key[0] in managed}
    held: dict[Key, tuple[MainDefault, float]] = {}
    for key, (default, until) in holds.held.items():
        if key not in current and until > now and _still_up(observed, key):
            held[key] = (default, until)
    for key, default in holds.last_seen.items():
        if key in holds.held:
            continue  # already held: the loop above kept it or let it run out
        if key not in current and hold_s > 0 and _still_up(observed, key):
            held[key] = (default, now + hold_s)
    if held:
        observed = replace(
            observed, main_defaults=observed.main_defaults + tuple(d for d, _u in held.values())
        )
    return observed, Holds(last_seen={**current, **{k: d for k, (d, _u) in held.items()}}, held=held)
