"""Model objects <-> rtnetlink messages.  No I/O here: tests round-trip it."""

from __future__ import annotations

import ipaddress
import socket
import struct
import time
from typing import Any

from pyroute2.netlink.rtnl.fibmsg import fibmsg

from ..constants import RTPROT_WANHOOKS, TABLE_MAIN, USER_HZ
from ..model import (
    Address,
    IPAddress,
    IPNetwork,
    LinkCounters,
    MainDefault,
    Nexthop,
    NexthopGroup,
    ObservedLink,
    PathHop,
    Route,
    Rule,
    canonical,
)
from .messages import (
    NEXTHOP_GRP_TYPE_MPATH,
    NEXTHOP_GRP_TYPE_RES,
    RTA_NH_ID,
    RTNH_F_DEAD,
    RTNH_F_LINKDOWN,
    RTNH_F_ONLINK,
    nhmsg,
    rtmsg_nh,
)
from .wire import Message, attributes, multipath

AF: dict[int, int] = {4: int(socket.AF_INET), 6: int(socket.AF_INET6)}
FAMILY: dict[int, int] = {int(socket.AF_INET): 4, int(socket.AF_INET6): 6}
RT_TABLE_COMPAT = 252  # rtm_table when the real id (> 255) is in RTA_TABLE
RTN_UNICAST = 1
ROUTE_TYPES = {6: "blackhole", 7: "unreachable", 8: "prohibit"}  # RTN_* that end a lookup
FR_ACT_TO_TBL = 1
FR_ACT_UNREACHABLE = 7
SCOPES = {"universe": 0, "link": 253, "host": 254}
SCOPE_NAMES = {v: k for k, v in SCOPES.items()}
ADDRESS_SCOPES = {0: "global", 200: "site", 253: "link", 254: "host"}  # as `ip addr` names them
IFA_F_SECONDARY = 0x01
IFA_F_DADFAILED = 0x08
IFA_F_DEPRECATED = 0x20
IFA_F_TENTATIVE = 0x40
ARPHRD_NONE = 0xFFFE
ARPHRD_PPP = 512
OPER_STATES = {
    0: "unknown",
    1: "notpresent",
    2: "down",
    3: "lowerlayerdown",
    4: "testing",
    5: "dormant",
    6: "up",
}


# Attribute numbers read from dumps (uapi: rtnetlink.h, fib_rules.h, nexthop.h, if_link.h, if_addr.h).
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_PREFSRC, RTA_MULTIPATH, RTA_TABLE = 1, 4, 5, 6, 7, 9, 15
FRA_SRC, FRA_PRIORITY, FRA_SUPPRESS_PREFIXLEN, FRA_TABLE, FRA_PROTOCOL = 2, 6, 14, 15, 21
FRA_FWMARK_ATTR = 10
FRA_FWMASK = 16
FRA_DST, FRA_IP_PROTO, FRA_DPORT_RANGE = 1, 22, 24
PORT_RANGE = struct.Struct("=HH")  # struct fib_rule_port_range, host order
# iifname, goto, flow, tun_id, suppress_ifgroup, oifname, l3mdev, uid, sport: never wanhooks'
# (src, dst, fwmark/fwmask, ip_proto and dport are read)
FRA_OTHER_SELECTORS = (3, 4, 11, 12, 13, 17, 19, 20, 23)
NHA_ID, NHA_GROUP, NHA_GROUP_TYPE, NHA_OIF, NHA_GATEWAY, NHA_RES_GROUP = 1, 2, 3, 5, 6, 12
NHA_RES_GROUP_BUCKETS, NHA_RES_GROUP_IDLE_TIMER, NHA_RES_GROUP_UNBALANCED_TIMER = 1, 2, 3
IFLA_ADDRESS, IFLA_IFNAME, IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_INFO_KIND = 1, 3, 16, 18, 1
IFLA_STATS64 = 23
# struct rtnl_link_stats64 begins rx_packets, tx_packets, rx_bytes, tx_bytes (__u64 each)
LINK_STATS64_HEAD = struct.Struct("=QQQQ")
IFA_ADDRESS, IFA_LOCAL, IFA_CACHEINFO, IFA_FLAGS = 1, 2, 6, 8
IFA_CACHEINFO_HEAD = struct.Struct("=II")  # struct ifa_cacheinfo: ifa_prefered, ifa_valid (seconds left)
INFINITY_LIFE_TIME = 0xFFFFFFFF
NH_GRP = struct.Struct("=IBBH")  # struct nexthop_grp: id, weight - 1, weight_high, reserved


def _compat_table(table: int) -> int:
    return table if table < 256 else RT_TABLE_COMPAT


# --- rules ------------------------------------------------------------------


def rule_msg(rule: Rule) -> fibmsg:
    msg = fibmsg()
    msg["family"] = AF[rule.family]
    msg["table"] = _compat_table(rule.table)
    msg["action"] = FR_ACT_UNREACHABLE if rule.unreachable else FR_ACT_TO_TBL
    attrs: list[tuple[str, Any]] = [("FRA_PRIORITY", rule.priority), ("FRA_PROTOCOL", RTPROT_WANHOOKS)]
    if not rule.unreachable:
        attrs.append(("FRA_TABLE", rule.table))
    if rule.src is not None:
        msg["src_len"] = rule.src.prefixlen
        attrs.append(("FRA_SRC", str(rule.src.network_address)))
    if rule.dst is not None:
        msg["dst_len"] = rule.dst.prefixlen
        attrs.append(("FRA_DST", str(rule.dst.network_address)))
    if rule.ip_proto is not None:
        attrs.append(("FRA_IP_PROTO", rule.ip_proto))
    if rule.dport is not None:
        attrs.append(("FRA_DPORT_RANGE", f"{rule.dport[0]}:{rule.dport[1]}"))
    if rule.suppress_prefixlength is not None:
        attrs.append(("FRA_SUPPRESS_PREFIXLEN", rule.suppress_prefixlength))
    if rule.fwmark is not None:
        attrs.append(("FRA_FWMARK", rule.fwmark))
        attrs.append(("FRA_FWMASK", rule.fwmask if rule.fwmask is not None else 0xFFFFFFFF))
    msg["attrs"] = attrs
    return msg


def _rule_from_msg(msg: Message) -> Rule | None:
    """A Rule, or None for a rule this model cannot express (then it is not ours)."""
    family_af, dst_len, src_len, _tos, table, _r1, _r2, action, _flags = msg.fields
    family = FAMILY.get(family_af)
    if family is None or action not in (FR_ACT_TO_TBL, FR_ACT_UNREACHABLE):
        return None
    if any(kind in msg.attrs for kind in FRA_OTHER_SELECTORS):
        return None  # selects on something wanhooks never uses: not one of ours
    raw_src, raw_dst = msg.attrs.get(FRA_SRC), msg.attrs.get(FRA_DST)
    src = _net(raw_src, src_len) if raw_src is not None else None
    dst = _net(raw_dst, dst_len) if raw_dst is not None else None
    raw_ports = msg.attrs.get(FRA_DPORT_RANGE)
    dport = PORT_RANGE.unpack_from(raw_ports) if raw_ports is not None else None
    unreachable = action == FR_ACT_UNREACHABLE
    suppress = msg.u32(FRA_SUPPRESS_PREFIXLEN)
    if suppress == 0xFFFFFFFF:  # "not set" in dumps
        suppress = None
    fwmark = msg.u32(FRA_FWMARK_ATTR)
    return Rule(
        family=family,
        priority=msg.u32(FRA_PRIORITY, 0) or 0,
        table=0 if unreachable else (msg.u32(FRA_TABLE, table) or table),
        src=src,
        suppress_prefixlength=suppress,
        fwmark=fwmark,
        fwmask=msg.u32(FRA_FWMASK, 0xFFFFFFFF) if fwmark is not None else None,
        dst=dst,
        ip_proto=msg.u8(FRA_IP_PROTO),
        dport=(dport[0], dport[1]) if dport is not None else None,
        unreachable=unreachable,
    )


# Selectors that narrow a rule to some traffic; fwmark/fwmask (and "not") are
# how a tunnel exempts its own encapsulated packets, so they do not count.
FRA_NARROWING = (1, 2, 3, 17, 19, 20, 22, 23, 24)
FRA_SUPPRESSORS = (13, 14)  # suppress_ifgroup, suppress_prefixlength: dumped as -1 when unset
NOT_SET = 0xFFFFFFFF
FIB_RULE_INVERT = 0x2
SPECIAL_TABLES = (0, 253, TABLE_MAIN, 255)  # unspec, default, main, local


def catch_all_table(msg: Message) -> tuple[int, int, int] | None:
    """(family, priority, table) of a rule sending all traffic (fwmark aside) to a table."""
    family_af, dst_len, src_len, _tos, table, _r1, _r2, action, flags = msg.fields
    family = FAMILY.get(family_af)
    if family is None or action != FR_ACT_TO_TBL or dst_len or src_len:
        return None
    if any(kind in msg.attrs for kind in FRA_NARROWING):
        return None
    if any(msg.u32(kind, NOT_SET) != NOT_SET for kind in FRA_SUPPRESSORS):
        return None
    if flags & FIB_RULE_INVERT and FRA_FWMARK_ATTR not in msg.attrs:
        return None  # "not from all": matches nothing
    full_table = msg.u32(FRA_TABLE, table) or table
    if full_table in SPECIAL_TABLES:
        return None
    return family, msg.u32(FRA_PRIORITY, 0) or 0, full_table


def rule_protocol(msg: Message) -> int:
    return msg.u8(FRA_PROTOCOL, 0) or 0


# --- routes -----------------------------------------------------------------


def route_msg(route: Route) -> rtmsg_nh:
    """The whole route, for add and for delete alike: a delete that names the
    nexthops removes only our route, not another program's ECMP sibling
    merged into it (IPv6 deletes every sibling of a bare prefix)."""
    msg = rtmsg_nh()
    msg["family"] = AF[route.family]
    msg["dst_len"] = route.dst.prefixlen
    msg["table"] = _compat_table(route.table)
    msg["proto"] = RTPROT_WANHOOKS
    msg["scope"] = SCOPES[route.scope]
    msg["type"] = RTN_UNICAST
    attrs: list[tuple[str, Any]] = [("RTA_TABLE", route.table), ("RTA_PRIORITY", route.metric)]
    if route.dst.prefixlen:
        attrs.append(("RTA_DST", str(route.dst.network_address)))
    if route.nhid is not None:
        attrs.append(("RTA_NH_ID", route.nhid))
    elif route.multipath:
        attrs.append(("RTA_MULTIPATH", [_hop_msg(hop) for hop in route.multipath]))
    else:
        if route.oif is not None:
            attrs.append(("RTA_OIF", route.oif))
        if route.gateway is not None:
            attrs.append(("RTA_GATEWAY", str(route.gateway)))
        if route.onlink:
            msg["flags"] = RTNH_F_ONLINK
    if route.prefsrc is not None:
        attrs.append(("RTA_PREFSRC", str(route.prefsrc)))
    msg["attrs"] = attrs
    return msg


def _hop_msg(hop: PathHop) -> dict[str, Any]:
    attrs = [("RTA_GATEWAY", str(hop.gateway))] if hop.gateway is not None else []
    return {
        "oif": hop.oif,
        "hops": hop.weight - 1,
        "flags": RTNH_F_ONLINK if hop.onlink else 0,
        "attrs": attrs,
    }


# Dumps repeat the same few addresses and prefixes thousands of times;
# building ipaddress objects is most of the cost of reading them.
_ADDRESSES: dict[bytes, IPAddress] = {}
_NETWORKS: dict[tuple[bytes, int], IPNetwork] = {}
_CACHE_MAX = 8192


def _ip(raw: bytes | None) -> IPAddress | None:
    return None if raw is None else _addr(raw)


def _addr(raw: bytes) -> IPAddress:
    found = _ADDRESSES.get(raw)
    if found is None:
        if len(_ADDRESSES) > _CACHE_MAX:
            _ADDRESSES.clear()
        found = _ADDRESSES[raw] = canonical(ipaddress.ip_address(raw))
    return found


def _net(raw: bytes, prefixlen: int) -> IPNetwork:
    key = (raw, prefixlen)
    found = _NETWORKS.get(key)
    if found is None:
        if len(_NETWORKS) > _CACHE_MAX:
            _NETWORKS.clear()
        found = _NETWORKS[key] = canonical(ipaddress.ip_network(key, strict=False))
    return found


def _route_from_msg(msg: Message) -> Route | None:
    family_af, dst_len, _src_len, _tos, table, _proto, scope, _type, flags = msg.fields
    family = FAMILY.get(family_af)
    if family is None:
        return None
    raw_dst = msg.attrs.get(RTA_DST, bytes(4 if family == 4 else 16))
    common: dict[str, Any] = {
        "family": family,
        "table": msg.u32(RTA_TABLE, table),
        "dst": _net(raw_dst, dst_len),
        "metric": msg.u32(RTA_PRIORITY, 0),
        "scope": SCOPE_NAMES.get(scope, str(scope)),
        "prefsrc": _ip(msg.attrs.get(RTA_PREFSRC)),
    }
    # With nexthop_compat_mode the kernel also expands the nexthops of an
    # nhid route into RTA_MULTIPATH/RTA_GATEWAY: the id is the truth.
    nhid = msg.u32(RTA_NH_ID)
    if nhid is not None:
        return Route(nhid=nhid, **common)
    raw_hops = msg.attrs.get(RTA_MULTIPATH)
    if raw_hops:
        hops = tuple(
            sorted(
                PathHop(
                    oif=oif,
                    gateway=_ip(attrs.get(RTA_GATEWAY)),
                    weight=count + 1,
                    onlink=bool(hop_flags & RTNH_F_ONLINK),
                )
                for hop_flags, count, oif, attrs in multipath(raw_hops)
            )
        )
        return Route(multipath=hops, **common)
    return Route(
        oif=msg.u32(RTA_OIF),
        gateway=_ip(msg.attrs.get(RTA_GATEWAY)),
        onlink=bool(flags & RTNH_F_ONLINK),
        **common,
    )


def route_protocol(msg: Message) -> int:
    return msg.fields[5]


def main_default_from_msg(msg: Message) -> MainDefault | None:
    """A main-table default route with one device, as managers install a link's gateway."""
    family_af, dst_len, _src_len, _tos, table, proto, _scope, rtype, flags = msg.fields
    family = FAMILY.get(family_af)
    if family is None or dst_len != 0 or msg.u32(RTA_TABLE, table) != TABLE_MAIN:
        return None
    if rtype != RTN_UNICAST:
        kind = ROUTE_TYPES.get(rtype)
        if kind is None:
            return None
        return MainDefault(
            family=family,
            oif=0,
            gateway=None,
            metric=msg.u32(RTA_PRIORITY, 0) or 0,
            protocol=proto,
            kind=kind,
        )
    oif = msg.u32(RTA_OIF)
    gateway = msg.attrs.get(RTA_GATEWAY)
    onlink = bool(flags & RTNH_F_ONLINK)
    dead = bool(flags & (RTNH_F_DEAD | RTNH_F_LINKDOWN))
    if oif is None:
        hops = multipath(msg.attrs.get(RTA_MULTIPATH, b""))
        if len(hops) != 1:  # a multipath default in main: not one link's gateway
            return None
        hop_flags, _count, oif, attrs = hops[0]
        gateway = attrs.get(RTA_GATEWAY)
        onlink = bool(hop_flags & RTNH_F_ONLINK)
        dead = bool(hop_flags & (RTNH_F_DEAD | RTNH_F_LINKDOWN))
    return MainDefault(
        family=family,
        oif=oif,
        gateway=_ip(gateway),
        onlink=onlink,
        metric=msg.u32(RTA_PRIORITY, 0) or 0,
        protocol=proto,
        dead=dead,
    )


# --- nexthops ---------------------------------------------------------------


def nexthop_msg(nh: Nexthop) -> nhmsg:
    msg = nhmsg()
    msg["family"] = AF[nh.family]
    msg["protocol"] = RTPROT_WANHOOKS
    msg["flags"] = RTNH_F_ONLINK if nh.onlink else 0
    attrs: list[tuple[str, Any]] = [("NHA_ID", nh.id), ("NHA_OIF", nh.oif)]
    if nh.gateway is not None:
        attrs.append(("NHA_GATEWAY", str(nh.gateway)))
    msg["attrs"] = attrs
    return msg


def group_msg(group: NexthopGroup) -> nhmsg:
    msg = nhmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["protocol"] = RTPROT_WANHOOKS
    attrs: list[tuple[str, Any]] = [("NHA_ID", group.id), ("NHA_GROUP", list(group.members))]
    if group.resilient:
        attrs.append(("NHA_GROUP_TYPE", NEXTHOP_GRP_TYPE_RES))
        attrs.append(
            (
                "NHA_RES_GROUP",
                {
                    "attrs": [
                        ("NHA_RES_GROUP_BUCKETS", group.buckets),
                        ("NHA_RES_GROUP_IDLE_TIMER", group.idle_timer * USER_HZ),
                        ("NHA_RES_GROUP_UNBALANCED_TIMER", group.unbalanced_timer * USER_HZ),
                    ]
                },
            )
        )
    else:
        attrs.append(("NHA_GROUP_TYPE", NEXTHOP_GRP_TYPE_MPATH))
    msg["attrs"] = attrs
    return msg


def id_msg(nhid: int) -> nhmsg:
    """A request naming one nexthop object (get, delete)."""
    msg = nhmsg()
    msg["family"] = socket.AF_UNSPEC
    msg["attrs"] = [("NHA_ID", nhid)]
    return msg


def nexthop_id(msg: Message) -> int:
    return msg.u32(NHA_ID, 0) or 0


def nexthop_family(msg: Message) -> int:
    return FAMILY.get(msg.fields[0], 0)


def nexthop_protocol(msg: Message) -> int:
    return msg.fields[2]


def _nexthop_from_msg(msg: Message, families: dict[int, int]) -> Nexthop | NexthopGroup | None:
    """families: nexthop id -> family, to give a group the family of its members."""
    family_af, _scope, _proto, _resvd, flags = msg.fields
    nhid = nexthop_id(msg)
    raw_group = msg.attrs.get(NHA_GROUP)
    if raw_group:
        members = tuple(
            sorted((i, low + 1 + (high << 8)) for i, low, high, _ in NH_GRP.iter_unpack(raw_group))
        )
        common: dict[str, Any] = {"id": nhid, "family": families.get(members[0][0], 0), "members": members}
        raw_res = msg.attrs.get(NHA_RES_GROUP)
        if msg.u16(NHA_GROUP_TYPE, NEXTHOP_GRP_TYPE_MPATH) == NEXTHOP_GRP_TYPE_RES and raw_res is not None:
            res = Message(0, (), attributes(raw_res))
            return NexthopGroup(
                resilient=True,
                buckets=res.u16(NHA_RES_GROUP_BUCKETS, 0) or 0,
                idle_timer=(res.u32(NHA_RES_GROUP_IDLE_TIMER, 0) or 0) // USER_HZ,
                unbalanced_timer=(res.u32(NHA_RES_GROUP_UNBALANCED_TIMER, 0) or 0) // USER_HZ,
                **common,
            )
        return NexthopGroup(resilient=False, **common)
    family = FAMILY.get(family_af)
    oif = msg.u32(NHA_OIF)
    if family is None or oif is None:
        return None  # blackhole or something else we never create
    return Nexthop(
        id=nhid,
        family=family,
        oif=oif,
        gateway=_ip(msg.attrs.get(NHA_GATEWAY)),
        onlink=bool(flags & RTNH_F_ONLINK),
    )


# --- links and addresses -------------------------------------------------------


def link_from_msg(msg: Message, addresses: tuple[Address, ...]) -> ObservedLink:
    _family, dev_type, index, flags, _change = msg.fields
    lladdr = msg.attrs.get(IFLA_ADDRESS, b"")
    kind = ""
    raw_info = msg.attrs.get(IFLA_LINKINFO)
    if raw_info is not None:
        kind = Message(0, (), attributes(raw_info)).string(IFLA_INFO_KIND) or ""
    return ObservedLink(
        index=index,
        name=msg.string(IFLA_IFNAME) or f"if{index}",
        flags=flags,
        oper_state=OPER_STATES.get(msg.u8(IFLA_OPERSTATE, 0) or 0, "unknown"),
        has_lladdr=dev_type not in (ARPHRD_NONE, ARPHRD_PPP) and any(lladdr),
        kind=kind,
        addresses=addresses,
    )


def address_from_msg(msg: Message) -> tuple[int, Address] | None:
    family_af, prefixlen, flags8, scope, index = msg.fields
    family = FAMILY.get(family_af)
    if family is None:
        return None
    raw = msg.attrs.get(IFA_LOCAL) or msg.attrs.get(IFA_ADDRESS)
    if raw is None:
        return None
    flags = msg.u32(IFA_FLAGS, flags8) or 0
    preferred_until = valid_until = None
    cacheinfo = msg.attrs.get(IFA_CACHEINFO)
    if cacheinfo is not None and len(cacheinfo) >= IFA_CACHEINFO_HEAD.size:
        preferred, valid = IFA_CACHEINFO_HEAD.unpack_from(cacheinfo)
        if valid != INFINITY_LIFE_TIME:  # seconds left as the kernel tells it: now is when
            now = time.monotonic()
            valid_until = now + valid
            preferred_until = now + preferred if preferred != INFINITY_LIFE_TIME else valid_until
    return index, Address(
        family=family,
        address=_addr(raw),
        prefixlen=prefixlen,
        scope=ADDRESS_SCOPES.get(scope, str(scope)),
        secondary=bool(flags & IFA_F_SECONDARY),
        tentative=bool(flags & (IFA_F_TENTATIVE | IFA_F_DADFAILED)),
        deprecated=bool(flags & IFA_F_DEPRECATED),
        preferred_until=preferred_until,
        valid_until=valid_until,
    )


def counters_from_msg(msg: Message) -> tuple[str, LinkCounters] | None:
    """(name, counters) of a link message, or None when it carries no IFLA_STATS64."""
    raw = msg.attrs.get(IFLA_STATS64)
    name = msg.string(IFLA_IFNAME)
    if raw is None or name is None or len(raw) < LINK_STATS64_HEAD.size:
        return None
    rx_packets, tx_packets, rx_bytes, tx_bytes = LINK_STATS64_HEAD.unpack_from(raw)
    return name, LinkCounters(rx_packets, tx_packets, rx_bytes, tx_bytes, index=msg.fields[2])


# What the kernel holds, as the one object of its value (model.canonical): the diff then finds
# a planned object the kernel already holds by identity, not by comparing fields.


def route_from_msg(msg: Message) -> Route | None:
    found = _route_from_msg(msg)
    return None if found is None else canonical(found)


def rule_from_msg(msg: Message) -> Rule | None:
    """A Rule, or None for a rule this model cannot express (then it is not ours)."""
    found = _rule_from_msg(msg)
    return None if found is None else canonical(found)


def nexthop_from_msg(msg: Message, families: dict[int, int]) -> Nexthop | NexthopGroup | None:
    found = _nexthop_from_msg(msg, families)
    return None if found is None else canonical(found)
