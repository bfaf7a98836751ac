"""The typed verdicts the pure core decides on: a link's health state, and why a link
(in one family) carries no balanced traffic.

Decisions -- which connections to end, whether every probed link failing at once
means the targets are at fault, whether a pin may use a link, what `status`
calls a link -- read these values, never their wording.  Text is made only at the
edges (status, logs, metrics) by `str()`, so rewording a message changes no
behaviour.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field


class HealthState(str, enum.Enum):
    """Where a probed link stands (health.Health's state machine)."""

    PROBING = "probing"  # a new link: no verdict yet (kept out of the group)
    UP = "up"
    DOWN = "down"
    RECOVERING = "recovering"  # answering again, not yet long enough to be trusted


@dataclass(frozen=True)
class HealthDown:
    """A probed link that carries no traffic now: its state, and the last transition's why."""

    state: HealthState
    why: str = ""

    def __str__(self) -> str:
        if self.state is HealthState.PROBING and not self.why:
            return "probing: waiting for replies"
        return f"{self.state.value}: {self.why}" if self.why else self.state.value


@dataclass(frozen=True)
class HealthVerdicts:
    """What the health probes say: (link name, family) -> why it carries no traffic now.

    Links that are not probed, or whose probes say "up", are not in it.
    """

    down: dict[tuple[str, int], HealthDown] = field(default_factory=dict)


class Out(enum.Enum):
    """Why a link, in one family, carries no balanced traffic; plan() decides, in this
    order of precedence."""

    BEYOND_ID_RANGE = enum.auto()  # its ifindex does not fit wanhooks' table and nexthop ids
    ADDRESS_CLASH = enum.auto()  # an earlier link has the same address
    ADMIN_DOWN = enum.auto()
    NO_CARRIER = enum.auto()
    NOT_OPERATIONAL = enum.auto()  # carrier, but operstate says no (wifi re-authenticating)
    NO_ADDRESS = enum.auto()
    DELEGATED_ONLY = enum.auto()  # IPv6: link-local and a delegated prefix, no global address
    NO_GATEWAY = enum.auto()
    DISABLED = enum.auto()  # the admin: wanhooks link disable
    DRAINING = enum.auto()  # the admin: wanhooks link drain
    HEALTH = enum.auto()  # its probes: failed, or not yet answered
    PORTAL = enum.auto()  # NetworkManager: behind a captive portal
    LIMITED = enum.auto()  # NetworkManager's connectivity check: limited
    STANDBY = enum.auto()  # a better tier has a usable link
    SHARED_ADDRESS_ABSENT = enum.auto()  # its nat_address is on the pair's other router
    NAT_MISSING = enum.auto()  # its NAT could not be installed (nftables failed)
    LEGACY_V6_POINT_TO_POINT = enum.auto()  # no nexthop objects: IPv6 multipath takes gateways only


# Out -> its wording; {family}, {detail}, {tier} and {best} are Exclusion's fields.
_TEXT = {
    Out.BEYOND_ID_RANGE: "interface index {detail} is beyond wanhooks' id range",
    Out.ADDRESS_CLASH: "{detail}: excluded",
    Out.ADMIN_DOWN: "administratively down",
    Out.NO_CARRIER: "no carrier",
    Out.NOT_OPERATIONAL: "not operational ({detail})",
    Out.NO_ADDRESS: "no IPv{family} address",
    Out.DELEGATED_ONLY: "carries its delegated prefix only (no global IPv6 address of its own)",
    Out.NO_GATEWAY: "no IPv{family} gateway (none configured, none in the main table)",
    Out.SHARED_ADDRESS_ABSENT: "waiting for its shared address {detail} (the other router holds it)",
    Out.DISABLED: "disabled by the admin (wanhooks link enable)",
    Out.DRAINING: "draining: no new connections (wanhooks link enable)",
    Out.HEALTH: "health: {detail}",
    Out.PORTAL: "behind a captive portal (NetworkManager): log in first",
    Out.LIMITED: "limited connectivity (NetworkManager's check)",
    Out.STANDBY: "standby (tier {tier}): a tier-{best} link is up",
    Out.NAT_MISSING: "its NAT is not in place (nftables failed): kept out",
    Out.LEGACY_V6_POINT_TO_POINT: (
        "a point-to-point link cannot join an IPv6 legacy multipath route (no nexthop objects)"
    ),
}


@dataclass(frozen=True)
class Exclusion:
    """Why one link in one family is not balanced."""

    out: Out
    family: int = 4
    detail: str = ""  # the words only the situation has: an operstate, the clashing link
    health: HealthDown | None = None  # Out.HEALTH: what the probes say
    tier: int = 0  # Out.STANDBY: its tier, and the best tier with a usable link
    best: int = 0

    def __str__(self) -> str:
        detail = str(self.health) if self.health is not None else self.detail
        return _TEXT[self.out].format(family=self.family, detail=detail, tier=self.tier, best=self.best)

    @property
    def health_state(self) -> HealthState | None:
        return self.health.state if self.health is not None else None

    def ends_connections(self, flush_lower_tiers: bool, pinned: bool) -> bool:
        """Whether a link going out for this reason should have its connections ended: they
        are stuck on it (a dead ISP), or should move off it (an admin's disable; a metered
        standby link once a better tier is back, when the config says so -- unless pins
        send traffic to it: that is what pins are for).  Not a drain: its connections
        finish where they are."""
        if self.out is Out.STANDBY:
            return flush_lower_tiers and not pinned
        return self.out in (Out.HEALTH, Out.DISABLED)
