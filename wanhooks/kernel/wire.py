"""Reading rtnetlink dumps: fixed header + the attributes we use, nothing else.

Requests are built with pyroute2's message classes (messages.py); dumps are
read here.  pyroute2's generic decoder walks every attribute of every
message (link messages carry ~40, with nested statistics), which measured
~0.3 ms per link and ~20 us per route on these machines -- most of a
reconcile with 64 links.  Reading only what codec.py needs is an order of
magnitude cheaper.  tests/test_codec.py checks this reader against
pyroute2's encoder, and the kernel tests against the kernel.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

NLMSGHDR = struct.Struct("=IHHII")  # struct nlmsghdr: length, type, flags, seq, port id
_NLA = struct.Struct("=HH")
NLA_HEADER = _NLA.size  # struct nlattr: length, type
NLA_TYPE_MASK = 0x3FFF  # strips NLA_F_NESTED / NLA_F_NET_BYTEORDER

# The fixed part after struct nlmsghdr, per message type (uapi/linux/rtnetlink.h etc.).
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
FIB_RULE_HDR = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, res1, res2, action, flags
NHMSG = struct.Struct("=BBBBI")  # family, scope, protocol, resvd, flags
RTNEXTHOP = struct.Struct("=HBBi")  # len, flags, hops (weight - 1), ifindex
U8 = struct.Struct("=B")
U16 = struct.Struct("=H")
U32 = struct.Struct("=I")


@dataclass(frozen=True)
class Message:
    """One message: its type, the fixed header fields, and attributes by number."""

    type: int
    fields: tuple[int, ...]
    attrs: dict[int, bytes]

    def u8(self, kind: int, default: int | None = None) -> int | None:
        raw = self.attrs.get(kind)
        return default if raw is None or len(raw) < U8.size else U8.unpack_from(raw)[0]

    def u16(self, kind: int, default: int | None = None) -> int | None:
        raw = self.attrs.get(kind)
        return default if raw is None or len(raw) < U16.size else U16.unpack_from(raw)[0]

    def u32(self, kind: int, default: int | None = None) -> int | None:
        raw = self.attrs.get(kind)
        return default if raw is None or len(raw) < U32.size else U32.unpack_from(raw)[0]

    def string(self, kind: int) -> str | None:
        raw = self.attrs.get(kind)
        return None if raw is None else raw.split(b"\0", 1)[0].decode("utf-8", "replace")


def attributes(data: bytes, offset: int = 0, end: int | None = None) -> dict[int, bytes]:
    """TLV attributes from offset to end; the first of a repeated type wins."""
    end = len(data) if end is None else end
    out: dict[int, bytes] = {}
    while offset + _NLA.size <= end:
        length, kind = _NLA.unpack_from(data, offset)
        if length < _NLA.size or offset + length > end:
            break  # malformed or cut short: keep what was whole
        out.setdefault(kind & NLA_TYPE_MASK, data[offset + _NLA.size : offset + length])
        offset += (length + 3) & ~3
    return out


def parse(msg_type: int, fixed: struct.Struct, raw: bytes, header_size: int = 16) -> Message:
    """raw: a whole netlink message, nlmsghdr included."""
    fields = fixed.unpack_from(raw, header_size)
    return Message(msg_type, tuple(fields), attributes(raw, header_size + fixed.size))


def multipath(raw: bytes) -> list[tuple[int, int, int, dict[int, bytes]]]:
    """RTA_MULTIPATH: (flags, hops, ifindex, attributes) for each struct rtnexthop."""
    hops = []
    offset = 0
    while offset + RTNEXTHOP.size <= len(raw):
        length, flags, count, ifindex = RTNEXTHOP.unpack_from(raw, offset)
        if length < RTNEXTHOP.size or offset + length > len(raw):
            break
        hops.append((flags, count, ifindex, attributes(raw, offset + RTNEXTHOP.size, offset + length)))
        offset += (length + 3) & ~3
    return hops
