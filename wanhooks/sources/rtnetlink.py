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
import os
import socket
import struct
from collections.abc import Callable

from ..constants import RTPROT_WANHOOKS, TABLE_MAIN, is_owned_table
from ..events import Event, KernelChanged, Resync
from ..kernel import netlink as nl
from ..kernel import wire
from ..kernel.codec import FRA_PROTOCOL, RTA_TABLE
from ..kernel.messages import RTM_DELNEXTHOP, RTM_NEWNEXTHOP

log = logging.getLogger("wanhooks.rtnetlink")

_HDR = wire.NLMSGHDR
_IFINDEX = struct.Struct("=i")  # ifinfomsg's and ifaddrmsg's index, 4 bytes in

_KINDS = {
    nl.RTM_NEWLINK: ("link", "new"), nl.RTM_DELLINK: ("link", "del"),
    nl.RTM_NEWADDR: ("address", "new"), nl.RTM_DELADDR: ("address", "del"),
    nl.RTM_NEWROUTE: ("route", "new"), nl.RTM_DELROUTE: ("route", "del"),
    nl.RTM_NEWRULE: ("rule", "new"), nl.RTM_DELRULE: ("rule", "del"),
    RTM_NEWNEXTHOP: ("nexthop", "new"), RTM_DELNEXTHOP: ("nexthop", "del"),
}  # fmt: skip
ENOBUFS = errno.ENOBUFS


def _route_matters(raw: bytes) -> bool:
    """Main-table defaults (a manager's gateway) and anything in or from wanhooks."""
    if len(raw) < _HDR.size + wire.RTMSG.size:
        return False
    _fam, dst_len, _src_len, _tos, table, proto, _scope, _type, _flags = wire.RTMSG.unpack_from(
        raw, _HDR.size
    )
    if proto == RTPROT_WANHOOKS:
        return True
    full_table = _table_attr(raw) or table
    return (full_table == TABLE_MAIN and dst_len == 0) or is_owned_table(full_table)


def _attr(raw: bytes, fixed: struct.Struct, wanted: int) -> bytes | None:
    """The payload of the first attribute of type `wanted` after the fixed header."""
    return wire.attributes(raw, _HDR.size + fixed.size).get(wanted)


def _table_attr(raw: bytes) -> int | None:
    found = _attr(raw, wire.RTMSG, RTA_TABLE)
    return int(wire.U32.unpack_from(found)[0]) if found is not None and len(found) >= 4 else None


def _nexthop_matters(raw: bytes) -> bool:
    if len(raw) < _HDR.size + wire.NHMSG.size:
        return False
    return bool(wire.NHMSG.unpack_from(raw, _HDR.size)[2] == RTPROT_WANHOOKS)


def _ours(raw: bytes, what: str) -> bool:
    """A route, rule or nexthop carrying wanhooks' protocol id."""
    if what == "route" and len(raw) >= _HDR.size + wire.RTMSG.size:
        return bool(wire.RTMSG.unpack_from(raw, _HDR.size)[5] == RTPROT_WANHOOKS)
    if what == "nexthop":
        return _nexthop_matters(raw)
    if what == "rule":
        found = _attr(raw, wire.FIB_RULE_HDR, FRA_PROTOCOL)
        return found is not None and len(found) >= 1 and found[0] == RTPROT_WANHOOKS
    return False


def who(portid: int) -> str:
    """The sender of a notification, as well as it can be told (only when others delete
    wanhooks' objects, so the /proc walk is rare): the process holding the netlink socket
    bound to that port, found through /proc/net/netlink's inode; else the port id."""
    if portid == 0:
        return "the kernel"
    pid = _socket_owner(portid)
    if pid is not None:
        try:
            with open(f"/proc/{pid}/comm", encoding="utf-8", errors="replace") as f:
                return f"pid {pid} ({f.read().strip()})"
        except OSError:
            pass
    return f"netlink port {portid} (its process has exited, or its fds are not ours to read)"


def _socket_owner(portid: int) -> int | None:
    try:
        with open("/proc/net/netlink", encoding="ascii", errors="replace") as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except OSError:
        return None
    inodes = {row[9] for row in rows if len(row) >= 10 and row[1] == "0" and row[2] == str(portid)}
    if not inodes:
        return None
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                if os.readlink(fd.path) in wanted:
                    return int(entry.name)
        except OSError:
            continue  # gone, or not ours to read
    return None


def classify(raw: bytes, own_portid: int) -> KernelChanged | None:
    """The event one notification stands for; None for echoes and noise.

    A deletion of one of wanhooks' own objects carries the sender's netlink port
    (`deleted_by`; 0 for the kernel itself): the daemon restores, and names the
    process behind the port (who(), off the event loop).
    """
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
        ifindex = wire.U32.unpack_from(raw, _HDR.size + 4)[0]
    if change == "del" and what in ("route", "rule", "nexthop") and _ours(raw, what):
        by = "the kernel" if portid == 0 else f"netlink port {portid}"
        return KernelChanged(what, change, ifindex, detail=f"of wanhooks' by {by}", deleted_by=portid)
    return KernelChanged(what=what, change=change, ifindex=ifindex)


class RtnetlinkSource:
    """Reads notifications on the event loop and posts events."""

    def __init__(self, post: Callable[[Event], None], own_portid: int) -> None:
        self._post = post
        self._own = own_portid
        self._sock: socket.socket | None = None

    async def run(self) -> None:
        """Listen until cancelled.  Listening starts before the first await: a task for
        this that has run once misses nothing."""
        loop = asyncio.get_running_loop()
        self.start(loop)
        try:
            await loop.create_future()  # forever
        finally:
            self.stop(loop)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        sock, nexthops = nl.subscribe()
        if not nexthops:
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
                event: Event | None
                try:
                    event = classify(data[offset : offset + length], self._own)
                except (struct.error, IndexError, ValueError):
                    event = Resync("an rtnetlink message that could not be read")
                if event is not None:
                    self._post(event)
                offset += (length + 3) & ~3
