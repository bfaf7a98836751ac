"""A small synchronous rtnetlink transport.

Why not pyroute2's IPRoute: we need every message of a reconcile in one
batch (the kernel handles a batch in order and acks each message, so one
sendmsg carries a whole ordered plan), the kernel's extended-ack text for
each failure, strict dump filtering (only routes with our protocol id come
back, however big the main table is), and nexthop messages IPRoute does not
know.  Messages themselves are pyroute2's classes (see messages.py).
"""

from __future__ import annotations

import contextlib
import errno as errno_mod
import socket
import struct
from collections.abc import Iterator, Sequence

from pyroute2.netlink import (
    NLM_F_ACK,
    NLM_F_DUMP,
    NLM_F_REQUEST,
    nlmsg,
)

from . import wire
from .messages import RTM_DELNEXTHOP, RTM_NEWNEXTHOP, RTNLGRP_NEXTHOP

SOL_NETLINK = 270
NETLINK_ADD_MEMBERSHIP = 1
NETLINK_CAP_ACK = 10
NETLINK_EXT_ACK = 11
NETLINK_GET_STRICT_CHK = 12
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33

NLMSG_NOOP = 1
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_DUMP_INTR = 0x10
NLM_F_ACK_TLVS = 0x200
NLMSGERR_ATTR_MSG = 1

RTM_NEWLINK = 16
RTM_DELLINK = 17
RTM_GETLINK = 18
RTM_NEWADDR = 20
RTM_DELADDR = 21
RTM_GETADDR = 22
RTM_NEWROUTE = 24
RTM_DELROUTE = 25
RTM_GETROUTE = 26
RTM_NEWRULE = 32
RTM_DELRULE = 33
RTM_GETRULE = 34

_HDR = wire.NLMSGHDR
_ERR = struct.Struct("=i")
_NLA = struct.Struct("=HH")

# Largest batch handed to one sendmsg: well under the socket buffers below.
_BATCH_BYTES = 60_000
_BUFFER = 4 * 1024 * 1024

# Each message type's fixed header: what dumps and answers carry (NEW), and what
# notifications of a deletion carry too (DEL: the same layout).
_LAYOUTS = {
    RTM_NEWLINK: wire.IFINFOMSG,
    RTM_NEWADDR: wire.IFADDRMSG,
    RTM_NEWROUTE: wire.RTMSG,
    RTM_NEWRULE: wire.FIB_RULE_HDR,
    RTM_NEWNEXTHOP: wire.NHMSG,
}
LAYOUTS = {
    **_LAYOUTS,
    RTM_DELLINK: wire.IFINFOMSG,
    RTM_DELADDR: wire.IFADDRMSG,
    RTM_DELROUTE: wire.RTMSG,
    RTM_DELRULE: wire.FIB_RULE_HDR,
    RTM_DELNEXTHOP: wire.NHMSG,
}


# rtnetlink multicast groups (uapi/linux/rtnetlink.h) a listener joins through bind()'s
# bitmask: links, addresses, routes and rules of both families; nexthop objects (32) are
# beyond the bitmask and joined with NETLINK_ADD_MEMBERSHIP.
NOTIFY_GROUPS = {
    "link": 1,
    "ipv4 address": 5,
    "ipv4 route": 7,
    "ipv4 rule": 8,
    "ipv6 address": 9,
    "ipv6 route": 11,
    "ipv6 rule": 19,
}
_NOTIFY_BUFFER = 8 * 1024 * 1024


def subscribe() -> tuple[socket.socket, bool]:
    """A non-blocking socket hearing every change to links, addresses, routes, rules and
    nexthops in this namespace; and whether nexthop notifications could be joined."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_NONBLOCK, socket.NETLINK_ROUTE)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, _NOTIFY_BUFFER)
    except OSError:  # not CAP_NET_ADMIN: best effort
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _NOTIFY_BUFFER)
    mask = 0
    for group in NOTIFY_GROUPS.values():
        mask |= 1 << (group - 1)
    sock.bind((0, mask))
    try:
        sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, RTNLGRP_NEXTHOP)
    except OSError:  # a kernel without nexthop objects
        return sock, False
    return sock, True


class NetlinkError(OSError):
    """A request the kernel refused, with its extended-ack text when given."""

    def __init__(self, code: int, message: str = "") -> None:
        text = errno_mod.errorcode.get(code, str(code))
        super().__init__(code, f"{text}: {message}" if message else text)
        self.kernel_message = message


class NetlinkSocket:
    """One NETLINK_ROUTE socket in the caller's network namespace."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        self._sock.bind((0, 0))
        for opt in (NETLINK_EXT_ACK, NETLINK_CAP_ACK, NETLINK_GET_STRICT_CHK):
            with contextlib.suppress(OSError):  # older kernels: plain acks, unfiltered dumps
                self._sock.setsockopt(SOL_NETLINK, opt, 1)
        for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, force, _BUFFER)
            except OSError:  # not CAP_NET_ADMIN: best effort
                self._sock.setsockopt(socket.SOL_SOCKET, plain, _BUFFER)
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    @property
    def portid(self) -> int:
        """The kernel's id for this socket: notifications caused by our requests carry it."""
        return int(self._sock.getsockname()[0])

    def __enter__(self) -> NetlinkSocket:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        return self._seq

    @staticmethod
    def _encode(msg: nlmsg, msg_type: int, flags: int, seq: int) -> bytes:
        msg["header"] = {"type": msg_type, "flags": flags, "sequence_number": seq, "pid": 0}
        msg.encode()
        return bytes(msg.data)

    def _messages(self) -> Iterator[tuple[int, int, int, bytes]]:
        """(type, flags, seq, whole message) for each message of one recv."""
        data = self._sock.recv(1 << 20)
        offset = 0
        while offset + _HDR.size <= len(data):
            length, msg_type, flags, seq, _pid = _HDR.unpack_from(data, offset)
            if length < _HDR.size:
                break
            yield msg_type, flags, seq, data[offset : offset + length]
            offset += (length + 3) & ~3

    @staticmethod
    def _parse_error(raw: bytes, flags: int) -> tuple[int, str]:
        (code,) = _ERR.unpack_from(raw, _HDR.size)
        if code == 0 or not flags & NLM_F_ACK_TLVS:
            return -code, ""
        # With NETLINK_CAP_ACK the original request is not echoed: the
        # TLVs follow the error code and the original header.
        offset = _HDR.size + _ERR.size + _HDR.size
        while offset + _NLA.size <= len(raw):
            length, kind = _NLA.unpack_from(raw, offset)
            if length < _NLA.size:
                break
            if kind & 0x3FFF == NLMSGERR_ATTR_MSG:
                text = raw[offset + _NLA.size : offset + length].split(b"\0", 1)[0]
                return -code, text.decode("utf-8", "replace")
            offset += (length + 3) & ~3
        return -code, ""

    def request(self, requests: Sequence[tuple[nlmsg, int, int]]) -> list[tuple[int, str]]:
        """Send (message, type, flags) requests in order; (errno, text) for each, 0 = done.

        The kernel processes the messages of one sendmsg in order and acks
        each, so a failure does not stop the ones after it.
        """
        results: list[tuple[int, str]] = [(0, "")] * len(requests)
        index_of: dict[int, int] = {}
        chunk: list[bytes] = []
        size = 0

        def flush() -> None:
            nonlocal size
            if not chunk:
                return
            self._sock.send(b"".join(chunk))
            chunk.clear()
            size = 0
            while index_of:
                for msg_type, flags, seq, raw in self._messages():
                    if msg_type != NLMSG_ERROR or seq not in index_of:
                        continue
                    results[index_of.pop(seq)] = self._parse_error(raw, flags)

        for i, (msg, msg_type, flags) in enumerate(requests):
            seq = self._next_seq()
            index_of[seq] = i
            data = self._encode(msg, msg_type, flags | NLM_F_REQUEST | NLM_F_ACK, seq)
            chunk.append(data)
            size += len(data)
            if size >= _BATCH_BYTES:
                flush()
        flush()
        return results

    def dump(self, msg: nlmsg, msg_type: int) -> list[wire.Message]:
        """All messages of a dump, decoded; restarted if the kernel says it was interrupted."""
        for _attempt in range(5):
            messages, interrupted = self._dump_once(msg, msg_type)
            if not interrupted:
                return messages
        raise NetlinkError(errno_mod.EAGAIN, "dump kept changing under us (NLM_F_DUMP_INTR five times)")

    def _dump_once(self, msg: nlmsg, msg_type: int) -> tuple[list[wire.Message], bool]:
        seq = self._next_seq()
        self._sock.send(self._encode(msg, msg_type, NLM_F_REQUEST | NLM_F_DUMP, seq))
        out: list[wire.Message] = []
        interrupted = False
        while True:
            for kind, flags, got_seq, raw in self._messages():
                if got_seq != seq:
                    continue
                interrupted |= bool(flags & NLM_F_DUMP_INTR)
                if kind == NLMSG_DONE:
                    # The kernel may end a dump with an error code in DONE's payload:
                    # an empty answer must not pass for "nothing there".
                    if len(raw) >= _HDR.size + _ERR.size:
                        (code,) = _ERR.unpack_from(raw, _HDR.size)
                        if code < 0:
                            raise NetlinkError(-code, "dump refused")
                    return out, interrupted
                if kind == NLMSG_ERROR:
                    code, text = self._parse_error(raw, flags)
                    if code:
                        raise NetlinkError(code, text)
                    continue
                layout = _LAYOUTS.get(kind)
                if layout is not None:
                    out.append(wire.parse(kind, layout, raw))

    def get(self, msg: nlmsg, msg_type: int) -> wire.Message | None:
        """One object by its identity (RTM_GET* without DUMP); None when it does not exist."""
        seq = self._next_seq()
        self._sock.send(self._encode(msg, msg_type, NLM_F_REQUEST, seq))
        while True:
            for kind, flags, got_seq, raw in self._messages():
                if got_seq != seq:
                    continue
                if kind == NLMSG_ERROR:
                    code, text = self._parse_error(raw, flags)
                    if code in (errno_mod.ENOENT, errno_mod.ESRCH, errno_mod.ENODEV):
                        return None
                    raise NetlinkError(code, text)
                layout = _LAYOUTS.get(kind)
                return None if layout is None else wire.parse(kind, layout, raw)
