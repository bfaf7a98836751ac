"""The real kernel behind the seam: rtnetlink in the caller's network namespace."""

from __future__ import annotations

import errno
import os
import platform
import threading
import time
from collections import defaultdict
from collections.abc import Sequence

from pyroute2.netlink import NLM_F_CREATE, NLM_F_EXCL, NLM_F_REPLACE, nlmsg
from pyroute2.netlink.rtnl.fibmsg import fibmsg
from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from ..constants import (
    FIREWALL_TRUST_S,
    PRIO_RULE_MAIN,
    RTPROT_WANHOOKS,
    TABLE_MAIN,
    is_owned_nexthop_id,
    is_owned_table,
)
from ..model import (
    Action,
    Address,
    KernelFeatures,
    KernelObject,
    LinkCounters,
    MainDefault,
    Nexthop,
    NexthopGroup,
    Observed,
    Op,
    OpResult,
    Owned,
    PolicyDefault,
    Route,
    Rule,
)
from ..router import nft
from . import codec
from .messages import RTM_DELNEXTHOP, RTM_GETNEXTHOP, RTM_NEWNEXTHOP, nhmsg, rtmsg_nh
from .mirror import sort_defaults, sort_policy_defaults
from .netlink import (
    RTM_DELROUTE,
    RTM_DELRULE,
    RTM_GETADDR,
    RTM_GETLINK,
    RTM_GETROUTE,
    RTM_GETRULE,
    RTM_NEWROUTE,
    RTM_NEWRULE,
    NetlinkError,
    NetlinkSocket,
)
from .nft_counters import NftCounters
from .wire import Message

PROC_SYS = "/proc/sys"
_CREATE_FLAGS = {Action.ADD: NLM_F_CREATE | NLM_F_EXCL, Action.REPLACE: NLM_F_CREATE | NLM_F_REPLACE}


def kernel_version() -> tuple[int, int]:
    release = platform.release().split("-")[0].split(".")
    try:
        return int(release[0]), int(release[1])
    except (IndexError, ValueError):
        return 0, 0


class LinuxKernel:
    """rtnetlink + /proc/sys of the network namespace this process runs in."""

    def __init__(self, proc_sys: str = PROC_SYS) -> None:
        self._nl = NetlinkSocket()
        self._proc_sys = proc_sys
        self._has_nexthops: bool | None = None
        # The rule dump observe() takes, handed to the dump_owned() that follows it in the
        # same round (nothing is written in between); any write or second use drops it.
        self._round_rules: dict[int, list[Message]] = {}
        # wanhooks' nftables table as this object last read or wrote it, and when (read_firewall)
        self._firewall: tuple[float, nft.TableState] | None = None
        # verify_firewall runs `nft` outside the kernel worker (50 ms with 256 links: no
        # round should wait on it): a write meanwhile makes its reading stale
        self._firewall_lock = threading.Lock()
        self._firewall_writes = 0
        self._counters: NftCounters | None = None  # opened at the first evidence() read

    def close(self) -> None:
        self._nl.close()
        if self._counters is not None:
            self._counters.close()

    def evidence(self) -> dict[tuple[str, int], tuple[int, int]]:
        if self._counters is None:
            self._counters = NftCounters()
        return nft.evidence_of(self._counters.read())

    @property
    def portid(self) -> int:
        """Port id of the socket wanhooks writes with (to recognise its own echoes)."""
        return self._nl.portid

    # --- reading -----------------------------------------------------------

    def observe(self) -> Observed:
        by_link: dict[int, list[Address]] = defaultdict(list)
        for msg in self._nl.dump(ifaddrmsg(), RTM_GETADDR):
            parsed = codec.address_from_msg(msg)
            if parsed is not None:
                by_link[parsed[0]].append(parsed[1])
        links = tuple(
            codec.link_from_msg(msg, tuple(by_link.get(msg.fields[2], ())))
            for msg in self._nl.dump(ifinfmsg(), RTM_GETLINK)
        )
        defaults: list[MainDefault] = []
        for family in (4, 6):
            request = rtmsg_nh()
            request["family"] = codec.AF[family]
            request["table"] = TABLE_MAIN
            for msg in self._table_dump(request):
                found = codec.main_default_from_msg(msg)
                if found is not None:
                    defaults.append(found)
        return Observed(
            links=links,
            main_defaults=sort_defaults(defaults),  # the mirror's order (mirrored.py)
            features=self.features(),
            policy_defaults=sort_policy_defaults(self._policy_defaults()),
        )

    def link_counters(self) -> dict[str, LinkCounters]:
        """Every link's counters by name: one dump (for the passive watch, every 50 ms)."""
        out = {}
        for msg in self._nl.dump(ifinfmsg(), RTM_GETLINK):
            found = codec.counters_from_msg(msg)
            if found is not None:
                out[found[0]] = found[1]
        return out

    def _policy_defaults(self) -> tuple[PolicyDefault, ...]:
        """Other programs' catch-all rules into tables that hold a default route."""
        found = []
        for family in (4, 6):
            msgs = self._rule_msgs(family)
            self._round_rules[family] = msgs  # dump_owned() of this round reuses it
            for msg in msgs:
                if codec.rule_protocol(msg) == RTPROT_WANHOOKS:
                    continue
                rule = codec.catch_all_table(msg)
                if rule is None or is_owned_table(rule[2]) or rule[1] >= PRIO_RULE_MAIN:
                    continue
                if self._has_default(family, rule[2]):
                    found.append(PolicyDefault(*rule))
        return tuple(found)

    def _has_default(self, family: int, table: int) -> bool:
        request = rtmsg_nh()
        request["family"] = codec.AF[family]
        request["table"] = codec.RT_TABLE_COMPAT if table > 255 else table
        request["attrs"] = [("RTA_TABLE", table)]
        return any(
            m.fields[1] == 0 and codec.route_from_msg(m) is not None for m in self._table_dump(request)
        )

    def _table_dump(self, request: nlmsg) -> list[Message]:
        """A route dump filtered to one table.  A table that holds nothing does not exist,
        and the kernel refuses the dump (ENOENT): an empty answer, not an error (a fresh
        namespace has no main table until an address comes up)."""
        try:
            return list(self._nl.dump(request, RTM_GETROUTE))
        except NetlinkError as err:
            if err.errno == errno.ENOENT:
                return []
            raise

    def features(self) -> KernelFeatures:
        version = kernel_version()
        nexthops = self._nexthops_supported()
        return KernelFeatures(
            nexthop_objects=nexthops,
            resilient_groups=nexthops and version >= (5, 13),
            hash_fields=self.read_sysctl("net/ipv4/fib_multipath_hash_fields") is not None,
            nftables=nft.available(),
        )

    def _nexthops_supported(self) -> bool:
        if self._has_nexthops is None:
            try:
                self._nl.dump(nhmsg(), RTM_GETNEXTHOP)
                self._has_nexthops = True
            except NetlinkError:
                self._has_nexthops = False
        return self._has_nexthops

    def _owned_route_msgs(self, family: int, table: int = 0) -> list[Message]:
        request = rtmsg_nh()
        request["family"] = codec.AF[family]
        request["proto"] = RTPROT_WANHOOKS  # strict dumps filter on it in the kernel
        if table:
            request["table"] = codec.RT_TABLE_COMPAT if table > 255 else table
            request["attrs"] = [("RTA_TABLE", table)]
        msgs = self._nl.dump(request, RTM_GETROUTE)
        return [m for m in msgs if codec.route_protocol(m) == RTPROT_WANHOOKS]

    def _rule_msgs(self, family: int) -> list[Message]:
        request = fibmsg()
        request["family"] = codec.AF[family]
        return list(self._nl.dump(request, RTM_GETRULE))

    def _nexthop_msgs(self) -> list[Message]:
        if not self._nexthops_supported():
            return []
        return list(self._nl.dump(nhmsg(), RTM_GETNEXTHOP))

    def dump_owned(self) -> Owned:
        routes = set()
        rules = set()
        for family in (4, 6):
            for msg in self._owned_route_msgs(family):
                route = codec.route_from_msg(msg)
                if route is not None:
                    routes.add(route)
            for msg in self._round_rules.pop(family, None) or self._rule_msgs(family):
                if codec.rule_protocol(msg) == RTPROT_WANHOOKS:
                    rule = codec.rule_from_msg(msg)
                    if rule is not None:
                        rules.add(rule)
        nexthops: set[Nexthop] = set()
        groups: set[NexthopGroup] = set()
        every = self._nexthop_msgs()
        families = {codec.nexthop_id(m): codec.nexthop_family(m) for m in every}
        foreign: set[int] = set()
        for msg in every:
            if codec.nexthop_protocol(msg) != RTPROT_WANHOOKS:
                if is_owned_nexthop_id(codec.nexthop_id(msg)):
                    foreign.add(codec.nexthop_id(msg))
                continue
            obj = codec.nexthop_from_msg(msg, families)
            if isinstance(obj, NexthopGroup):
                groups.add(obj)
            elif obj is not None:
                nexthops.add(obj)
        return Owned(
            rules=frozenset(rules),
            routes=frozenset(routes),
            nexthops=frozenset(nexthops),
            groups=frozenset(groups),
            foreign_nexthop_ids=frozenset(foreign),
        )

    def holder(self, obj: KernelObject) -> int | None:
        if isinstance(obj, (Nexthop, NexthopGroup)):
            found = self._nl.get(codec.id_msg(obj.id), RTM_GETNEXTHOP)
            return None if found is None else codec.nexthop_protocol(found)
        if isinstance(obj, Route):
            request = rtmsg_nh()
            request["family"] = codec.AF[obj.family]
            request["table"] = codec.RT_TABLE_COMPAT if obj.table > 255 else obj.table
            request["attrs"] = [("RTA_TABLE", obj.table)]
            for msg in self._nl.dump(request, RTM_GETROUTE):
                route = codec.route_from_msg(msg)
                if route is not None and route.key == obj.key:
                    return codec.route_protocol(msg)
            return None
        for msg in self._rule_msgs(obj.family):
            rule = codec.rule_from_msg(msg)
            if rule == obj:
                return codec.rule_protocol(msg)
        return None

    # --- writing -----------------------------------------------------------

    def execute(self, ops: Sequence[Op]) -> list[OpResult]:
        self._round_rules.clear()
        requests = [self._request(op) for op in ops]
        answers = self._nl.request(requests)
        return [OpResult(op, code, text) for op, (code, text) in zip(ops, answers)]

    @staticmethod
    def _request(op: Op) -> tuple[nlmsg, int, int]:
        obj = op.obj
        delete = op.action is Action.DELETE
        if isinstance(obj, Rule):
            return (
                codec.rule_msg(obj),
                RTM_DELRULE if delete else RTM_NEWRULE,
                _CREATE_FLAGS.get(op.action, 0),
            )
        if isinstance(obj, Route):
            msg = codec.route_msg(obj)
            return msg, RTM_DELROUTE if delete else RTM_NEWROUTE, _CREATE_FLAGS.get(op.action, 0)
        if delete:
            return codec.id_msg(obj.id), RTM_DELNEXTHOP, 0
        msg = codec.nexthop_msg(obj) if isinstance(obj, Nexthop) else codec.group_msg(obj)
        return msg, RTM_NEWNEXTHOP, _CREATE_FLAGS[op.action]

    # --- sysctls -----------------------------------------------------------

    def read_firewall(self) -> nft.TableState:
        """The table as nft lists it -- or as this object last read or wrote it, if that was
        under FIREWALL_TRUST_S ago: `nft` is a process (about 5 ms) and a round asks twice.
        No rtnetlink event tells of a change to it: a daemon re-reads it on a timer
        (verify_firewall), which also finds another program's change."""
        now = time.monotonic()
        if self._firewall is not None and now - self._firewall[0] < FIREWALL_TRUST_S:
            return self._firewall[1]
        state = nft.read()
        self._firewall = (now, state)
        return state

    def write_firewall(self, text: str) -> None:
        with self._firewall_lock:
            self._firewall_writes += 1
            self._firewall = None  # a failed write leaves the table unknown: read it next time
        nft.write(text)
        with self._firewall_lock:
            self._firewall_writes += 1  # a verify that read before the write landed is stale too
            self._firewall = (time.monotonic(), nft.parse_table(text))

    def verify_firewall(self) -> bool:
        """Read the table afresh; False when it is not what this object last read or wrote
        (another program changed or removed it).  Without nft there is no table to verify.
        Safe beside the worker's rounds: a write while `nft` reads makes the reading
        stale -- True, and the next verify looks again."""
        if not nft.available():
            return True
        with self._firewall_lock:
            known, writes = self._firewall, self._firewall_writes
        state = nft.read()
        with self._firewall_lock:
            if self._firewall_writes != writes:
                return True
            self._firewall = (time.monotonic(), state)
        return known is None or known[1] == state

    def read_sysctl(self, path: str) -> str | None:
        # os.open/os.read: a reconcile reads ~3 knobs per link, and text-mode
        # file objects cost several times more than the read itself.
        try:
            fd = os.open(os.path.join(self._proc_sys, path), os.O_RDONLY)
        except (FileNotFoundError, NotADirectoryError):
            return None
        try:
            return os.read(fd, 256).decode("ascii").strip()
        finally:
            os.close(fd)

    def write_sysctl(self, path: str, value: str) -> None:
        with open(os.path.join(self._proc_sys, path), "w", encoding="ascii") as f:
            f.write(value)
