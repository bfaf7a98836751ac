"""wanhooks' named nftables counters, read over netlink (NETLINK_NETFILTER).

The evidence of life (router/nft.py's evidence chains) is read every PASSIVE_PERIOD_S (constants.py):
one `nft` process per read would cost some 5 ms; one netlink dump of the table's
counter objects costs tens of microseconds.  Only reading: the table itself is
written by `nft` (router/nft.py).  Integers in nf_tables attributes are big-endian.
"""

from __future__ import annotations

import errno
import socket
import struct

from .. import constants as c
from . import wire

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFT_MSG_GETOBJ = 19  # enum nf_tables_msg_types
NFPROTO_INET = 1
NFT_OBJECT_COUNTER = 1
NFTA_OBJ_TABLE, NFTA_OBJ_NAME, NFTA_OBJ_TYPE, NFTA_OBJ_DATA = 1, 2, 3, 4
NFTA_COUNTER_BYTES, NFTA_COUNTER_PACKETS = 1, 2
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
NLMSG_ERROR, NLMSG_DONE = 2, 3
GETOBJ = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETOBJ
_NFGENMSG = struct.Struct("=BBH")  # family, version, res_id (big-endian; 0)
_ERR = struct.Struct("=i")
_BE_U32 = struct.Struct(">I")
_BE_U64 = struct.Struct(">Q")

Counters = dict[str, tuple[int, int]]  # counter name -> (packets, bytes)


def _attr(kind: int, payload: bytes) -> bytes:
    length = wire.NLA_HEADER + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def dump_request(seq: int, table: str = c.NFT_TABLE) -> bytes:
    """Every counter object of inet <table>, as one dump."""
    body = _NFGENMSG.pack(NFPROTO_INET, 0, 0) + _attr(NFTA_OBJ_TABLE, table.encode() + b"\0")
    body += _attr(NFTA_OBJ_TYPE, _BE_U32.pack(NFT_OBJECT_COUNTER))
    header = wire.NLMSGHDR.pack(wire.NLMSGHDR.size + len(body), GETOBJ, NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
    return header + body


def parse_object(raw: bytes) -> tuple[str, int, int] | None:
    """One NFT_MSG_NEWOBJ message (nlmsghdr included) -> (name, packets, bytes); None if it
    is not a whole counter."""
    attrs = wire.attributes(raw, wire.NLMSGHDR.size + _NFGENMSG.size)
    name, data = attrs.get(NFTA_OBJ_NAME), attrs.get(NFTA_OBJ_DATA)
    if name is None or data is None:
        return None
    inner = wire.attributes(data)
    packets, octets = inner.get(NFTA_COUNTER_PACKETS), inner.get(NFTA_COUNTER_BYTES)
    if packets is None or octets is None or len(packets) < 8 or len(octets) < 8:
        return None
    name_text = name.split(b"\0", 1)[0].decode("ascii", "replace")
    return name_text, _BE_U64.unpack_from(packets)[0], _BE_U64.unpack_from(octets)[0]


class NftCounters:
    """A NETLINK_NETFILTER socket in the caller's network namespace, for reading counters."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        self._sock.bind((0, 0))
        self._seq = 0

    def close(self) -> None:
        self._sock.close()

    def read(self) -> Counters:
        """Every counter of wanhooks' table now; {} when there is no table."""
        self._seq = (self._seq + 1) & 0xFFFFFFFF or 1
        self._sock.send(dump_request(self._seq))
        out: Counters = {}
        while True:
            data = self._sock.recv(1 << 16)
            offset = 0
            while offset + wire.NLMSGHDR.size <= len(data):
                length, kind, _flags, seq, _pid = wire.NLMSGHDR.unpack_from(data, offset)
                if length < wire.NLMSGHDR.size:
                    return out
                raw = data[offset : offset + length]
                offset += (length + 3) & ~3
                if seq != self._seq:
                    continue
                if kind == NLMSG_DONE:
                    return out
                if kind == NLMSG_ERROR:
                    (code,) = _ERR.unpack_from(raw, wire.NLMSGHDR.size)
                    if -code == errno.ENOENT:  # no table (yet): no counters
                        return out
                    if code:
                        raise OSError(-code, f"nftables counters: {errno.errorcode.get(-code, code)}")
                    continue
                found = parse_object(raw)
                if found is not None:
                    out[found[0]] = (found[1], found[2])
