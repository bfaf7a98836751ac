"""An in-memory kernel behind the same seam as the real one, for unit tests.

It models the behaviour the reconciler must cope with, as measured on
Linux 6.18: EEXIST/ENOENT, nexthops refused on a device without carrier,
deleting a nexthop drops it from its groups (an emptied group goes, and so
do routes using it), a group's type and bucket count cannot change, and a
device going down takes its nexthops and routes with it.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from ..constants import RTPROT_WANHOOKS, is_owned_nexthop_id
from ..model import (
    IFF_LOWER_UP,
    IFF_UP,
    Action,
    KernelFeatures,
    KernelObject,
    LinkCounters,
    MainDefault,
    Nexthop,
    NexthopGroup,
    Observed,
    ObservedLink,
    Op,
    OpResult,
    Owned,
    Route,
    Rule,
)
from ..router import nft

FAKE_PORTID = 4242  # the fake's "netlink port": deletions by any other port are someone else's


@dataclass
class FakeKernel:
    links: list[ObservedLink] = field(default_factory=list)
    main_defaults: list[MainDefault] = field(default_factory=list)
    features: KernelFeatures = field(default_factory=KernelFeatures)
    sysctls: dict[str, str] = field(default_factory=dict)
    rules: dict[Rule, int] = field(default_factory=dict)  # rule -> protocol
    routes: dict[tuple[int, int, int, int, int], tuple[Route, int]] = field(default_factory=dict)
    nexthops: dict[int, tuple[Nexthop | NexthopGroup, int]] = field(default_factory=dict)
    executed: list[Op] = field(default_factory=list)  # every op ever asked for, in order
    firewall: str = ""  # wanhooks' nftables table as rendered text
    firewall_writes: list[str] = field(default_factory=list)
    firewall_error: str = ""  # set: every write fails with it (nft missing, a hang)
    counters: dict[str, LinkCounters] = field(default_factory=dict)  # set by tests; else zeros
    heard: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)  # evidence, set by tests

    # --- the seam ------------------------------------------------------------

    def observe(self) -> Observed:
        return Observed(
            links=tuple(self.links), main_defaults=tuple(self.main_defaults), features=self.features
        )

    def link_counters(self) -> dict[str, LinkCounters]:
        zero = {link.name: LinkCounters(0, 0, 0, 0, index=link.index) for link in self.links}
        return {**zero, **self.counters}

    def read_firewall(self) -> nft.TableState:
        return nft.parse_table(self.firewall)

    def write_firewall(self, text: str) -> None:
        if self.firewall_error:
            raise nft.NftError(self.firewall_error)
        self.firewall = text
        self.firewall_writes.append(text)

    def evidence(self) -> dict[tuple[str, int], tuple[int, int]]:
        return dict(self.heard)

    def verify_firewall(self) -> bool:
        return not self.firewall_writes or self.firewall == self.firewall_writes[-1]

    @property
    def portid(self) -> int:
        return FAKE_PORTID

    def close(self) -> None:
        pass

    def dump_owned(self) -> Owned:
        mine = RTPROT_WANHOOKS
        objs = [o for o, p in self.nexthops.values() if p == mine]
        return Owned(
            rules=frozenset(r for r, p in self.rules.items() if p == mine),
            routes=frozenset(r for r, p in self.routes.values() if p == mine),
            nexthops=frozenset(o for o in objs if isinstance(o, Nexthop)),
            groups=frozenset(o for o in objs if isinstance(o, NexthopGroup)),
            foreign_nexthop_ids=frozenset(
                i for i, (_o, p) in self.nexthops.items() if p != mine and is_owned_nexthop_id(i)
            ),
        )

    def execute(self, ops: Sequence[Op]) -> list[OpResult]:
        results = []
        for op in ops:
            self.executed.append(op)
            code = self._one(op)
            results.append(OpResult(op, code))
        return results

    def holder(self, obj: KernelObject) -> int | None:
        if isinstance(obj, Rule):
            return self.rules.get(obj)
        if isinstance(obj, Route):
            found = self.routes.get(obj.key)
            return None if found is None else found[1]
        found_nh = self.nexthops.get(obj.id)
        return None if found_nh is None else found_nh[1]

    def read_sysctl(self, path: str) -> str | None:
        return self.sysctls.get(path)

    def write_sysctl(self, path: str, value: str) -> None:
        if path not in self.sysctls:
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        self.sysctls[path] = value

    # --- kernel behaviour ----------------------------------------------------

    def _link(self, index: int) -> ObservedLink | None:
        return next((link for link in self.links if link.index == index), None)

    def _one(self, op: Op) -> int:
        obj = op.obj
        if isinstance(obj, Rule):
            return self._rule(op.action, obj)
        if isinstance(obj, Route):
            return self._route(op.action, obj)
        return self._nexthop(op.action, obj)

    def _rule(self, action: Action, rule: Rule) -> int:
        if action is Action.DELETE:
            if self.rules.get(rule) != RTPROT_WANHOOKS:
                return errno.ENOENT
            del self.rules[rule]
            return 0
        if rule in self.rules:
            return errno.EEXIST
        self.rules[rule] = RTPROT_WANHOOKS
        return 0

    def _route(self, action: Action, route: Route) -> int:
        current = self.routes.get(route.key)
        if action is Action.DELETE:
            if current is None or current[1] != RTPROT_WANHOOKS:
                return errno.ESRCH
            del self.routes[route.key]
            return 0
        if action is Action.ADD and current is not None:
            return errno.EEXIST
        if route.nhid is not None and route.nhid not in self.nexthops:
            return errno.EINVAL
        for oif in [route.oif] + [hop.oif for hop in route.multipath]:
            if oif is None:
                continue
            link = self._link(oif)
            if link is None:
                return errno.ENODEV
            if not link.admin_up:
                return errno.ENETDOWN
        self.routes[route.key] = (route, RTPROT_WANHOOKS)
        return 0

    def _nexthop(self, action: Action, obj: Nexthop | NexthopGroup) -> int:
        current = self.nexthops.get(obj.id)
        if action is Action.DELETE:
            if current is None:
                return errno.ENOENT
            self._drop_nexthops({obj.id})
            return 0
        if action is Action.ADD and current is not None:
            return errno.EEXIST
        if isinstance(obj, Nexthop):
            link = self._link(obj.oif)
            if link is None:
                return errno.ENODEV
            if not link.admin_up or not link.carrier:
                return errno.ENETDOWN
            if current is not None and isinstance(current[0], NexthopGroup):
                return errno.EINVAL
        else:
            members = [self.nexthops.get(i) for i, _w in obj.members]
            if not obj.members or any(m is None or isinstance(m[0], NexthopGroup) for m in members):
                return errno.EINVAL
            if current is not None:
                old = current[0]
                if not isinstance(old, NexthopGroup) or old.resilient != obj.resilient:
                    return errno.EINVAL
                if obj.resilient and old.buckets != obj.buckets:
                    return errno.EINVAL
        self.nexthops[obj.id] = (obj, RTPROT_WANHOOKS)
        return 0

    def _drop_nexthops(self, ids: set[int]) -> None:
        """Delete nexthops as the kernel does: out of groups, emptied groups and their routes too."""
        while ids:
            for nhid in ids:
                self.nexthops.pop(nhid, None)
            emptied: set[int] = set()
            for gid, (obj, proto) in list(self.nexthops.items()):
                if isinstance(obj, NexthopGroup):
                    members = tuple(m for m in obj.members if m[0] not in ids)
                    if not members:
                        emptied.add(gid)
                    elif members != obj.members:
                        self.nexthops[gid] = (replace(obj, members=members), proto)
            for key, (route, _proto) in list(self.routes.items()):
                if route.nhid in ids:
                    del self.routes[key]
            ids = emptied

    # --- what the tests do to the "hardware" -------------------------------------

    def set_link(self, link: ObservedLink) -> None:
        self.links = [x for x in self.links if x.index != link.index] + [link]
        self.links.sort(key=lambda x: x.index)

    def link_down(self, index: int, *, carrier_only: bool = False) -> None:
        """Admin-down or carrier loss: nexthops on the device go; admin-down also takes its routes."""
        link = self._link(index)
        assert link is not None
        flags = link.flags & ~IFF_LOWER_UP if carrier_only else link.flags & ~(IFF_UP | IFF_LOWER_UP)
        self.set_link(replace(link, flags=flags))
        self._drop_nexthops(
            {i for i, (o, _p) in self.nexthops.items() if isinstance(o, Nexthop) and o.oif == index}
        )
        if not carrier_only:
            for key, (route, _p) in list(self.routes.items()):
                if route.oif == index or any(h.oif == index for h in route.multipath):
                    del self.routes[key]

    def link_up(self, index: int) -> None:
        link = self._link(index)
        assert link is not None
        self.set_link(replace(link, flags=link.flags | IFF_UP | IFF_LOWER_UP))

    def add_foreign(self, objs: Iterable[KernelObject], protocol: int = 4) -> None:
        """Objects another program put there (protocol 4 = static, as `ip` does)."""
        for obj in objs:
            if isinstance(obj, Rule):
                self.rules[obj] = protocol
            elif isinstance(obj, Route):
                self.routes[obj.key] = (obj, protocol)
            else:
                self.nexthops[obj.id] = (obj, protocol)
