"""Reading wanhooks' nftables counters over netlink (kernel/nft_counters.py): the request
asks for the table's counters alone, and a counter object reads back whole or not at all.
Against the real kernel: tests/test_evidence_lab.py."""

from __future__ import annotations

import struct

from wanhooks.kernel import nft_counters as nc
from wanhooks.kernel import wire


def attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def counter_message(name: str, packets: int, octets: int) -> bytes:
    data = attr(nc.NFTA_COUNTER_BYTES, struct.pack(">Q", octets)) + attr(
        nc.NFTA_COUNTER_PACKETS, struct.pack(">Q", packets)
    )
    body = struct.pack("=BBH", nc.NFPROTO_INET, 0, 0) + attr(nc.NFTA_OBJ_TABLE, b"wanhooks\0")
    body += attr(nc.NFTA_OBJ_NAME, name.encode() + b"\0") + attr(nc.NFTA_OBJ_TYPE, struct.pack(">I", 1))
    body += attr(nc.NFTA_OBJ_DATA | 0x8000, data)  # nested, as the kernel flags it
    return wire.NLMSGHDR.pack(16 + len(body), (10 << 8) | 18, 2, 7, 0) + body


def test_the_request_asks_for_wanhooks_counters_alone() -> None:
    raw = nc.dump_request(7)
    length, kind, flags, seq, _pid = wire.NLMSGHDR.unpack_from(raw)
    assert (length, kind, flags, seq) == (len(raw), (10 << 8) | 19, 0x301, 7)
    attrs = wire.attributes(raw, 16 + 4)
    assert attrs[nc.NFTA_OBJ_TABLE] == b"wanhooks\0" and attrs[nc.NFTA_OBJ_TYPE] == b"\0\0\0\1"


def test_a_counter_object_reads_back_and_a_cut_one_does_not() -> None:
    raw = counter_message("rx4_7731", 1 << 40, 3)
    assert nc.parse_object(raw) == ("rx4_7731", 1 << 40, 3)
    assert nc.parse_object(raw[:-6]) is None  # its data cut short
