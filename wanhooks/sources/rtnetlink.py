"""The kernel's own notifications: works with any network manager, or none.

Subscribes to links, addresses, routes, rules and nexthop objects.  Every
message from someone else marks the state dirty; the echoes of wanhooks'
own writes (they carry the port id of its writing socket) are ignored.  A
buffer overrun (ENOBUFS) means messages were lost: resync.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import struct
from collections.abc import Callable

from ..constants import RTPROT_WANHOOKS, is_owned_table
from ..events import Event, KernelChanged, Resync
from ..kernel.messages import RTNLGRP_NEXTHOP
from ..kernel.netlink import NETLINK_ADD_MEMBERSHIP, SO_RCVBUFFORCE, SOL_NETLINK

log = logging.getLogger("wanhooks.rtnetlink")

_HDR = struct.Struct("=IHHII")
_RTMSG = struct.Struct("=BBBBBBBBI")
_NHMSG = struct.Struct("=BBBBI")
_IFINDEX = struct.Struct("=i")

# rtnetlink multicast groups (uapi/linux/rtnetlink.h) joined through bind()'s bitmask.
_GROUPS = {
    "link": 1,
    "ipv4 address": 5,
    "ipv4 route": 7,
    "ipv4 rule": 8,
    "ipv6 address": 9,
    "ipv6 route": 11,
    "ipv6 rule": 19,
}
_KINDS = {
    16: ("link", "new"), 17: ("link", "del"),
    20: ("address", "new"), 21: ("address", "del"),
    24: ("route", "new"), 25: ("route", "del"),
    32: ("rule", "new"), 33: ("rule", "del"),
    104: ("nexthop", "new"), 105: ("nexthop", "del"),
}  # fmt: skip
_RT_TABLE_MAIN = 254
_RTA_TABLE = 15
ENOBUFS = errno.ENOBUFS


def _route_matters(raw: bytes) -> bool:
    """Main-table defaults (a manager's gateway) and anything in or from wanhooks."""
    if len(raw) < _HDR.size + _RTMSG.size:
        return False
    _fam, dst_len, _src_len, _tos, table, proto, _scope, _type, _flags = _RTMSG.unpack_from(raw, _HDR.size)
    if proto == RTPROT_WANHOOKS:
        return True
    full_table = _table_attr(raw) or table
    return (full_table == _RT_TABLE_MAIN and dst_len == 0) or is_owned_table(full_table)


def _table_attr(raw: bytes) -> int | None:
    offset = _HDR.size + _RTMSG.size
    while offset + 4 <= len(raw):
        length, kind = struct.unpack_from("=HH", raw, offset)
        if length < 4:
            return None
        if kind & 0x3FFF == _RTA_TABLE and length >= 8:
            return int(struct.unpack_from("=I", raw, offset + 4)[0])
        offset += (length + 3) & ~3
    return None


def _nexthop_matters(raw: bytes) -> bool:
    if len(raw) < _HDR.size + _NHMSG.size:
        return False
    return bool(_NHMSG.unpack_from(raw, _HDR.size)[2] == RTPROT_WANHOOKS)


def classify(raw: bytes, own_portid: int) -> KernelChanged | None:
    """The event one notification stands for; None for echoes and noise."""
    _length, msg_type, _flags, _seq, portid = _HDR.unpack_from(raw)
    kind = _KINDS.get(msg_type)
    if kind is None or (own_portid and portid == own_portid):
        return None
    what, change = kind
    if what == "route" and not _route_matters(raw):
        return None
    if what == "nexthop" and not _nexthop_matters(raw):
        return None
    ifindex = 0
    if what == "link" and len(raw) >= _HDR.size + 8:
        ifindex = _IFINDEX.unpack_from(raw, _HDR.size + 4)[0]
    elif what == "address" and len(raw) >= _HDR.size + 8:
        ifindex = struct.unpack_from("=I", raw, _HDR.size + 4)[0]
    return KernelChanged(what=what, change=change, ifindex=ifindex)


class RtnetlinkSource:
    """Reads notifications on the event loop and posts events."""

    def __init__(self, post: Callable[[Event], None], own_portid: int) -> None:
        self._post = post
        self._own = own_portid
        self._sock: socket.socket | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        mask = 0
        for group in _GROUPS.values():
            mask |= 1 << (group - 1)
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 8 * 1024 * 1024)
        except OSError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
        sock.bind((0, mask))
        try:  # groups >= 32 cannot go through bind()'s bitmask
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_NEXTHOP)
        except OSError:
            log.info("kernel without nexthop notifications: relying on link/route events")
        self._sock = sock
        loop.add_reader(sock.fileno(), self._readable)

    def stop(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._sock is not None:
            loop.remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                data = self._sock.recv(1 << 20)
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno == ENOBUFS:
                    self._post(Resync("netlink buffer overrun: notifications were lost"))
                    continue
                raise
            offset = 0
            while offset + _HDR.size <= len(data):
                length = _HDR.unpack_from(data, offset)[0]
                if length < _HDR.size:
                    break
                event = classify(data[offset : offset + length], self._own)
                if event is not None:
                    self._post(event)
                offset += (length + 3) & ~3
