"""What a round reads of the kernel, kept current from rtnetlink notifications (pure).

A round used to dump everything it reads -- links, addresses, main's defaults,
rules, and every object wanhooks owns -- so its cost grew with what exists,
not with what changed (bench/reconcile_scaling.py).  The mirror holds the same
snapshot and is changed by the notifications the kernel sends for every change
-- the echoes of wanhooks' own writes included -- so a round reads memory.

Theory of operation
-------------------
The kernel does not notify everything.  Measured here (tests/test_mirror_lab.py
keeps the list honest): carrier loss and admin-down delete the nexthop objects on
the device, drop them from their groups, delete IPv4 routes through them and
admin-down the IPv4 routes on the device -- all without a message; removing an
address deletes the IPv4 routes that used it as their source, silently; a
route's linkdown flag changes without one.  So the mirror takes a notification
as it comes only where the message is the whole truth (a link's new state, an
owned rule, route or nexthop added or deleted by anyone), and otherwise marks
what may have changed behind it *dirty*, to be read again with a dump filtered
to it:

* a link whose flags or operational state changed, or that went away: its
  nexthops (a dump filtered to the device), every group, the owned tables
  holding a route through it or through any group, main's routes through it,
  and the catch-all tables' defaults (policy defaults);
* a link whose addresses changed: its addresses (filtered by index: the order
  the kernel keeps, primary first) -- and, for a removal, as above;
* an owned nexthop or group deleted: the groups and the owned tables routing
  through them;
* a default route added to or deleted from main: main's routes through its
  device; to another table: whether that table holds a default.

Each such read costs what the link holds, not what the host holds.  Whatever
the rules above miss shows at the next confirming full dump (mirrored.py),
which replaces the mirror and says what differed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from ..constants import (
    MAX_IFINDEX,
    NH_LINK_V4_BASE,
    NH_LINK_V6_BASE,
    PRIO_RULE_MAIN,
    RTPROT_WANHOOKS,
    TABLE_MAIN,
    is_owned_nexthop_id,
    is_owned_table,
)
from ..model import (
    Address,
    KernelFeatures,
    MainDefault,
    Nexthop,
    NexthopGroup,
    Observed,
    ObservedLink,
    Owned,
    PolicyDefault,
    Route,
    Rule,
)
from . import codec, wire
from .messages import RTM_DELNEXTHOP, RTM_NEWNEXTHOP
from .netlink import (
    RTM_DELADDR,
    RTM_DELLINK,
    RTM_DELROUTE,
    RTM_DELRULE,
    RTM_NEWADDR,
    RTM_NEWLINK,
    RTM_NEWROUTE,
    RTM_NEWRULE,
)

# The link flags whose change may delete objects behind the kernel's back.
IFF_UP, IFF_RUNNING, IFF_LOWER_UP = 0x1, 0x40, 0x10000
_STATE_FLAGS = IFF_UP | IFF_RUNNING | IFF_LOWER_UP

Table = tuple[int, int]  # (family, table id)


@dataclass
class Dirty:
    """What the notifications taken since the last settle() say must be read again."""

    links: set[int] = field(default_factory=set)  # state changed or gone: their slice
    addresses: set[int] = field(default_factory=set)  # their addresses
    nexthops_gone: set[int] = field(default_factory=set)  # owned ids deleted
    main: set[tuple[int, int]] = field(default_factory=set)  # (family, oif; 0 = no device)
    tables: set[Table] = field(default_factory=set)  # owned tables with an unreadable message
    defaults: set[Table] = field(default_factory=set)  # other tables whose default may have changed
    devices: set[str] = field(default_factory=set)  # names created, renamed or gone: sysctls anew
    # links whose own message is read again, then their slice: their state may have changed
    # before the kernel told (a carrier loss deletes the link's nexthops and IPv6 routes at
    # once; the link's message follows when its link watch runs, up to a second later) --
    # shown by the kernel deleting an owned route through it, or refusing a write through it
    reread: set[int] = field(default_factory=set)

    def __bool__(self) -> bool:
        return bool(
            self.links
            or self.addresses
            or self.nexthops_gone
            or self.main
            or self.tables
            or self.defaults
            or self.devices
            or self.reread
        )


class Mirror:
    """The snapshot a round plans from and the objects wanhooks owns, as the kernel holds
    them.  Changed by take() (one notification) and by the replace_* methods (what a
    filtered or full dump found); read by observed() and owned(), which return the same
    objects while nothing changed."""

    def __init__(self) -> None:
        self.links: dict[int, wire.Message] = {}
        self.addresses: dict[int, tuple[Address, ...]] = {}
        self.main_defaults: dict[tuple[int, int], tuple[MainDefault, ...]] = {}  # by (family, oif)
        self.catch_alls: set[tuple[int, int, int]] = set()  # other programs' (family, priority, table)
        self.has_default: dict[Table, bool] = {}  # tables of catch-alls: do they hold a default?
        self.rules: set[Rule] = set()
        self.routes: dict[Table, dict[tuple[object, ...], Route]] = {}
        self.nexthops: dict[int, Nexthop] = {}
        self.groups: dict[int, NexthopGroup] = {}
        self.foreign_ids: dict[int, int | None] = {}  # ids in our range others hold -> their device
        self.families: dict[int, int] = {}  # every nexthop id's family (a group's members say none)
        self.dirty = Dirty()
        self._observed_links: dict[int, ObservedLink] = {}
        self._owned: Owned | None = None
        self._observed: tuple[KernelFeatures, Observed] | None = None

    # --- notifications ----------------------------------------------------------

    def take(self, msg: wire.Message, *, ours: bool = False) -> None:
        """One notification: applied where it is the whole truth, else marked dirty.
        ours: the echo of wanhooks' own write."""
        kind = msg.type
        if kind in (RTM_NEWLINK, RTM_DELLINK):
            self._take_link(msg, kind == RTM_DELLINK)
        elif kind in (RTM_NEWADDR, RTM_DELADDR):
            index = msg.fields[4]
            self.dirty.addresses.add(index)
            if kind == RTM_DELADDR:  # IPv4 routes with that source went with it, silently
                self.dirty.links.add(index)
        elif kind in (RTM_NEWROUTE, RTM_DELROUTE):
            self._take_route(msg, kind == RTM_DELROUTE, ours)
        elif kind in (RTM_NEWRULE, RTM_DELRULE):
            self._take_rule(msg, kind == RTM_DELRULE)
        elif kind in (RTM_NEWNEXTHOP, RTM_DELNEXTHOP):
            self._take_nexthop(msg, kind == RTM_DELNEXTHOP)

    def _take_link(self, msg: wire.Message, gone: bool) -> None:
        index = msg.fields[2]
        before = self.links.get(index)
        name = msg.string(codec.IFLA_IFNAME)
        old_name = before.string(codec.IFLA_IFNAME) if before is not None else None
        if name is not None and (gone or name != old_name):  # a device's knobs start from defaults
            self.dirty.devices.add(name)
        if old_name is not None and old_name != name:
            self.dirty.devices.add(old_name)
        if gone:
            self.links.pop(index, None)
            self.addresses.pop(index, None)
            self.dirty.links.add(index)
        else:
            self.links[index] = msg
            if before is None or _state(before) != _state(msg):
                self.dirty.links.add(index)
            if before is None:
                self.dirty.addresses.add(index)
        self._observed_links.pop(index, None)
        self._observed = None

    def _take_route(self, msg: wire.Message, gone: bool, ours: bool = False) -> None:
        family_af, dst_len, _src, _tos, table, proto, _scope, _type, _flags = msg.fields
        family = codec.FAMILY.get(family_af)
        if family is None:
            return
        table = msg.u32(codec.RTA_TABLE, table) or table
        if proto == RTPROT_WANHOOKS:
            route = codec.route_from_msg(msg)
            if route is None:
                self.dirty.tables.add((family, table))
                return
            held = self.routes.setdefault((family, table), {})
            if gone:
                held.pop(route.key, None)
                if not ours:  # the kernel (or someone) deleted it: what else went with it?
                    self.dirty.reread.update(_through_links(route))
            else:
                held[route.key] = route
            self._owned = None
            return  # wanhooks' own: never a manager's default
        if dst_len != 0:
            return
        if table == TABLE_MAIN:
            hops = wire.multipath(msg.attrs.get(codec.RTA_MULTIPATH, b""))
            oifs = {msg.u32(codec.RTA_OIF, 0) or 0} | {hop[2] for hop in hops}
            # a replace names only the new route's device: the one it replaced (same metric)
            # may have been on another
            metric = msg.u32(codec.RTA_PRIORITY, 0) or 0
            oifs |= {d.oif for (f, _), held in self.main_defaults.items() if f == family
                     for d in held if d.metric == metric}  # fmt: skip
            self.dirty.main.update((family, oif) for oif in oifs)
        elif not is_owned_table(table):
            self.dirty.defaults.add((family, table))

    def _take_rule(self, msg: wire.Message, gone: bool) -> None:
        if codec.rule_protocol(msg) == RTPROT_WANHOOKS:
            rule = codec.rule_from_msg(msg)
            if rule is not None:
                (self.rules.discard if gone else self.rules.add)(rule)
                self._owned = None
            return
        catch = codec.catch_all_table(msg)
        if catch is not None:
            (self.catch_alls.discard if gone else self.catch_alls.add)(catch)
            self._observed = None

    def _take_nexthop(self, msg: wire.Message, gone: bool) -> None:
        nhid = codec.nexthop_id(msg)
        self._owned = None
        if gone:
            self.families.pop(nhid, None)
            self.foreign_ids.pop(nhid, None)
            if self.nexthops.pop(nhid, None) is not None or self.groups.pop(nhid, None) is not None:
                self.dirty.nexthops_gone.add(nhid)
            return
        self.families[nhid] = codec.nexthop_family(msg)
        self.nexthops.pop(nhid, None)
        self.groups.pop(nhid, None)
        if codec.nexthop_protocol(msg) != RTPROT_WANHOOKS:
            if is_owned_nexthop_id(nhid):
                self.foreign_ids[nhid] = msg.u32(codec.NHA_OIF)
            return
        self.foreign_ids.pop(nhid, None)
        obj = codec.nexthop_from_msg(msg, self.families)
        if isinstance(obj, NexthopGroup):
            self.groups[nhid] = obj
        elif obj is not None:
            self.nexthops[nhid] = obj

    # --- what dumps found ---------------------------------------------------------

    def replace_addresses(self, index: int, found: Iterable[Address]) -> None:
        self.addresses[index] = tuple(found)
        self._observed_links.pop(index, None)
        self._observed = None

    def replace_main_defaults(self, family: int, oif: int | None, found: Iterable[MainDefault]) -> None:
        """Main's defaults of a family through one device (all of them when oif is None)."""
        for key in [k for k in self.main_defaults if k[0] == family and (oif is None or k[1] == oif)]:
            del self.main_defaults[key]
        by_oif: dict[tuple[int, int], list[MainDefault]] = {}
        for d in found:
            if oif is None or d.oif == oif:
                by_oif.setdefault((family, d.oif), []).append(d)
        self.main_defaults.update((k, tuple(v)) for k, v in by_oif.items())
        self._observed = None

    def replace_nexthops(self, oif: int | None, found: Iterable[Nexthop]) -> None:
        """The owned nexthops through one device (all of them when oif is None)."""
        for nhid in [i for i, nh in self.nexthops.items() if oif is None or nh.oif == oif]:
            del self.nexthops[nhid]
        for nh in found:
            self.nexthops[nh.id] = nh
            self.families[nh.id] = nh.family
        self._owned = None

    def replace_foreign(self, oif: int | None, found: dict[int, int | None]) -> None:
        """Other programs' nexthops in our id range through one device (oif None: groups)."""
        for nhid in [i for i, dev in self.foreign_ids.items() if dev == oif]:
            del self.foreign_ids[nhid]
        self.foreign_ids.update(found)
        self._owned = None

    def replace_groups(self, found: Iterable[NexthopGroup]) -> None:
        self.groups = {g.id: g for g in found}
        self._owned = None

    def replace_table(self, table: Table, found: Iterable[Route]) -> None:
        self.routes[table] = {r.key: r for r in found}
        self._owned = None

    def set_has_default(self, table: Table, held: bool) -> None:
        self.has_default[table] = held
        self._observed = None

    def devices_of(self, obj: object) -> set[int]:
        """The links a nexthop, group or route goes through, as far as the mirror knows."""
        if isinstance(obj, Nexthop):
            return {obj.oif}
        if isinstance(obj, NexthopGroup):
            # refused for a member that is gone (its link's carrier, before the kernel told):
            # that member's link -- not every member's
            return {
                index for m, _w in obj.members if m not in self.nexthops and (index := link_of_nexthop(m))
            }
        if isinstance(obj, Route):
            found = {obj.oif} if obj.oif else set()
            found |= {hop.oif for hop in obj.multipath}
            if obj.nhid in self.nexthops:
                found.add(self.nexthops[obj.nhid].oif)
            elif obj.nhid in self.groups:
                found |= self.devices_of(self.groups[obj.nhid])
            return found
        return set()

    def tables_through(self, links: set[int], nexthop_ids: set[int]) -> list[Table]:
        """The owned tables holding a route through one of these links, one of these nexthops,
        or any group (a group may have lost members: its routes may be gone)."""
        groups = set(self.groups) | nexthop_ids
        return [
            table
            for table, held in self.routes.items()
            if any(
                r.oif in links
                or (r.nhid is not None and r.nhid in groups)
                or any(h.oif in links for h in r.multipath)
                for r in held.values()
            )
        ]

    # --- reading ------------------------------------------------------------------

    def observed(self, features: KernelFeatures) -> Observed:
        """The snapshot plan() takes; the same object while nothing in it changed."""
        if self._observed is not None and self._observed[0] is features:
            return self._observed[1]
        links = []
        for index in sorted(self.links):
            link = self._observed_links.get(index)
            if link is None:
                link = codec.link_from_msg(self.links[index], self.addresses.get(index, ()))
                self._observed_links[index] = link
            links.append(link)
        observed = Observed(
            links=tuple(links),
            main_defaults=sort_defaults(d for held in self.main_defaults.values() for d in held),
            features=features,
            policy_defaults=self._policy_defaults(),
        )
        self._observed = (features, observed)
        return observed

    def policy_tables(self) -> list[Table]:
        """The tables other programs' catch-all rules send traffic to (policy defaults)."""
        return sorted({(f, t) for f, p, t in self.catch_alls if not is_owned_table(t) and p < PRIO_RULE_MAIN})

    def _policy_defaults(self) -> tuple[PolicyDefault, ...]:
        found = [
            PolicyDefault(f, p, t)
            for f, p, t in self.catch_alls
            if not is_owned_table(t) and p < PRIO_RULE_MAIN and self.has_default.get((f, t), False)
        ]
        return sort_policy_defaults(found)

    def owned(self) -> Owned:
        if self._owned is None:
            self._owned = Owned(
                rules=frozenset(self.rules),
                routes=frozenset(r for held in self.routes.values() for r in held.values()),
                nexthops=frozenset(self.nexthops.values()),
                groups=frozenset(self.groups.values()),
                foreign_nexthop_ids=frozenset(self.foreign_ids),
            )
        return self._owned


def link_of_nexthop(nhid: int) -> int:
    """The link whose nexthop an id of wanhooks' is (constants.link_nexthop_id); 0: not one."""
    for base in (NH_LINK_V6_BASE, NH_LINK_V4_BASE):
        if base < nhid <= base + MAX_IFINDEX:
            return nhid - base
    return 0


def _through_links(route: Route) -> set[int]:
    return ({route.oif} if route.oif else set()) | {hop.oif for hop in route.multipath}


def _through(route: Route, links: set[int], nexthop_ids: set[int]) -> bool:
    if route.oif in links or (route.nhid is not None and route.nhid in nexthop_ids):
        return True
    return any(hop.oif in links for hop in route.multipath)


def _state(msg: wire.Message) -> tuple[int, int | None, str | None]:
    return msg.fields[3] & _STATE_FLAGS, msg.u8(codec.IFLA_OPERSTATE), msg.string(codec.IFLA_IFNAME)


def sort_defaults(found: Iterable[MainDefault]) -> tuple[MainDefault, ...]:
    """Main's defaults in one order whoever read them: family, metric, device."""
    return tuple(sorted(found, key=lambda d: (d.family, d.metric, d.oif)))


def sort_policy_defaults(found: Iterable[PolicyDefault]) -> tuple[PolicyDefault, ...]:
    return tuple(sorted(found, key=lambda p: (p.family, p.priority, p.table)))


def differences(mirror: tuple[Observed, Owned], kernel: tuple[Observed, Owned]) -> list[str]:
    """What the mirror held that the kernel did not, and the reverse, one line each."""
    out: list[str] = []

    def compare(what: str, ours: Iterable[object], theirs: Iterable[object]) -> None:
        a, b = set(ours), set(theirs)
        out.extend(f"{what}: mirror only {x}" for x in sorted(map(repr, a - b)))
        out.extend(f"{what}: kernel only {x}" for x in sorted(map(repr, b - a)))

    (mo, mw), (ko, kw) = mirror, kernel
    compare("link", mo.links, ko.links)
    compare("main default", mo.main_defaults, ko.main_defaults)
    compare("policy default", mo.policy_defaults, ko.policy_defaults)
    compare("rule", mw.rules, kw.rules)
    compare("route", mw.routes, kw.routes)
    compare("nexthop", mw.nexthops, kw.nexthops)
    compare("group", mw.groups, kw.groups)
    compare("foreign nexthop id", mw.foreign_nexthop_ids, kw.foreign_nexthop_ids)
    return out
