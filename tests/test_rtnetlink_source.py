"""Which kernel notifications wake the daemon (pure: built messages, no socket)."""

from __future__ import annotations

import struct

from wanhooks.constants import RTPROT_WANHOOKS, TABLE_BALANCE
from wanhooks.sources.rtnetlink import classify

OUR_PORT = 4242


def message(msg_type: int, body: bytes, portid: int = 0) -> bytes:
    return struct.pack("=IHHII", 16 + len(body), msg_type, 0, 0, portid) + body


def route(table: int, dst_len: int, proto: int, attrs: bytes = b"") -> bytes:
    return struct.pack("=BBBBBBBBI", 2, dst_len, 0, 0, table if table < 256 else 252, proto, 0, 1, 0) + attrs


def table_attr(table: int) -> bytes:
    return struct.pack("=HHI", 8, 15, table)


def test_link_and_address_changes_wake_the_daemon() -> None:
    link = classify(message(16, struct.pack("=BxHiII", 0, 1, 7, 0, 0)), OUR_PORT)
    assert link is not None and (link.what, link.change, link.ifindex) == ("link", "new", 7)
    addr = classify(message(21, struct.pack("=BBBBI", 2, 24, 0, 0, 7)), OUR_PORT)
    assert addr is not None and (addr.what, addr.change, addr.ifindex) == ("address", "del", 7)


def test_echoes_of_our_own_writes_are_ignored() -> None:
    assert classify(message(24, route(254, 0, 4), portid=OUR_PORT), OUR_PORT) is None
    assert classify(message(25, route(254, 0, 4), portid=0), OUR_PORT) is not None  # the kernel's own


def test_only_main_defaults_and_our_routes_matter() -> None:
    assert classify(message(24, route(254, 0, 16)), OUR_PORT) is not None  # a manager's gateway
    assert classify(message(24, route(254, 24, 2)), OUR_PORT) is None  # a connected prefix
    assert classify(message(24, route(255, 32, 2)), OUR_PORT) is None  # the local table
    ours = route(TABLE_BALANCE, 0, RTPROT_WANHOOKS, table_attr(TABLE_BALANCE))
    assert classify(message(25, ours), OUR_PORT) is not None  # ours, deleted by the kernel


def test_only_our_nexthops_matter() -> None:
    assert classify(message(105, struct.pack("=BBBBI", 2, 0, RTPROT_WANHOOKS, 0, 0)), OUR_PORT) is not None
    assert classify(message(105, struct.pack("=BBBBI", 2, 0, 4, 0, 0)), OUR_PORT) is None


def test_truncated_messages_are_noise_not_crashes() -> None:
    for cut in range(16, 28):
        classify(message(24, route(254, 0, 16))[:cut], OUR_PORT)
