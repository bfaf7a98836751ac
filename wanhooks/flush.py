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

import logging
import socket
from collections.abc import Iterable

from pyroute2.conntrack import AsyncConntrack
from pyroute2.netlink.nfnetlink.nfctsocket import NFCTAttrTuple

from .model import IPAddress

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
