"""Policy pins: chosen traffic to a chosen link or tier, whatever the balance does.

A pin selects traffic by destination prefix, LAN client (source prefix),
protocol and destination port -- what an `ip rule` can match, so pinned
traffic is steered by the kernel alone, with no per-packet work.  Each pin
has its own rule priority (constants.PRIO_PIN_FIRST + its position), so the
first pin that matches wins, as an admin reading the file expects.

Where a pin points:
- a link (a name or glob): the first matching link able to carry traffic,
  in config order, through that link's own table;
- a tier: that tier's usable links, weighted, through the tier's table
  (constants.tier_table), which holds a multipath default of them.
When nothing it points to can carry traffic, the pin either falls back (its
rule is withdrawn, so the traffic takes the balance) or fails closed (the
rule becomes `unreachable`: clients get an immediate ICMP error instead of
their traffic leaking out by a link it was kept off).

Pins sit after the sticky-connection rules: a connection keeps the link it
started on; a pin decides where *new* connections go.  A standby link (a
lower tier waiting while a better one is up) may carry pinned traffic: that
is the point of pinning a backup link.  A link down, failing its probes,
disabled or draining may not.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .. import constants as c
from ..model import IPAddress, IPNetwork, PathHop, Pin, Route, Rule
from ..plan.multipath import default_route


@dataclass(frozen=True)
class Candidate:
    """A managed link in one family, as a pin sees it."""

    name: str
    index: int
    family: int
    tier: int
    weight: int
    gateway: IPAddress | None
    onlink: bool
    may_carry: bool  # may carry pinned traffic now
    why_not: str = ""  # when it may not


def pin_families(pin: Pin) -> tuple[int, ...]:
    """The families a pin applies to: those of its prefixes, else its protocol's, else both."""
    prefixes = [*pin.to, *pin.sources]
    if prefixes:
        return tuple(f for f in (4, 6) if any(p.version == f for p in prefixes))
    if pin.proto == 1:  # icmp
        return (4,)
    if pin.proto == 58:  # ipv6-icmp
        return (6,)
    return (4, 6)


def _selectors(pin: Pin, family: int) -> list[tuple[IPNetwork | None, IPNetwork | None]]:
    """(source, destination) pairs of one family; None matches any."""
    sources: Sequence[IPNetwork | None] = [p for p in pin.sources if p.version == family] or [None]
    dests: Sequence[IPNetwork | None] = [p for p in pin.to if p.version == family] or [None]
    if (pin.sources and sources == [None]) or (pin.to and dests == [None]):
        return []  # the pin names prefixes, none of this family
    return [(s, d) for s in sources for d in dests]


def _targets(pin: Pin, candidates: Iterable[Candidate]) -> list[Candidate]:
    if pin.link is not None:
        link = pin.link
        return [x for x in candidates if fnmatch.fnmatchcase(x.name, link)]
    return [x for x in candidates if x.tier == pin.tier]


def plan_pins(
    pins: Sequence[Pin], candidates: Sequence[Candidate]
) -> tuple[set[Rule], set[Route], list[str]]:
    """Rules (and tier tables' routes) for every pin; notes on pins with nowhere to go."""
    rules: set[Rule] = set()
    routes: set[Route] = set()
    notes: list[str] = []
    tiers_used: dict[tuple[int, int], list[Candidate]] = {}
    for position, pin in enumerate(pins):
        priority = c.PRIO_PIN_FIRST + position
        for family in pin_families(pin):
            targets = _targets(pin, (x for x in candidates if x.family == family))
            carriers = [x for x in targets if x.may_carry]
            what = f"pin {position + 1} (line {pin.line}), IPv{family}"
            if not carriers:
                why = "; ".join(f"{x.name}: {x.why_not}" for x in targets) or "no such link is up"
                if pin.fail_closed:
                    notes.append(f"{what}: nowhere to go ({why}): its traffic is refused (when_down: fail)")
                else:
                    notes.append(f"{what}: nowhere to go ({why}): its traffic takes the balance")
            if carriers and pin.link is not None:
                table = c.link_table(carriers[0].index)
            elif carriers and pin.tier is not None:
                table = c.tier_table(pin.tier)
                tiers_used[(pin.tier, family)] = carriers
            elif pin.fail_closed:
                table = 0
            else:
                continue
            for src, dst in _selectors(pin, family):
                rules.add(
                    Rule(
                        family=family,
                        priority=priority,
                        table=table,
                        src=src,
                        dst=dst,
                        ip_proto=pin.proto,
                        dport=pin.ports,
                        unreachable=table == 0,
                    )
                )
    for (tier, family), members in tiers_used.items():
        routes.add(_tier_route(tier, family, members))
    return rules, routes, notes


def _tier_route(tier: int, family: int, members: list[Candidate]) -> Route:
    """A tier's default: a plain route for one link, a weighted multipath one for more.

    Inline hops (no nexthop objects): this table is only for pinned traffic,
    and a legacy route works on every kernel.
    """
    if family == 6 and len(members) > 1:
        # the kernel refuses device-only hops in an IPv6 multipath route
        members = [x for x in members if x.gateway is not None] or members[:1]
    hops = [PathHop(oif=x.index, gateway=x.gateway, weight=x.weight, onlink=x.onlink) for x in members]
    return default_route(family, c.tier_table(tier), hops)
