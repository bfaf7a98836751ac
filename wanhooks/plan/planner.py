"""plan(config, observed) -> Desired: all routing policy, as a pure function.

Theory of operation
-------------------
The kernel state wanhooks wants is a function of two things only: what the
user configured and what the kernel shows right now.  No history, no clock,
no I/O: the daemon and the one-shot `apply` both call this with a fresh
snapshot, and the reconciler makes the kernel match the result.

Per address family (4 and 6, independently):

* Every managed link that is admin-up, has an address and a gateway (or is
  point-to-point) gets its own table -- default via its gateway, plus its
  connected prefix -- and one `from <address> lookup <table>` rule per
  address.  These depend on address and gateway only, never on health or
  eligibility, so a failed or standby link still answers and can be probed.
* The links that can carry traffic now (up, carrier, address, gateway or
  point-to-point, no address clash) are *eligible*; they form the weighted
  multipath default in the balance table: a nexthop group (resilient where
  the kernel has it) or a legacy RTA_MULTIPATH route.  No eligible link: no
  balance route, lookups fall through to main, the host is no worse off
  than without wanhooks.
* Rules: `lookup main suppress_prefixlength 0` first (LAN, VPN and other
  specific routes keep winning), then the per-link source rules, then
  `lookup <balance>`.  A default route in main on a device that is not a
  managed link (a full-tunnel VPN) wins: the balance rule is withheld.
* Sysctls: the multipath hash policy for the balance mode; on managed links
  loose reverse-path filtering and ignore_routes_with_linkdown.

Nothing here knows table or nexthop numbers: they come from constants.py,
derived from the interface index.
"""

from __future__ import annotations

import fnmatch
import functools
import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace

from .. import constants as c
from ..health.machine import ProbeKey, params_for, within_budget
from ..model import (
    IFF_LOOPBACK,
    Address,
    BalanceMode,
    Config,
    Desired,
    Firewall,
    FirewallLink,
    GroupKind,
    HealthConfig,
    IPAddress,
    IPNetwork,
    LinkConfig,
    LinkPlan,
    MainDefault,
    ManagedDevice,
    Nexthop,
    NexthopGroup,
    Observed,
    ObservedLink,
    Overrides,
    PathHop,
    Route,
    Rule,
    Sysctl,
    cached_hash,
    canonical,
)
from ..router.pins import Candidate, plan_pins
from .multipath import default_route
from .names import ifname_problem
from .verdicts import Exclusion, HealthState, HealthVerdicts, Out
from .weights import kernel_weights, uses_auto

NO_OVERRIDES = Overrides()
NO_VERDICTS = HealthVerdicts()
_DEFAULT_DST = {4: canonical(ipaddress.ip_network("0.0.0.0/0")), 6: canonical(ipaddress.ip_network("::/0"))}
_METRIC = {4: c.METRIC_V4, 6: c.METRIC_V6}
_NO_HEALTH = HealthConfig()  # a link without a health section of its own: one object, hashed once
_FULL_PREFIX = {4: 32, 6: 128}
LINK_LOCAL6 = ipaddress.ip_network("fe80::/10")
_HASH_FIELDS = {
    BalanceMode.PER_CONNECTION: c.HASH_SRC_IP
    | c.HASH_DST_IP
    | c.HASH_IP_PROTO
    | c.HASH_SRC_PORT
    | c.HASH_DST_PORT,
    BalanceMode.PER_DESTINATION: c.HASH_SRC_IP | c.HASH_DST_IP,
    BalanceMode.PER_CLIENT: c.HASH_SRC_IP,
}
# Kernels without fib_multipath_hash_fields (< 5.14): the closest policy.
_HASH_FALLBACK = {
    BalanceMode.PER_CONNECTION: c.HASH_POLICY_L4,
    BalanceMode.PER_DESTINATION: c.HASH_POLICY_L3,
    BalanceMode.PER_CLIENT: c.HASH_POLICY_L3,
}


@cached_hash
@dataclass(frozen=True)
class _Side:
    """One link in one family, as judged by the planner."""

    link: ObservedLink
    entry: LinkConfig
    family: int
    addresses: tuple[IPAddress, ...]
    networks: tuple[IPNetwork, ...]
    gateway: IPAddress | None
    onlink: bool
    has_table: bool
    eligible: bool
    reason: Exclusion | None
    tier: int = 1


def match_entry(config: Config, name: str) -> LinkConfig | None:
    """The config entry managing an interface: an exact name beats any glob."""
    for entry in config.links:
        if not entry.is_glob and entry.interface == name:
            return entry
    for entry in config.links:
        if entry.is_glob and fnmatch.fnmatchcase(name, entry.interface):
            return entry
    return None


# The last answer of managed_links: a round asks three times (probers, held gateways, the
# plan) with the same config and the kernel mirror's same tuple of links; at 256 links each
# answer is half a millisecond.  One entry, replaced whole (the worker and the loop both ask).
_last_managed: tuple[Config, tuple[ObservedLink, ...], list[tuple[ObservedLink, LinkConfig]]] | None = None


def managed_links(config: Config, observed: Observed) -> list[tuple[ObservedLink, LinkConfig]]:
    """Managed links in a stable order: config entry order, then interface index."""
    global _last_managed
    last = _last_managed
    if last is not None and last[0] is config and last[1] is observed.links:
        return list(last[2])
    pairs = _managed_links(config, observed.links)
    _last_managed = (config, observed.links, pairs)
    return list(pairs)


def _managed_links(
    config: Config, observed_links: tuple[ObservedLink, ...]
) -> list[tuple[ObservedLink, LinkConfig]]:
    order = {id(entry): i for i, entry in enumerate(config.links)}
    exact = {e.interface: e for e in reversed(config.links) if not e.is_glob}
    globs = [e for e in config.links if e.is_glob]
    pairs = []
    for link in observed_links:
        if link.flags & IFF_LOOPBACK or ifname_problem(link.name):
            continue  # a hostile name is never managed (plan/names.py): _refused_names says so
        entry = exact.get(link.name) or next(
            (e for e in globs if fnmatch.fnmatchcase(link.name, e.interface)), None
        )
        if entry is not None:
            pairs.append((link, entry))
    pairs.sort(key=lambda p: (order[id(p[1])], p[0].index))
    return pairs


def _refused_names(config: Config, observed: Observed) -> list[str]:
    """Notes for links a glob matches whose names wanhooks refuses to manage."""
    notes = []
    for link in observed.links:
        problem = ifname_problem(link.name)
        if problem is None or link.flags & IFF_LOOPBACK:
            continue
        glob = next((e.interface for e in config.links if fnmatch.fnmatchcase(link.name, e.interface)), None)
        if glob is not None:
            notes.append(f"interface {link.index} matches {glob!r} but is not managed: {problem}")
    return notes


def _manager_gateways(observed: Observed) -> dict[tuple[str, int], IPAddress]:
    out: dict[tuple[str, int], IPAddress] = {}
    for dev in observed.manager:
        for family, text in ((4, dev.gateway4), (6, dev.gateway6)):
            if text:
                try:
                    address = ipaddress.ip_address(text)
                except ValueError:
                    continue
                if address.version == family:
                    out[(dev.name, family)] = address
    return out


def _full_tunnel(observed: Observed, family: int, managed: set[int]) -> ObservedLink | None:
    """A tunnel (point-to-point: tun, WireGuard, PPP; or a tap) that is not a managed link, up, holding
    a live default route in main: a full-tunnel VPN.  An unlisted ethernet or wifi device
    with a default is another uplink, not a VPN (see _unlisted_uplinks)."""
    for link in _unmanaged_defaults(observed, family, managed):
        if _is_tunnel(link):
            return link
    return None


def _is_tunnel(link: ObservedLink) -> bool:
    # a tap device (OpenVPN dev tap, ZeroTier, SoftEther) has an ethernet address but is a tunnel
    return link.point_to_point or link.kind in ("tun", "wireguard", "gre", "gretap", "ipip", "vti", "vxlan")


def _unlisted_uplinks(observed: Observed, family: int, managed: set[int]) -> list[ObservedLink]:
    return [link for link in _unmanaged_defaults(observed, family, managed) if not _is_tunnel(link)]


def _unmanaged_defaults(observed: Observed, family: int, managed: set[int]) -> list[ObservedLink]:
    out = []
    for d in observed.main_defaults:
        if d.family != family or not d.live or d.oif in managed:
            continue
        link = observed.link(d.oif)
        if link is not None and link.admin_up and link.carrier and link not in out:
            out.append(link)
    return out


def _blocking_default(observed: Observed, family: int) -> MainDefault | None:
    """Main's best default when it is a blackhole/unreachable/prohibit route."""
    candidates = [d for d in observed.main_defaults if d.family == family and not d.dead]
    if not candidates:
        return None
    best = min(candidates, key=lambda d: d.metric)
    return None if best.kind == "unicast" else best


def _networks(entry: LinkConfig, family: int, sources: tuple[Address, ...]) -> tuple[IPNetwork, ...]:
    configured = entry.network(family)
    if configured is not None:
        return (configured,)
    found = []
    for addr in sources:
        if addr.prefixlen < _FULL_PREFIX[family] and addr.network not in found:
            found.append(addr.network)
    return tuple(found)


def _needs_onlink(gateway: IPAddress | None, family: int, sources: tuple[Address, ...]) -> bool:
    """Whether the gateway's nexthop must say `onlink`.

    The kernel checks a nexthop's gateway against the *main* table.  A
    profile whose routes live in another table (NetworkManager's
    ipv4.route-table) leaves even the connected prefix out of main, and a
    configured gateway may lie outside every prefix the link has: both are
    refused without onlink.  The gateway of an IPv4 uplink is always on that
    link, so onlink is always true there; an IPv6 link-local gateway is on
    the link by definition and needs no flag.
    """
    if gateway is None:
        return False
    if family == 4:
        return True
    return not gateway.is_link_local and not any(gateway in a.network for a in sources)


@functools.lru_cache(maxsize=8192)  # the same inputs: the same side, not a new one to compare
def _judge(
    learned: MainDefault | None,
    link: ObservedLink,
    entry: LinkConfig,
    family: int,
    clash: Exclusion | None,
    manager_gateway: IPAddress | None = None,
) -> _Side:
    sources = link.addresses_of(family)
    addresses = tuple(a.address for a in sources)
    networks = _networks(entry, family, sources)
    gateway: IPAddress | None = entry.gateway(family)
    learned_onlink = False
    if link.point_to_point:
        gateway = None  # the device itself is the next hop
    elif gateway is None:
        if learned is not None:
            gateway, learned_onlink = learned.gateway, learned.onlink
        elif manager_gateway is not None:
            # NetworkManager knows a gateway it did not put in main (a profile
            # with a route table of its own, a never-default DHCP lease).
            gateway = manager_gateway
    gateway = canonical(gateway) if gateway is not None else None  # the kernel's own object for it
    onlink = learned_onlink or _needs_onlink(gateway, family, sources)
    routable = link.point_to_point or gateway is not None
    # An IPv6 WAN may have no global address at all: its ISP delegated a prefix (used on
    # the LAN) and the link itself speaks link-local only.  It still carries traffic.
    addressed = bool(addresses) or (family == 6 and bool(entry.delegated) and link.has_link_local)
    has_table = link.admin_up and addressed and routable and clash is None
    reason: Exclusion | None = None
    if link.index > c.MAX_IFINDEX:
        reason = Exclusion(Out.BEYOND_ID_RANGE, family, detail=str(link.index))
        has_table = False
    elif clash is not None:
        reason = clash
    elif not link.admin_up:
        reason = Exclusion(Out.ADMIN_DOWN, family)
    elif not link.carrier:
        reason = Exclusion(Out.NO_CARRIER, family)
    elif link.oper_state not in ("up", "unknown"):
        reason = Exclusion(Out.NOT_OPERATIONAL, family, detail=link.oper_state)  # wifi re-authenticating
    elif not addressed:
        reason = Exclusion(Out.NO_ADDRESS, family)
    elif not addresses:
        # balanced traffic would need a source of its own here (or NAT66 to one)
        reason = Exclusion(Out.DELEGATED_ONLY, family)
    elif not routable:
        reason = Exclusion(Out.NO_GATEWAY, family)
    return _Side(
        link=link,
        entry=entry,
        family=family,
        addresses=addresses,
        networks=networks,
        gateway=gateway,
        onlink=onlink,
        has_table=has_table,
        eligible=reason is None,
        reason=reason,
    )


def _clashes(pairs: list[tuple[ObservedLink, LinkConfig]], family: int) -> dict[int, Exclusion]:
    """Links sharing an address with an earlier link: ifindex -> reason (the later one loses)."""
    return _clashes_of(tuple(link for link, _entry in pairs), family)


@functools.lru_cache(maxsize=16)  # the same links (the mirror's objects): the same answer, read only
def _clashes_of(links: tuple[ObservedLink, ...], family: int) -> dict[int, Exclusion]:
    owner: dict[IPAddress, ObservedLink] = {}
    out: dict[int, Exclusion] = {}
    for link in links:
        for addr in link.addresses_of(family):
            first = owner.setdefault(addr.address, link)
            if first is not link and link.index not in out:
                detail = f"address {addr.address} is also on {first.name}"
                out[link.index] = Exclusion(Out.ADDRESS_CLASH, family, detail=detail)
    return out


def _link_table_routes(side: _Side) -> list[Route]:
    table = c.link_table(side.link.index)
    family = side.family
    metric = _METRIC[family]
    routes = [
        Route(
            family=family,
            table=table,
            dst=_DEFAULT_DST[family],
            metric=metric,
            oif=side.link.index,
            gateway=side.gateway,
            onlink=side.onlink,
        )
    ]
    for network in side.networks:
        routes.append(
            Route(
                family=family,
                table=table,
                dst=network,
                metric=metric,
                oif=side.link.index,
                scope="link" if family == 4 else "universe",  # IPv6 routes have no scope
                prefsrc=_source_in(side.addresses, network) if family == 4 else None,
            )
        )
    return routes


def _source_in(addresses: Iterable[IPAddress], network: IPNetwork) -> IPAddress | None:
    for addr in addresses:
        if addr in network:
            return addr
    return None


def _out(side: _Side, why: Exclusion) -> _Side:
    return replace(side, eligible=False, reason=why)


def _overridden(side: _Side, overrides: Overrides) -> _Side:
    """An admin's disable/drain takes a link out of the group; its table and source rule
    stay, so connections already using its address carry on and probes still work."""
    if not side.eligible:
        return side
    if side.link.name in overrides.disabled:
        return _out(side, Exclusion(Out.DISABLED, side.family))
    if side.link.name in overrides.draining:
        return _out(side, Exclusion(Out.DRAINING, side.family))
    return side


def _health_judged(
    family_sides: list[_Side], verdicts: HealthVerdicts, family: int
) -> tuple[list[_Side], str]:
    """Take out the links whose probes fail -- unless every one of them fails at once.

    When all probed links of a family go silent together while their
    carriers are up, the targets (or the path to them) are the likelier
    fault: the links stay, and the note says so.
    """
    candidates = [s for s in family_sides if s.eligible]
    failing = [s for s in candidates if (s.link.name, family) in verdicts.down]
    if not failing:
        return family_sides, ""
    # Links still waiting for their first answers (probing) have not failed: they
    # do not count as "every link fails at once" -- and stay out until they answer.
    failed = [s for s in failing if verdicts.down[(s.link.name, family)].state is not HealthState.PROBING]
    if failed and len(failed) == len(candidates) and len(candidates) > 1:
        names = ", ".join(s.link.name for s in failed)
        return family_sides, (
            f"IPv{family}: every link's probes fail at once ({names}): the targets are the likelier "
            "fault, so the links stay in use -- check the health targets"
        )
    out = []
    for side in family_sides:
        why = verdicts.down.get((side.link.name, family))
        if side.eligible and why is not None:
            side = _out(side, Exclusion(Out.HEALTH, family, health=why))
        out.append(side)
    return out, ""


def _connectivity_gated(side: _Side, device: ManagedDevice | None, config: Config) -> _Side:
    """A captive portal or limited connectivity (as NetworkManager reports it) carries no
    balanced traffic; the link's table and source rule stay, so NetworkManager's own check
    and a login page opened through the link still work."""
    if not side.eligible or device is None or not config.require_full_connectivity:
        return side
    state = device.connectivity4 if side.family == 4 else device.connectivity6
    if state == "portal":
        return _out(side, Exclusion(Out.PORTAL, side.family))
    if state == "limited" and device.connectivity_checked:
        return _out(side, Exclusion(Out.LIMITED, side.family))
    return side


def link_tier(entry: LinkConfig, device: ManagedDevice | None, config: Config) -> int:
    """The entry's tier; else the metered tier when NetworkManager says metered; else 1."""
    if entry.tier is not None:
        return entry.tier
    if device is not None and device.metered in ("yes", "guess-yes") and config.metered_tier > 0:
        return config.metered_tier
    return 1


def _tiered(family_sides: list[_Side], devices: dict[str, ManagedDevice], config: Config) -> list[_Side]:
    """Only the best tier with an eligible link carries traffic; the others stand by."""
    if devices or any(s.entry.tier is not None for s in family_sides):  # (a judged side's tier is 1)
        sides = [_with_tier(s, link_tier(s.entry, devices.get(s.link.name), config)) for s in family_sides]
    else:
        sides = family_sides  # no tiers anywhere: every link is in the first (a side's own)
    tiers = [s.tier for s in sides if s.eligible]
    if not tiers:
        return sides
    best = min(tiers)
    return [
        _out(s, Exclusion(Out.STANDBY, s.family, tier=s.tier, best=best))
        if s.eligible and s.tier > best
        else s
        for s in sides
    ]


def _with_tier(side: _Side, tier: int) -> _Side:
    return side if side.tier == tier else replace(side, tier=tier)  # unchanged: the same object


def _legacy_v6_members(family_sides: list[_Side]) -> list[_Side]:
    """The kernel refuses device-only hops in an IPv6 RTA_MULTIPATH route.

    Without nexthop objects, a point-to-point link can only be IPv6's sole
    route: keep gateway links, or else the first point-to-point one.
    """
    eligible = [s for s in family_sides if s.eligible]
    if len(eligible) < 2:
        return family_sides
    keep = {id(s) for s in eligible if s.gateway is not None} or {id(eligible[0])}
    why = Exclusion(Out.LEGACY_V6_POINT_TO_POINT, 6)
    return [s if not s.eligible or id(s) in keep else _out(s, why) for s in family_sides]


def resolve_group_kind(config: Config, observed: Observed) -> tuple[GroupKind, str]:
    """The group kind to use on this kernel, and a note when it differs from the config."""
    feats = observed.features
    wanted = config.group
    if wanted is GroupKind.AUTO:
        if feats.resilient_groups:
            return GroupKind.RESILIENT, ""
        if feats.nexthop_objects:
            return GroupKind.HASH_THRESHOLD, ""
        return GroupKind.LEGACY, ""
    if wanted is GroupKind.RESILIENT and not feats.resilient_groups:
        fallback = GroupKind.HASH_THRESHOLD if feats.nexthop_objects else GroupKind.LEGACY
        return fallback, f"kernel has no resilient nexthop groups: using {fallback.value}"
    if wanted is GroupKind.HASH_THRESHOLD and not feats.nexthop_objects:
        return GroupKind.LEGACY, "kernel has no nexthop objects: using a legacy multipath route"
    return wanted, ""


def resilient_buckets(config: Config) -> int:
    """Bucket count from the configured weights, so it does not change as links come and go.

    A glob entry may match several links: it counts four times.
    """
    if uses_auto(config.links):  # measured weights move: enough buckets for any ratio
        return c.RES_BUCKETS_AUTO
    total = sum(e.weight * (4 if e.is_glob else 1) for e in config.links)
    wanted = c.RES_BUCKETS_PER_WEIGHT * max(total, 1)
    buckets = c.RES_BUCKETS_MIN
    while buckets < wanted and buckets < c.RES_BUCKETS_MAX:
        buckets *= 2
    return buckets


def _balance(
    family: int,
    sides: list[_Side],
    kind: GroupKind,
    buckets: int,
    timers: c.ResilientTimers,
    weights: dict[int, int],
) -> tuple[list[Nexthop], list[NexthopGroup], list[Route]]:
    eligible = sorted((s for s in sides if s.eligible), key=lambda s: s.link.index)
    if not eligible:
        return [], [], []
    dst, metric = _DEFAULT_DST[family], _METRIC[family]
    if kind is GroupKind.LEGACY:
        hops = [
            PathHop(oif=s.link.index, gateway=s.gateway, weight=weights[s.link.index], onlink=s.onlink)
            for s in eligible
        ]
        return [], [], [default_route(family, c.TABLE_BALANCE, hops)]
    nexthops = [_member(family, s.link.index, s.gateway, s.onlink) for s in eligible]
    resilient = kind is GroupKind.RESILIENT
    group = NexthopGroup(
        id=c.group_id(family),
        family=family,
        members=tuple(sorted((nh.id, weights[s.link.index]) for nh, s in zip(nexthops, eligible))),
        resilient=resilient,
        buckets=buckets if resilient else 0,
        idle_timer=timers.idle_s if resilient else 0,
        unbalanced_timer=timers.unbalanced_s if resilient else 0,
    )
    route = Route(family=family, table=c.TABLE_BALANCE, dst=dst, metric=metric, nhid=group.id)
    return nexthops, [canonical(group)], [canonical(route)]


@functools.lru_cache(maxsize=8192)  # the same object each round while the link is the same
def _member(family: int, index: int, gateway: IPAddress | None, onlink: bool) -> Nexthop:
    nhid = c.link_nexthop_id(family, index)
    return canonical(Nexthop(id=nhid, family=family, oif=index, gateway=gateway, onlink=onlink))


def _hash_sysctls(config: Config, observed: Observed) -> tuple[list[Sysctl], list[str]]:
    out: list[Sysctl] = []
    notes: list[str] = []
    for proto in ("ipv4", "ipv6"):
        if observed.features.hash_fields:
            out.append(Sysctl(f"net/{proto}/fib_multipath_hash_policy", str(c.HASH_POLICY_CUSTOM)))
            out.append(Sysctl(f"net/{proto}/fib_multipath_hash_fields", str(_HASH_FIELDS[config.balance])))
        else:
            out.append(Sysctl(f"net/{proto}/fib_multipath_hash_policy", str(_HASH_FALLBACK[config.balance])))
    if not observed.features.hash_fields and config.balance is BalanceMode.PER_CLIENT:
        notes.append("kernel has no fib_multipath_hash_fields: per-client balances per (source, destination)")
    return out, notes


@functools.lru_cache(maxsize=4096)
def _host_network(addr: IPAddress) -> IPNetwork:
    """The address as a /32 or /128 (a rule's source): the same object each round."""
    return canonical(ipaddress.ip_network((addr, addr.max_prefixlen)))


def _link_sysctls(link: ObservedLink) -> tuple[Sysctl, ...]:
    return _device_sysctls(link.name)


@functools.lru_cache(maxsize=4096)  # the same objects each round: a set of them hashes once
def _device_sysctls(name: str) -> tuple[Sysctl, ...]:
    # Loose rp_filter: strict mode drops replies that arrive on a link the
    # balance route would not have chosen for the reverse direction.
    return (
        Sysctl(f"net/ipv4/conf/{name}/rp_filter", "2"),
        Sysctl(f"net/ipv4/conf/{name}/ignore_routes_with_linkdown", "1"),
        Sysctl(f"net/ipv6/conf/{name}/ignore_routes_with_linkdown", "1"),
    )


@dataclass
class _Parts:
    """What plan() gathers, family by family, before it freezes them into Desired."""

    rules: list[Rule] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    nexthops: list[Nexthop] = field(default_factory=list)
    groups: list[NexthopGroup] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def plan(
    config: Config,
    observed: Observed,
    overrides: Overrides = NO_OVERRIDES,
    verdicts: HealthVerdicts = NO_VERDICTS,
    nat_in_place: dict[int, frozenset[str]] | None = None,
    capacities: Mapping[str, float] | None = None,
) -> Desired:
    """What the kernel should hold.  `nat_in_place` (family -> links masqueraded now) is
    given only after nftables failed: a link whose NAT is missing then carries no
    balanced traffic, so LAN addresses never leave un-NATed.  `capacities`: the
    capacity (bits/s, its larger direction's) applied to each `weight: auto` link (plan/weights.py)."""
    pairs = managed_links(config, observed)
    if observed.delegations:
        pairs = [(link, _with_learned(entry, observed.learned_prefixes(link.name))) for link, entry in pairs]
    named = kernel_weights([(link.name, entry) for link, entry in pairs], capacities or {})
    weights = {link.index: named[link.name] for link, _ in pairs}
    kind, kind_note = resolve_group_kind(config, observed)
    buckets = resilient_buckets(config)
    parts = _Parts(notes=([kind_note] if kind_note else []) + _refused_names(config, observed))
    parts.notes += _unmeasurable(pairs, config)
    parts.notes += observed.delegation_notes
    sides: dict[tuple[int, int], _Side] = {}
    for family in (4, 6):
        family_sides = _judged(config, observed, pairs, family, overrides, verdicts, nat_in_place, parts)
        for side in family_sides:
            sides[(side.link.index, family)] = side
            _link_objects(side, family, config, parts)
        if kind is GroupKind.LEGACY and family == 6:
            family_sides = _legacy_v6_members(family_sides)
            sides.update({(side.link.index, family): side for side in family_sides})
        nhs, grps, balance = _balance(family, family_sides, kind, buckets, config.timers, weights)
        parts.nexthops += nhs
        parts.groups += grps
        parts.routes += balance
        if any(s.has_table for s in family_sides) or balance:
            parts.rules.append(
                Rule(
                    family=family, priority=c.PRIO_MAIN_SUPPRESS, table=c.TABLE_MAIN, suppress_prefixlength=0
                )
            )
        if balance:
            _balance_rule(observed, family, {link.index for link, _ in pairs}, parts)
    if observed.delegations:
        _learned_prefixes_on_lan(observed, parts)
    rules, routes, notes = parts.rules, parts.routes, parts.notes

    sysctls, hash_notes = _hash_sysctls(config, observed)
    notes.extend(hash_notes)
    for link, _entry in pairs:
        sysctls.extend(_link_sysctls(link))

    link_plans = tuple(_link_plan(link, entry, sides, weights[link.index]) for link, entry in pairs)
    firewall, mark_rules, firewall_notes = _firewall(config, pairs, sides, observed.features.nftables)
    rules += mark_rules
    notes.extend(firewall_notes)
    candidates = _pin_candidates(pairs, sides, weights) if config.pins else []
    pin_rules, pin_routes, pin_notes = plan_pins(config.pins, candidates)
    rules += pin_rules
    routes += pin_routes
    notes.extend(pin_notes)
    return Desired(
        rules=frozenset(rules),
        routes=frozenset(routes),
        nexthops=frozenset(parts.nexthops),
        groups=frozenset(parts.groups),
        sysctls=frozenset(sysctls),
        links=link_plans,
        notes=tuple(notes),
        firewall=firewall,
    )


@functools.lru_cache(maxsize=4096)  # the same entry object while nothing was learned anew
def _with_learned(entry: LinkConfig, learned: tuple[ipaddress.IPv6Network, ...]) -> LinkConfig:
    """A link's entry with the prefixes learned as its delegation after the config's own
    (plan/delegations.py): they get its rules (and NAT66's exemption) as the config's do."""
    if not learned:
        return entry
    return replace(entry, delegated=entry.delegated + learned)  # none overlaps the config's (learn)


def _judged(
    config: Config,
    observed: Observed,
    pairs: list[tuple[ObservedLink, LinkConfig]],
    family: int,
    overrides: Overrides,
    verdicts: HealthVerdicts,
    nat_in_place: dict[int, frozenset[str]] | None,
    parts: _Parts,
) -> list[_Side]:
    """Each managed link's side of one family, judged in order: its address and gateway,
    the admin, NAT in place, health, the manager's connectivity, tiers."""
    clashes = _clashes(pairs, family)
    learned = observed.main_gateways()
    nm_gateways = _manager_gateways(observed)
    sides = [
        _judge(
            learned.get((link.index, family)),
            link,
            entry,
            family,
            clashes.get(link.index),
            nm_gateways.get((link.name, family)),
        )
        for link, entry in pairs
    ]
    if overrides.disabled or overrides.draining:
        sides = [_overridden(s, overrides) for s in sides]
    if nat_in_place is not None:
        sides = [_nat_gated(s, config, nat_in_place[family]) for s in sides]
    sides, health_note = _health_judged(sides, verdicts, family)
    if health_note:
        parts.notes.append(health_note)
    devices = {d.name: d for d in observed.manager}
    if devices and config.require_full_connectivity:
        sides = [_connectivity_gated(s, devices.get(s.link.name), config) for s in sides]
    sides = _tiered(sides, devices, config)
    if family == 4 and any(e.nat_address is not None for e in config.links):
        sides = [_shared_address_gated(s) for s in sides]
    return sides


def _shared_address_gated(side: _Side) -> _Side:
    """A pair's backup: a link NATed to a shared address the other router holds carries no
    balanced traffic (its connections would get an address the ISP routes there); its table
    and source rules stay (probes, the move to come).  Last of the gates: a link out for any
    other reason says that reason, and tiers count the link as present -- so a lower tier
    does not take over on the backup."""
    address = side.entry.nat_address
    if not side.eligible or address is None or address in side.addresses:
        return side
    return _out(side, Exclusion(Out.SHARED_ADDRESS_ABSENT, side.family, detail=str(address)))


def _link_objects(side: _Side, family: int, config: Config, parts: _Parts) -> None:
    routes, rules = _link_slice(side, family, config.nat66)
    parts.routes += routes
    parts.rules += rules


@functools.lru_cache(maxsize=8192)  # an unchanged side: the same objects as the last round
def _link_slice(side: _Side, family: int, nat66: bool) -> tuple[tuple[Route, ...], tuple[Rule, ...]]:
    """A link's own table and the rules into it: its sources, its delegated prefixes, and
    the tunnel's own packets kept out of the balance."""
    routes: list[Route] = []
    rules: list[Rule] = []
    if side.has_table:
        routes += _link_table_routes(side)
        table = c.link_table(side.link.index)
        sources = side.addresses
        if family == 4 and side.entry.nat_address is not None and side.entry.nat_address not in sources:
            sources += (side.entry.nat_address,)  # ready for the shared address when it moves here
        for addr in sources:
            src = _host_network(addr)
            rules.append(Rule(family=family, priority=c.PRIO_LINK_SOURCE, table=table, src=src))
        if family == 6 and (not nat66 or not side.addresses):
            # BCP38: other ISPs drop sources from this one's delegated prefixes
            for prefix in side.entry.delegated:
                rules.append(Rule(family=6, priority=c.PRIO_LINK_SOURCE, table=table, src=canonical(prefix)))
    if side.entry.tunnel_mark is not None:
        # the tunnel's own encapsulated packets never enter the balance (it could hold the tunnel)
        rules.append(
            Rule(
                family=family,
                priority=c.PRIO_TUNNEL,
                table=c.TABLE_MAIN,
                fwmark=side.entry.tunnel_mark,
                fwmask=c.TUNNEL_MARK_MASK,
            )
        )
    return tuple(map(canonical, routes)), tuple(map(canonical, rules))


def _learned_prefixes_on_lan(observed: Observed, parts: _Parts) -> None:
    """Every learned prefix is on-link on its LAN interface in a table of wanhooks' too:
    `to <prefix> lookup <that table>` comes after main's rule, so the manager's own route wins
    while it has one.  When it takes its route away with the address -- NetworkManager does,
    at a renumbering -- the answers to the hosts still holding addresses from it (kept for
    them: plan/delegations.py) still find them, from that moment: a route added only once the
    prefix left would leave a gap in which they went back out to an ISP."""
    by_name = {link.name: link for link in observed.links}
    for d in observed.delegations:
        lan = by_name.get(d.lan)
        if lan is None or not lan.admin_up:
            continue
        parts.routes.append(
            canonical(
                Route(family=6, table=c.TABLE_LAN_PREFIXES, dst=d.prefix, metric=_METRIC[6], oif=lan.index)
            )
        )
        parts.rules.append(
            canonical(Rule(family=6, priority=c.PRIO_LAN_PREFIX, table=c.TABLE_LAN_PREFIXES, dst=d.prefix))
        )


def _balance_rule(observed: Observed, family: int, managed: set[int], parts: _Parts) -> None:
    """The rule into the balance table -- withheld while a full-tunnel VPN holds the default
    -- and what main's own defaults mean for it."""
    vpn = _full_tunnel(observed, family, managed)
    policy_vpn = [p for p in observed.policy_defaults if p.family == family]
    if vpn is not None:
        parts.notes.append(
            f"IPv{family}: default route in main via {vpn.name}, which is not a managed link "
            "(a full-tunnel VPN?): balancing withheld so traffic keeps using it"
        )
        return
    if policy_vpn:
        parts.notes.append(
            f"IPv{family}: rule {policy_vpn[0].priority} sends all traffic to table "
            f"{policy_vpn[0].table}, "
            "which holds a default route (a full-tunnel VPN such as wg-quick?): balancing withheld "
            "so traffic keeps using it"
        )
        return
    parts.rules.append(Rule(family=family, priority=c.PRIO_BALANCE, table=c.TABLE_BALANCE))
    for other in _unlisted_uplinks(observed, family, managed):
        parts.notes.append(
            f"IPv{family}: {other.name} holds a default route in main but is not in the config: "
            "it is not balanced (main's default is used only when no managed link is)"
        )
    blocker = _blocking_default(observed, family)
    if blocker is not None:
        parts.notes.append(
            f"IPv{family}: main's best default route is {blocker.kind} (metric {blocker.metric}); "
            "the kernel ends every lookup there, before wanhooks' balance rule: nothing is "
            "balanced until it is removed or outranked by a unicast default"
        )


def _unmeasurable(pairs: list[tuple[ObservedLink, LinkConfig]], config: Config) -> list[str]:
    """weight: auto reads a link's queue in its probes' round trips: without probes, none."""
    notes = []
    for link, entry in pairs:
        if not entry.auto_weight:
            continue
        settings = (entry.health or _NO_HEALTH).resolved(config.health)
        if not settings.enabled or not settings.targets:
            notes.append(
                f"{link.name}: weight: auto without health probes cannot tell when the link is full: "
                "it is weighed by what it carried, at least the measured auto links' mean "
                "(give it health targets, or a weight)"
            )
    return notes


def _nat_gated(side: _Side, config: Config, in_place: frozenset[str]) -> _Side:
    if side.family == 4:
        wanted = config.nat == "masquerade" or side.entry.nat_address is not None
    else:
        wanted = config.nat66
    if not wanted or not side.eligible or not side.addresses or side.link.name in in_place:
        return side
    return _out(side, Exclusion(Out.NAT_MISSING, side.family))


def _pin_candidates(
    pairs: list[tuple[ObservedLink, LinkConfig]], sides: dict[tuple[int, int], _Side], weights: dict[int, int]
) -> list[Candidate]:
    """Managed links as pins see them, in config order.  A standby link may carry pinned
    traffic (pinning a backup link is the point); a failed, disabled or draining one may not."""
    out = []
    for link, _entry in pairs:
        for family in (4, 6):
            side = sides[(link.index, family)]
            standby = side.reason is not None and side.reason.out is Out.STANDBY
            may_carry = side.has_table and (side.eligible or standby)
            out.append(
                Candidate(
                    name=link.name,
                    index=link.index,
                    family=family,
                    tier=side.tier,
                    weight=weights[link.index],
                    gateway=side.gateway,
                    onlink=side.onlink,
                    may_carry=may_carry,
                    why_not="" if may_carry else str(side.reason or "no table"),
                )
            )
    return out


def _firewall(
    config: Config,
    pairs: list[tuple[ObservedLink, LinkConfig]],
    sides: dict[tuple[int, int], _Side],
    observed_nft: bool,
) -> tuple[Firewall, list[Rule], list[str]]:
    """wanhooks' nftables table and the fwmark rules of sticky connections.

    NAT covers every managed link with an address, whatever its health, so
    no flow ever leaves a link un-NATed.  A link with a table gets a sticky
    mark and, per family it has a table in, `fwmark <mark> lookup <table>`
    (after main's suppress rule: LAN and specific routes still win).
    """
    masquerade = config.nat == "masquerade"
    sticky = config.sticky and observed_nft
    links: list[FirewallLink] = []
    rules: list[Rule] = []
    notes: list[str] = []
    taken: dict[int, str] = {}
    # an `id:` first, then by name: two routers of a pair settle a shared mark alike
    for link, entry in sorted(pairs, key=lambda pair: (pair[1].link_id is None, pair[0].name)):
        tables = tuple(f for f in (4, 6) if sides[(link.index, f)].has_table)
        piece = _firewall_piece(link, entry, tables, sticky, masquerade, config.nat66, observed_nft)
        if piece.mark and piece.mark in taken:
            notes.append(
                f"{link.name}: no sticky connections: its mark {piece.mark:#x} is {taken[piece.mark]}'s "
                "(give one of them an id: of its own)"
            )
            piece = _firewall_piece(link, entry, tables, False, masquerade, config.nat66, observed_nft)
        if piece.mark:
            taken[piece.mark] = link.name
        rules += piece.rules
        if piece.note:
            notes.append(piece.note)
        if piece.link is not None:
            links.append(piece.link)
    if config.sticky and not observed_nft and pairs:
        notes.append("no nft command: sticky connections are off (install nftables)")
    return Firewall(links=tuple(links), sticky=sticky, mss_clamp=config.mss_clamp), rules, notes


@dataclass(frozen=True)
class _FirewallPiece:
    """One link's part of the firewall: its sticky mark, the rules of that mark, its entry
    in the table (None: nothing to do for it), and a note."""

    mark: int
    rules: tuple[Rule, ...]
    link: FirewallLink | None
    note: str | None


@functools.lru_cache(maxsize=4096)  # the same piece each round while the link is the same
def _firewall_piece(
    link: ObservedLink,
    entry: LinkConfig,
    tables: tuple[int, ...],
    sticky: bool,
    masquerade: bool,
    nat66_wanted: bool,
    observed_nft: bool,
) -> _FirewallPiece:
    link_id = entry.link_id if entry.link_id is not None else c.name_link_id(link.name)
    mark = c.sticky_mark(link_id) if sticky and tables else 0
    rules = tuple(_mark_rule(family, link.index, mark) for family in tables) if mark else ()
    # a shared address is NATed to whether or not it is here now: on the pair's backup the
    # link carries no balanced traffic, and connections synced from the master keep theirs
    nat = entry.nat_address is not None or (masquerade and bool(link.addresses_of(4)))
    nat66 = nat66_wanted and bool(link.addresses_of(6))
    note = None
    if nat66_wanted and not nat66 and 6 in tables:
        note = f"{link.name}: no NAT66: it has no global IPv6 address to masquerade to"
    near = _near_side(link) if observed_nft else ()
    entry_in_table = None
    if mark or nat or nat66 or near:
        entry_in_table = FirewallLink(link.name, mark, nat, nat66, entry.delegated, near, entry.nat_address)
    return _FirewallPiece(mark, rules, entry_in_table, note)


@functools.lru_cache(maxsize=8192)  # the same objects each round while the link is the same
def _mark_rule(family: int, index: int, mark: int) -> Rule:
    table = c.link_table(index)
    return canonical(
        Rule(family=family, priority=c.PRIO_MARK, table=table, fwmark=mark, fwmask=c.STICKY_MARK_MASK)
    )


@functools.lru_cache(maxsize=4096)
def _near_side(link: ObservedLink) -> tuple[IPNetwork, ...]:
    """The link's near side, whose packets are no evidence that the internet answers: its
    own prefixes (the gateway, the modem), and IPv6's link-local ones.  () without an
    address: nothing to count."""
    near = sorted({a.network for a in link.addresses if a.can_source}, key=str)
    if any(n.version == 6 for n in near):
        near.append(LINK_LOCAL6)
    return tuple(near)


def _link_plan(
    link: ObservedLink, entry: LinkConfig, sides: dict[tuple[int, int], _Side], weight: int
) -> LinkPlan:
    return _link_plan_of(link, entry, sides[(link.index, 4)], sides[(link.index, 6)], weight)


@functools.lru_cache(maxsize=4096)  # the same object each round while its inputs are the same
def _link_plan_of(link: ObservedLink, entry: LinkConfig, side4: _Side, side6: _Side, weight: int) -> LinkPlan:
    per = {4: side4, 6: side6}
    has_table = any(s.has_table for s in per.values())
    return LinkPlan(
        name=link.name,
        index=link.index,
        weight=weight,
        auto_weight=entry.auto_weight,
        table=c.link_table(link.index) if has_table else None,
        eligible={f: s.eligible for f, s in per.items()},
        gateways={f: s.gateway for f, s in per.items()},
        addresses={f: s.addresses for f, s in per.items()},
        reasons={f: s.reason for f, s in per.items()},
        config_line=entry.line,
        tier=min(s.tier for s in per.values()),
    )


def connections_to_end(
    before: Desired | None, after: Desired, config: Config
) -> list[tuple[LinkPlan, int, Exclusion]]:
    """(link, family, why) for every link whose connections should end after this change
    (Exclusion.ends_connections says which reasons do)."""
    if before is None:
        return []
    was = {lp.name: lp for lp in before.links}
    pinned = {(r.family, r.table) for r in after.rules if c.PRIO_PIN_FIRST <= r.priority < c.PRIO_BALANCE}
    out = []
    for lp in after.links:
        old = was.get(lp.name)
        for family in (4, 6):
            if old is None or not old.eligible[family] or lp.eligible[family] or not lp.addresses[family]:
                continue
            reason = lp.reasons[family]
            if reason is not None and reason.ends_connections(
                config.flush_lower_tiers, pinned=(family, lp.table) in pinned
            ):
                out.append((lp, family, reason))
    return out


def probes_wanted(config: Config, observed: Observed) -> list[ProbeKey]:
    """The probers the config asks for on the links present now (health/machine.py has the model).

    A metered or standby link (tier 2 and up) keeps to its probe budget.
    """
    devices = {d.name: d for d in observed.manager}
    wanted: list[ProbeKey] = []
    for link, entry in managed_links(config, observed):
        budgeted = link_tier(entry, devices.get(link.name), config) > 1
        wanted += _link_probes(link, entry, config.health, budgeted)
    return wanted


@functools.lru_cache(maxsize=4096)  # asked every round for every link: the same keys
def _link_probes(
    link: ObservedLink, entry: LinkConfig, base: HealthConfig, budgeted: bool
) -> tuple[ProbeKey, ...]:
    settings = (entry.health or _NO_HEALTH).resolved(base)
    if not settings.enabled or not settings.targets:
        return ()
    wanted = []
    for family in (4, 6):
        targets = tuple(t for t in settings.targets if t.version == family)
        sources = link.addresses_of(family)
        if not targets or not sources:
            continue
        params = params_for(settings, targets)
        if entry.auto_weight:  # its capacity shows in the probes' round trips under load
            params = replace(params, measure=c.PROBE_MEASURE_S)
        if budgeted and settings.budget_mb_per_day:
            params = within_budget(params, family, float(settings.budget_mb_per_day))
        wanted.append(ProbeKey(link.name, family, sources[0].address, params))
    return tuple(wanted)
