"""The data that flows through wanhooks, as frozen dataclasses.

    Config    what the user asked for            (config/load.py builds it)
    Observed  what the kernel holds right now     (kernel/ builds it)
    Desired   what wanhooks wants the kernel to hold (plan/planner.py builds it)

Families are the integers 4 and 6 everywhere above the kernel seam; only the
netlink code speaks AF_INET/AF_INET6.
"""

from __future__ import annotations

import enum
import functools
import ipaddress
from dataclasses import dataclass, field, fields, replace
from typing import TypeVar

from . import constants as c
from .plan.verdicts import Exclusion

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
FAMILIES = (4, 6)

_C = TypeVar("_C")
_V = TypeVar("_V")
# One object per address or network value, wherever it was read (the kernel's messages, the
# config, plan()): objects that compare equal field by field then compare by identity, and
# an ipaddress comparison is a Python call.  Bounded: cleared, not grown, past this size.
_CANONICAL: dict[object, object] = {}
_CANONICAL_MAX = 65536


def canonical(value: _V) -> _V:
    found = _CANONICAL.get(value)
    if found is None:
        if len(_CANONICAL) >= _CANONICAL_MAX:
            _CANONICAL.clear()
        _CANONICAL[value] = found = value
    return found  # type: ignore[return-value]


def cached_hash(cls: type[_C]) -> type[_C]:
    """Keep a frozen dataclass's hash once computed: a round puts thousands of these in
    sets and dicts (plan, diff, the kernel mirror), and the fields' hash -- ipaddress
    objects hash through a hex string -- costs far more than the lookup."""
    field_hash = cls.__hash__

    def __hash__(self: object) -> int:  # noqa: N807 - the method it replaces
        try:
            return self.__dict__["_hash"]  # type: ignore[no-any-return]
        except KeyError:
            value = field_hash(self)
            object.__setattr__(self, "_hash", value)
            return value

    cls.__hash__ = __hash__  # type: ignore[method-assign]
    return cls


# --------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------


class BalanceMode(str, enum.Enum):
    PER_CONNECTION = "per-connection"  # 5-tuple: best spread
    PER_DESTINATION = "per-destination"  # src+dst: one site stays on one link (the seed)
    PER_CLIENT = "per-client"  # source address only: one LAN client, one uplink


class GroupKind(str, enum.Enum):
    AUTO = "auto"  # resilient where the kernel has it, else hash-threshold, else legacy
    RESILIENT = "resilient"
    HASH_THRESHOLD = "hash-threshold"
    LEGACY = "legacy"  # an RTA_MULTIPATH route, no nexthop objects


class RunMode(str, enum.Enum):
    """Who follows the links: the daemon (the hooks only nudge it), or the hooks themselves."""

    DAEMON = "daemon"  # `wanhooks run` follows every change; the dispatcher hooks nudge it
    HOOKS_ONLY = "hooks-only"  # no resident daemon: each dispatcher hook runs a one-shot apply


@cached_hash
@dataclass(frozen=True)
class HealthConfig:
    """How a link's health is probed and judged (health/machine.py explains the model).

    Every field is optional in the YAML; None means "take the top-level
    health section's value, else the default" (see resolved()).
    """

    targets: tuple[IPAddress, ...] | None = None  # probe targets, either family
    interval: float | None = None  # seconds between probes to each target (the fast pace)
    heartbeat: float | None = None  # seconds between an idle link's echoes; 0: every interval
    down_after: float | None = None  # seconds without replies before the link fails
    up_after: float | None = None  # seconds of replies before a failed link counts as good
    hold_down: float | None = None  # seconds a failed link must stay good before it returns
    silent_targets: int | None = None  # k: how many targets must be silent (None: all of them)
    enabled: bool | None = None
    # Probe traffic allowed a day on a metered or standby (tier >= 2) link; the
    # interval stretches to fit, and down_after with it.
    budget_mb_per_day: float | None = None
    kind: str | None = None  # icmp | tcp | dns (health.Kind)
    port: int | None = None  # tcp / dns: the port probed (None: 443 / 53)
    query: str | None = None  # dns: the name asked for
    max_rtt: float | None = None  # seconds; 0: no threshold
    max_loss: float | None = None  # percent of probes lost over loss_window; 0: no threshold
    loss_window: float | None = None  # seconds
    passive: bool | None = None  # traffic heard stands in for probes; unanswered hastens them

    def resolved(self, base: HealthConfig) -> HealthConfig:
        """This link's settings over the top-level ones over the defaults: every field set."""
        return _resolved(self, base)


@functools.lru_cache(maxsize=1024)  # asked for every link in every round: the same answer
def _resolved(layer: HealthConfig, base: HealthConfig) -> HealthConfig:
    values = {}
    for item in fields(HealthConfig):
        for each in (layer, base, HEALTH_DEFAULTS):
            value = getattr(each, item.name)
            if value is not None:
                values[item.name] = value
                break
    return replace(layer, **values)


HEALTH_DEFAULTS = HealthConfig(
    targets=(),
    interval=c.PROBE_INTERVAL_S,
    heartbeat=c.PROBE_HEARTBEAT_S,
    down_after=c.PROBE_DOWN_AFTER_S,
    up_after=c.PROBE_UP_AFTER_S,
    hold_down=c.PROBE_HOLD_DOWN_S,
    silent_targets=0,  # 0: all of the targets
    enabled=True,
    budget_mb_per_day=c.PROBE_BUDGET_MB_PER_DAY,
    kind="icmp",
    port=0,  # the kind's own (health.DEFAULT_PORTS)
    query=c.PROBE_DNS_QUERY,
    max_rtt=0.0,  # no threshold
    max_loss=0.0,
    loss_window=c.PROBE_LOSS_WINDOW_S,
    passive=True,
)


@dataclass(frozen=True)
class Capacity:
    """A link's rate as the admin knows it (`capacity:`): seeds and bounds `weight: auto`."""

    down_bps: float | None = None  # what the link receives (downloads)
    up_bps: float | None = None


def is_glob(interface: str) -> bool:
    """An fnmatch pattern (matching many interfaces), not one interface's name."""
    return any(ch in interface for ch in "*?[")


@cached_hash
@dataclass(frozen=True)
class LinkConfig:
    interface: str  # exact name or an fnmatch glob ("wl*")
    weight: int = 1  # 1..256; ignored with auto_weight (the measured capacity weighs the link)
    gateway4: ipaddress.IPv4Address | None = None
    gateway6: ipaddress.IPv6Address | None = None
    network4: ipaddress.IPv4Network | None = None
    network6: ipaddress.IPv6Network | None = None
    line: int = 0  # where the entry starts in its file, for messages
    health: HealthConfig | None = None  # overrides of the top-level health section
    tier: int | None = None  # 1..5; None: 1, or Config.metered_tier when NetworkManager says metered
    delegated: tuple[ipaddress.IPv6Network, ...] = ()  # IPv6 prefixes this ISP delegated (PD)
    # LAN interfaces numbered from this ISP's delegation (by whatever DHCPv6 client): their
    # dynamic global addresses' prefixes are learned as this link's (plan/delegations.py)
    delegated_to: tuple[str, ...] = ()
    tunnel_mark: int | None = None  # the fwmark the tunnel puts on its own encapsulated packets
    auto_weight: bool = False  # `weight: auto`: the daemon weighs it by its measured capacity
    capacity: Capacity | None = None  # with auto_weight: the admin's figure, a seed and a bound
    link_id: int | None = None  # `id:` 1..255: its identity on both routers of a pair (its mark)
    # NAT to this address (the WAN's shared address, which keepalived moves between a pair's
    # routers), not the link's own; balanced traffic only while the address is on the link
    nat_address: ipaddress.IPv4Address | None = None

    def gateway(self, family: int) -> IPAddress | None:
        return self.gateway4 if family == 4 else self.gateway6

    def network(self, family: int) -> IPNetwork | None:
        return self.network4 if family == 4 else self.network6

    @functools.cached_property  # asked for every entry whenever the links change
    def is_glob(self) -> bool:
        return is_glob(self.interface)


@dataclass(frozen=True)
class SeedWatchdog:
    """The seed's TESTIPS/WATCHDOG settings, kept for the health watchdog."""

    test_ips: tuple[IPAddress, ...] = ()
    enabled: bool = False


@dataclass(frozen=True)
class Pin:
    """Traffic sent to a chosen link or tier (router/pins.py).  Empty selectors match anything."""

    line: int = 0  # where the pin starts in its file, for messages
    to: tuple[IPNetwork, ...] = ()  # destination prefixes
    sources: tuple[IPNetwork, ...] = ()  # LAN clients (`from:`)
    proto: int | None = None  # an IP protocol number
    ports: tuple[int, int] | None = None  # destination ports, first..last (tcp, udp, sctp)
    link: str | None = None  # an interface name or glob; exactly one of link and tier
    tier: int | None = None
    fail_closed: bool = False  # when_down: fail -- refuse the traffic rather than balance it


@dataclass(frozen=True)
class Config:
    links: tuple[LinkConfig, ...]
    balance: BalanceMode = BalanceMode.PER_CONNECTION
    group: GroupKind = GroupKind.AUTO
    path: str = "<memory>"
    seed_watchdog: SeedWatchdog = field(default_factory=SeedWatchdog)
    # A gateway that vanishes while carrier and address stay (DHCP rebind,
    # `nmcli device reapply`) is kept this long before the link leaves.
    gateway_hold: float = 1.5
    health: HealthConfig = field(default_factory=lambda: HealthConfig())
    # Tier given to a link NetworkManager calls metered (yes / guess-yes) when its entry sets
    # no tier: a 3G stick or a phone only carries traffic while no tier-1 link can.  0: ignore.
    metered_tier: int = 2
    # A device NetworkManager reports as behind a captive portal or with limited
    # connectivity carries no balanced traffic until it reaches FULL.
    require_full_connectivity: bool = True
    # Executables run on every health transition (link, family, old and new state in the
    # environment); a missing directory means none.
    hooks_dir: str = "/etc/wanhooks/hooks.d"
    # When a tier-1 link returns, end the connections still on lower tiers (metered links).
    flush_lower_tiers: bool = True
    # Masquerade what leaves by a managed link ("masquerade"), or leave NAT to others ("none").
    nat: str = "none"
    # A connection stays on the link it started on (or arrived by): conntrack mark ->
    # fwmark rule -> that link's table, whatever the balance group does meanwhile.
    sticky: bool = True
    # Clamp the TCP MSS of forwarded SYNs to the route's MTU (PPPoE, LTE: MTU < 1500).
    mss_clamp: bool = False
    pins: tuple[Pin, ...] = ()
    nat66: bool = False  # masquerade IPv6 too (only when opted in: NAT66 breaks end-to-end)
    metrics: tuple[str, int] | None = None  # the Prometheus endpoint's address and port; None: off
    mode: RunMode = RunMode.DAEMON  # who follows the links: the daemon, or the hooks alone
    # The resilient group's timers, when the config sets them; None: chosen by `sticky`.
    resilient_timers: c.ResilientTimers | None = None

    @property
    def timers(self) -> c.ResilientTimers:
        """The resilient group's timers in force (constants.RES_TIMERS_STICKY explains the choice)."""
        if self.resilient_timers is not None:
            return self.resilient_timers
        return c.RES_TIMERS_STICKY if self.sticky else c.RES_TIMERS_UNSTICKY


@dataclass(frozen=True)
class Overrides:
    """What an admin said at run time (`wanhooks link disable|drain|enable NAME`)."""

    disabled: frozenset[str] = frozenset()  # out of the balance group
    draining: frozenset[str] = frozenset()  # no new flows; its own connections finish on it


# --------------------------------------------------------------------------
# Observed (the kernel's view, read through the seam)
# --------------------------------------------------------------------------

# Interface flags we look at (linux/if.h).
IFF_UP = 0x1
IFF_LOOPBACK = 0x8
IFF_POINTOPOINT = 0x10
IFF_NOARP = 0x80
IFF_LOWER_UP = 0x10000


@cached_hash
@dataclass(frozen=True)
class Address:
    family: int
    address: IPAddress
    prefixlen: int
    scope: str = "global"  # global | link | host
    secondary: bool = False
    tentative: bool = False
    deprecated: bool = False
    # When its lifetimes end (time.monotonic() seconds; None: forever), as the kernel last
    # told.  Not part of its identity: a renewal changes them and nothing else, and the
    # mirror's confirming dump must not call that a disagreement.  Read by the prefix
    # delegations (plan/delegations.py): a LAN address numbered from an ISP's delegation.
    preferred_until: float | None = field(default=None, compare=False)
    valid_until: float | None = field(default=None, compare=False)

    @property
    def dynamic(self) -> bool:
        """Given for a time (DHCPv6, SLAAC, a delegation), not configured forever."""
        return self.valid_until is not None

    @property
    def network(self) -> IPNetwork:
        return _network_of(self.address, self.prefixlen)

    @property
    def can_source(self) -> bool:
        """Global, settled address a link can source traffic from."""
        return self.scope == "global" and not self.tentative


@functools.lru_cache(maxsize=4096)
def _network_of(address: IPAddress, prefixlen: int) -> IPNetwork:
    """An address's prefix.  Cached across rounds: every round snapshots the same addresses
    afresh, and building an ip_network is most of what plan() spends on them."""
    return canonical(ipaddress.ip_network((address, prefixlen), strict=False))


@dataclass(frozen=True)
class LinkCounters:
    """A link's packet and byte counters (IFLA_STATS64), since it was created."""

    rx_packets: int
    tx_packets: int
    rx_bytes: int
    tx_bytes: int
    index: int = 0  # the device's ifindex: a new one means the counters started again


@cached_hash
@dataclass(frozen=True)
class ObservedLink:
    index: int
    name: str
    flags: int = IFF_UP | IFF_LOWER_UP
    oper_state: str = "up"  # up | down | unknown | dormant | lowerlayerdown | ...
    has_lladdr: bool = True  # a link-layer address (ethernet) or none (tun, raw-IP wwan, ppp)
    kind: str = ""  # IFLA_INFO_KIND: veth, tun, ... ("" for physical)
    addresses: tuple[Address, ...] = ()

    @property
    def admin_up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def carrier(self) -> bool:
        return bool(self.flags & IFF_LOWER_UP)

    @property
    def point_to_point(self) -> bool:
        """No neighbour to resolve: traffic goes to the device itself.

        Decided from what the kernel says about the device, never its name:
        POINTOPOINT (ppp, tun in p2p mode), NOARP without a link-layer
        address (raw-IP wwan, tun, wireguard).
        """
        if self.flags & IFF_POINTOPOINT:
            return True
        return bool(self.flags & IFF_NOARP) and not self.has_lladdr

    @property
    def has_link_local(self) -> bool:
        return any(a.family == 6 and a.scope == "link" and not a.tentative for a in self.addresses)

    def addresses_of(self, family: int) -> tuple[Address, ...]:
        return tuple(a for a in self.addresses if a.family == family and a.can_source)


@cached_hash
@dataclass(frozen=True)
class MainDefault:
    """A default route in the main table: where managers put a link's gateway."""

    family: int
    oif: int  # 0 for a route with no device (blackhole, unreachable, prohibit)
    gateway: IPAddress | None
    onlink: bool = False
    metric: int = 0
    protocol: int = 0
    kind: str = "unicast"  # unicast | blackhole | unreachable | prohibit
    dead: bool = False  # the kernel flags its nexthop dead or linkdown

    @property
    def live(self) -> bool:
        """A unicast route the kernel does not flag dead (linkdown)."""
        return self.kind == "unicast" and not self.dead


@dataclass(frozen=True)
class ManagedDevice:
    """What NetworkManager says about one activated device (D-Bus), beyond the kernel's view."""

    name: str
    device_type: str = ""
    gateway4: str | None = None  # also for profiles whose routes are not in main
    gateway6: str | None = None
    connectivity4: str = "unknown"  # unknown | none | portal | limited | full
    connectivity6: str = "unknown"
    metered: str = "unknown"  # unknown | yes | no | guess-yes | guess-no
    # NetworkManager really checks connectivity (over HTTP).  Without the check it
    # calls a device without a default route in main "limited" -- which says
    # nothing about a link whose profile routes through a table of its own.
    connectivity_checked: bool = False
    # its profile says ipv6.method=shared: NetworkManager numbers it from a prefix delegated
    # to its IPv6 default device (1.42: only that one; plan/delegations.py has the rule)
    shared6: bool = False


@dataclass(frozen=True)
class PolicyDefault:
    """Another program's rule that sends (nearly) all traffic to a table holding a default
    route: how wg-quick and NetworkManager's WireGuard make a full tunnel, leaving main alone."""

    family: int
    priority: int
    table: int


@dataclass(frozen=True)
class KernelFeatures:
    nexthop_objects: bool = True  # Linux >= 5.3
    resilient_groups: bool = True  # Linux >= 5.13
    hash_fields: bool = True  # fib_multipath_hash_fields, Linux >= 5.14
    nftables: bool = True  # the nft command is installed (NAT, sticky connections)


class DelegationSource(str, enum.Enum):
    """Who said which uplink a learned prefix is from (plan/delegations.py)."""

    DELEGATED_TO = "delegated_to"  # the config: any DHCPv6 client
    NETWORKD = "networkd"  # its .network file's UplinkInterface=
    NETWORKMANAGER = "NetworkManager"  # a shared profile: its IPv6 default device


@cached_hash
@dataclass(frozen=True)
class Delegation:
    """A prefix an ISP delegated, learned from what its manager made of it: the LAN
    addresses numbered from it.  Traffic from it must leave by that ISP (BCP38)."""

    link: str  # the WAN (uplink) that delegated it
    prefix: ipaddress.IPv6Network
    source: DelegationSource
    lan: str  # the LAN interface numbered from it
    preferred_until: float  # time.monotonic(): a learned prefix is always dynamic
    valid_until: float
    # False: its LAN address is gone (a new prefix, a lease that ended) but hosts may still
    # hold addresses from it until valid_until, and their connections must keep their ISP
    present: bool = True


@dataclass(frozen=True)
class Observed:
    links: tuple[ObservedLink, ...] = ()
    main_defaults: tuple[MainDefault, ...] = ()
    features: KernelFeatures = field(default_factory=KernelFeatures)
    policy_defaults: tuple[PolicyDefault, ...] = ()
    manager: tuple[ManagedDevice, ...] = ()  # NetworkManager's view, when it runs
    delegations: tuple[Delegation, ...] = ()  # prefixes learned (sources/prefix_delegation.py)
    delegation_notes: tuple[str, ...] = ()  # what kept one from being learned: the plan's notes

    def learned_prefixes(self, name: str) -> tuple[ipaddress.IPv6Network, ...]:
        """The prefixes learned as delegated by the link `name`, in order."""
        return tuple(d.prefix for d in self.delegations if d.link == name)

    def link(self, index: int) -> ObservedLink | None:
        for link in self.links:
            if link.index == index:
                return link
        return None

    def main_gateways(self, *, live_only: bool = False) -> dict[tuple[int, int], MainDefault]:
        """(ifindex, family) -> its unicast default in main with a gateway and the lowest
        metric: the gateway its manager gave it.  live_only: not flagged dead (linkdown)."""
        best: dict[tuple[int, int], MainDefault] = {}
        for d in self.main_defaults:
            if d.gateway is None or d.kind != "unicast" or (live_only and d.dead):
                continue
            key = (d.oif, d.family)
            if key not in best or d.metric < best[key].metric:
                best[key] = d
        return best


# --------------------------------------------------------------------------
# Desired (what plan() returns; also what the kernel seam dumps as "owned")
# --------------------------------------------------------------------------


@cached_hash
@dataclass(frozen=True, order=True)
class Rule:
    family: int
    priority: int
    table: int
    src: IPNetwork | None = None
    suppress_prefixlength: int | None = None
    fwmark: int | None = None  # with fwmask: sticky connections (constants.STICKY_MARK_MASK)
    fwmask: int | None = None
    dst: IPNetwork | None = None  # policy pins: a destination prefix
    ip_proto: int | None = None  # policy pins: IPPROTO_TCP, IPPROTO_UDP, ...
    dport: tuple[int, int] | None = None  # policy pins: a destination port range (first, last)
    unreachable: bool = False  # a fail-closed pin: no lookup, the packet is refused (table is 0)


@cached_hash
@dataclass(frozen=True, order=True)
class PathHop:
    """One nexthop of a legacy RTA_MULTIPATH route."""

    oif: int
    gateway: IPAddress | None
    weight: int = 1
    onlink: bool = False


@cached_hash
@dataclass(frozen=True, order=True)
class Route:
    family: int
    table: int
    dst: IPNetwork
    metric: int = 0
    oif: int | None = None
    gateway: IPAddress | None = None
    onlink: bool = False
    scope: str = "universe"  # universe | link
    prefsrc: IPAddress | None = None
    nhid: int | None = None
    multipath: tuple[PathHop, ...] = ()

    @functools.cached_property
    def key(self) -> tuple[int, int, int, int, int]:
        """What identifies a route in the kernel: a second one with the same key replaces it.
        In numbers, kept: a round looks routes up by it thousands of times."""
        return (self.family, self.table, int(self.dst.network_address), self.dst.prefixlen, self.metric)


@cached_hash
@dataclass(frozen=True, order=True)
class Nexthop:
    id: int
    family: int
    oif: int
    gateway: IPAddress | None = None  # None: device-only (point-to-point)
    onlink: bool = False


@cached_hash
@dataclass(frozen=True, order=True)
class NexthopGroup:
    id: int
    family: int  # the family of its members (groups themselves are AF_UNSPEC)
    members: tuple[tuple[int, int], ...]  # (nexthop id, weight 1..256)
    resilient: bool = True
    buckets: int = 0  # resilient only
    idle_timer: int = 0  # seconds, resilient only
    unbalanced_timer: int = 0  # seconds, resilient only


@cached_hash
@dataclass(frozen=True, order=True)
class Sysctl:
    path: str  # relative to /proc/sys, e.g. "net/ipv4/conf/eth1/rp_filter"
    value: str


@dataclass(frozen=True)
class LinkPlan:
    """How plan() judged one link: for status and logs, not for the kernel."""

    name: str
    index: int
    weight: int  # the kernel's weight for it
    table: int | None
    eligible: dict[int, bool]  # family -> carries balanced traffic
    gateways: dict[int, IPAddress | None]
    addresses: dict[int, tuple[IPAddress, ...]]
    reasons: dict[int, Exclusion | None]  # family -> why not eligible (None when eligible)
    config_line: int = 0
    tier: int = 1
    auto_weight: bool = False  # weight: auto (the weight comes from its measured capacity)


@cached_hash  # the rendered table is kept by the table's value: hashed every round
@dataclass(frozen=True, order=True)
class FirewallLink:
    """A managed link as wanhooks' nftables table sees it."""

    name: str
    mark: int  # its sticky mark (constants.sticky_mark); 0: none (its id is another link's)
    nat: bool  # masquerade IPv4 that leaves by it
    nat66: bool = False  # masquerade IPv6 that leaves by it (but not its own delegated prefixes)
    delegated: tuple[IPNetwork, ...] = ()
    # Evidence of life (router/nft.py): packets of established connections arriving from
    # beyond the link's near side -- its own prefixes (the gateway, a modem) and IPv6's
    # link-local -- and packets sent beyond it.  Empty: no evidence counted for the link.
    near: tuple[IPNetwork, ...] = ()
    snat4: ipaddress.IPv4Address | None = None  # with nat: to this address, not masquerade


@cached_hash
@dataclass(frozen=True)
class Firewall:
    """wanhooks' nftables table (router/nft.py renders it); empty links: no table."""

    links: tuple[FirewallLink, ...] = ()
    sticky: bool = False
    mss_clamp: bool = False


@dataclass(frozen=True)
class Desired:
    rules: frozenset[Rule] = frozenset()
    routes: frozenset[Route] = frozenset()
    nexthops: frozenset[Nexthop] = frozenset()
    groups: frozenset[NexthopGroup] = frozenset()
    sysctls: frozenset[Sysctl] = frozenset()
    links: tuple[LinkPlan, ...] = ()
    notes: tuple[str, ...] = ()  # decisions worth telling the user (VPN wins, ...)
    firewall: Firewall = field(default_factory=Firewall)


@dataclass(frozen=True)
class Owned:
    """What the kernel holds that carries wanhooks' marks (protocol id)."""

    rules: frozenset[Rule] = frozenset()
    routes: frozenset[Route] = frozenset()
    nexthops: frozenset[Nexthop] = frozenset()
    groups: frozenset[NexthopGroup] = frozenset()
    # Nexthop ids in wanhooks' range that another program holds: never used, never touched.
    foreign_nexthop_ids: frozenset[int] = frozenset()

    # Looked up by identity, built once per snapshot: the kernel mirror hands the same
    # snapshot to every round until something changes (kernel/mirrored.py).
    @functools.cached_property
    def routes_by_key(self) -> dict[tuple[int, int, int, int, int], Route]:
        return {r.key: r for r in self.routes}

    @functools.cached_property
    def nexthops_by_id(self) -> dict[int, Nexthop]:
        return {n.id: n for n in self.nexthops}

    @functools.cached_property
    def groups_by_id(self) -> dict[int, NexthopGroup]:
        return {g.id: g for g in self.groups}


# --------------------------------------------------------------------------
# Operations: what the reconciler asks the kernel seam to do
# --------------------------------------------------------------------------

KernelObject = Rule | Route | Nexthop | NexthopGroup


class Action(str, enum.Enum):
    ADD = "add"  # create; fails with EEXIST if something holds the identity
    REPLACE = "replace"  # change an object we own in place
    DELETE = "delete"


@dataclass(frozen=True)
class Op:
    action: Action
    obj: KernelObject


@dataclass(frozen=True)
class OpResult:
    op: Op
    error: int = 0  # errno; 0 = done
    message: str = ""  # the kernel's extended ack, when it gave one

    @property
    def ok(self) -> bool:
        return self.error == 0
