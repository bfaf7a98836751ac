"""End only the connections of a link that stopped carrying traffic (I/O).

When a link fails (or a standby link hands its traffic back), its
connections are stuck: their NAT binds them to its address, so they can
neither finish on it nor move.  Ending them at once lets each client open a
new one through a healthy link.  Only conntrack entries whose *reply* goes
to that link's address are deleted -- NATed LAN flows and the host's own
flows from that address -- so every other connection is untouched (mwan3
flushes the whole table; pfSense kills every state of a gateway group).
This runs after the route change, so the new connections take a healthy
link.
"""

from __future__ import annotations

import errno
import logging
import socket
import struct
from collections.abc import Iterable

from pyroute2.conntrack import AsyncConntrack
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

from ..model import IPAddress

log = logging.getLogger("wanhooks.flush")


async def flush_connections(addresses: Iterable[IPAddress]) -> int:
    """Delete every conntrack entry whose reply is addressed to one of `addresses`."""
    wanted = {str(a) for a in addresses}
    if not wanted:
        return 0
    deleted = 0
    for family in {socket.AF_INET if ":" not in a else socket.AF_INET6 for a in wanted}:
        ct = AsyncConntrack()
        try:
            await ct.setup_endpoint()
            doomed = []
            async for entry in await ct.dump_entries(tuple_reply=NFCTAttrTuple(family=family)):
                if entry.tuple_reply.daddr in wanted:
                    doomed.append(entry)
            for entry in doomed:
                try:
                    await ct.delete(entry)
                    deleted += 1
                except OSError:  # ended meanwhile
                    pass
        except OSError as exc:
            log.warning("connection flush failed: %s", exc.strerror or exc)
        finally:
            ct.close()
    return deleted


# --- local sockets (the host's own connections), through sock_diag --------------------

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
SOCK_DESTROY = 21
_NLMSG_ERROR, _NLMSG_DONE = 2, 3
_NLM_F_REQUEST, _NLM_F_ACK, _NLM_F_DUMP = 0x1, 0x4, 0x300
_HDR = struct.Struct("=IHHII")
# struct inet_diag_req_v2: family, protocol, ext, pad, states; then struct inet_diag_sockid
_REQ = struct.Struct("=BBBxI")
_SOCKID = struct.Struct("!HH16s16s")  # sport, dport, src, dst (network order); then if, cookie[2]
_SOCKID_TAIL = struct.Struct("=III")
_MSG = struct.Struct("=BBBB")  # inet_diag_msg: family, state, timer, retrans; then the sockid
TCP_LISTEN = 10


def _sockid_bytes(raw: bytes, offset: int) -> bytes:
    return raw[offset : offset + _SOCKID.size + _SOCKID_TAIL.size]


def destroy_sockets(addresses: Iterable[IPAddress]) -> int:
    """Abort the host's TCP connections whose local address is one of `addresses`.

    Their owners see ECONNABORTED at once and reconnect -- through a healthy
    link -- instead of waiting minutes for a dead path to time out.
    Needs CONFIG_INET_DIAG_DESTROY; without it nothing happens (and it is logged).
    """
    wanted = {(a.version, a.packed) for a in addresses}
    if not wanted:
        return 0
    destroyed = 0
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.bind((0, 0))
        for version, af in ((4, socket.AF_INET), (6, socket.AF_INET6)):
            if not any(v == version for v, _ in wanted):
                continue
            for sockid in _tcp_sockets(nl, af):
                src = sockid[4:20][: 4 if version == 4 else 16]
                if (version, src) in wanted:
                    destroyed += _destroy(nl, af, sockid)
    return destroyed


def _tcp_sockets(nl: socket.socket, af: int) -> list[bytes]:
    request = _REQ.pack(af, socket.IPPROTO_TCP, 0, 0xFFFFFFFF & ~(1 << TCP_LISTEN)) + bytes(48)
    nl.send(
        _HDR.pack(_HDR.size + len(request), SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST | _NLM_F_DUMP, 1, 0) + request
    )
    found: list[bytes] = []
    while True:
        data = nl.recv(1 << 20)
        offset = 0
        while offset + _HDR.size <= len(data):
            length, kind, _flags, _seq, _pid = _HDR.unpack_from(data, offset)
            if kind in (_NLMSG_DONE, _NLMSG_ERROR) or length < _HDR.size:
                return found
            found.append(_sockid_bytes(data, offset + _HDR.size + _MSG.size))
            offset += (length + 3) & ~3


def _destroy(nl: socket.socket, af: int, sockid: bytes) -> int:
    request = _REQ.pack(af, socket.IPPROTO_TCP, 0, 0xFFFFFFFF) + sockid
    nl.send(_HDR.pack(_HDR.size + len(request), SOCK_DESTROY, _NLM_F_REQUEST | _NLM_F_ACK, 2, 0) + request)
    data = nl.recv(65536)
    if len(data) >= _HDR.size + 4 and _HDR.unpack_from(data)[1] == _NLMSG_ERROR:
        (code,) = struct.unpack_from("=i", data, _HDR.size)
        if code == 0:
            return 1
        if -code == errno.EOPNOTSUPP:
            log.warning(
                "this kernel cannot destroy sockets (CONFIG_INET_DIAG_DESTROY): local connections wait"
            )
    return 0
