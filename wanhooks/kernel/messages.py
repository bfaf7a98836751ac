"""rtnetlink messages pyroute2 0.9 lacks, built on its own message classes.

pyroute2 knows routes, rules, links and addresses, but not nexthop objects
(RTM_*NEXTHOP, struct nhmsg, NHA_*) nor RTA_NH_ID in route messages.  The
layouts are the kernel's UAPI (include/uapi/linux/nexthop.h, rtnetlink.h);
tests/test_messages.py checks them byte for byte and round trip.
"""

from __future__ import annotations

import socket
import struct

from pyroute2.netlink import NLA_F_NESTED, nla, nla_base_string, nlmsg
from pyroute2.netlink.rtnl.rtmsg import rtmsg

RTM_NEWNEXTHOP = 104
RTM_DELNEXTHOP = 105
RTM_GETNEXTHOP = 106
RTNLGRP_NEXTHOP = 32  # >= 32: join with NETLINK_ADD_MEMBERSHIP, not the bind() bitmask
RTA_NH_ID = 30

NEXTHOP_GRP_TYPE_MPATH = 0  # hash-threshold
NEXTHOP_GRP_TYPE_RES = 1  # resilient

RTNH_F_DEAD = 1
RTNH_F_ONLINK = 4
RTNH_F_LINKDOWN = 16

# struct nexthop_grp { __u32 id; __u8 weight; __u8 weight_high; __u16 resvd2; }
# weight holds weight - 1, so 1..256 fit in the low byte; send weight_high 0.
_NH_GRP = struct.Struct("=IBBH")


class nhmsg(nlmsg):  # noqa: N801 - pyroute2's naming for message classes
    """struct nhmsg { u8 family, scope, protocol, resvd; u32 flags } + NHA_* attributes."""

    prefix = "NHA_"
    fields = (
        ("family", "B"),
        ("scope", "B"),
        ("protocol", "B"),
        ("resvd", "B"),
        ("flags", "I"),
    )
    nla_map = (
        (0, "NHA_UNSPEC", "none"),
        (1, "NHA_ID", "uint32"),
        (2, "NHA_GROUP", "nh_group"),
        (3, "NHA_GROUP_TYPE", "uint16"),
        (4, "NHA_BLACKHOLE", "flag"),
        (5, "NHA_OIF", "uint32"),
        (6, "NHA_GATEWAY", "nh_gateway"),
        (7, "NHA_ENCAP_TYPE", "uint16"),
        (8, "NHA_ENCAP", "hex"),
        (9, "NHA_GROUPS", "flag"),
        (10, "NHA_MASTER", "uint32"),
        (11, "NHA_FDB", "flag"),
        (12, "NHA_RES_GROUP", "res_group"),
        (13, "NHA_RES_BUCKET", "hex"),
        (14, "NHA_OP_FLAGS", "uint32"),
    )

    class nh_group(nla_base_string):  # noqa: N801
        """NHA_GROUP: an array of struct nexthop_grp as [(id, weight 1..256), ...]."""

        __slots__ = ()

        def encode(self) -> None:
            members = self["value"]
            self["value"] = b"".join(_NH_GRP.pack(i, w - 1, 0, 0) for i, w in members)
            nla_base_string.encode(self)
            self["value"] = members

        def decode(self) -> None:
            nla_base_string.decode(self)
            raw = bytes(self["value"])
            # a tuple: pyroute2 looks decoded values up in a dict
            self["value"] = tuple(
                (nhid, low + 1 + (high << 8)) for nhid, low, high, _ in _NH_GRP.iter_unpack(raw)
            )

    class nh_gateway(nla_base_string):  # noqa: N801
        """NHA_GATEWAY: 4 or 16 bytes; the family comes from the length."""

        __slots__ = ()

        def encode(self) -> None:
            text = self["value"]
            family = socket.AF_INET6 if ":" in text else socket.AF_INET
            self["value"] = socket.inet_pton(family, text)
            nla_base_string.encode(self)
            self["value"] = text

        def decode(self) -> None:
            nla_base_string.decode(self)
            raw = bytes(self["value"])
            family = socket.AF_INET6 if len(raw) == 16 else socket.AF_INET
            self["value"] = socket.inet_ntop(family, raw)

    class res_group(nla):  # noqa: N801
        nla_flags = NLA_F_NESTED  # the kernel rejects this nest without the flag
        prefix = "NHA_RES_GROUP_"
        nla_map = (
            (0, "NHA_RES_GROUP_PAD", "none"),
            (1, "NHA_RES_GROUP_BUCKETS", "uint16"),
            (2, "NHA_RES_GROUP_IDLE_TIMER", "uint32"),
            (3, "NHA_RES_GROUP_UNBALANCED_TIMER", "uint32"),
            (4, "NHA_RES_GROUP_UNBALANCED_TIME", "uint64"),
        )


class rtmsg_nh(rtmsg):  # noqa: N801
    """pyroute2's route message with the attributes after RTA_EXPIRES, up to RTA_NH_ID."""

    nla_map = (
        *rtmsg.nla_map,
        ("RTA_PAD", "hex"),
        ("RTA_UID", "uint32"),
        ("RTA_TTL_PROPAGATE", "uint8"),
        ("RTA_IP_PROTO", "uint8"),
        ("RTA_SPORT", "uint16"),
        ("RTA_DPORT", "uint16"),
        ("RTA_NH_ID", "uint32"),
    )
