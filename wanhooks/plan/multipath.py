"""A default route over one or more hops, written the way the kernel stores it back.

Used where no nexthop objects are involved: the legacy balance route and the
tables of pinned tiers.  A one-hop multipath route is stored by the kernel as
a plain route, so it is planned as one (else every dump would differ from
the plan and every round would rewrite it).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from .. import constants as c
from ..model import PathHop, Route

_DEFAULT = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}
_METRIC = {4: c.METRIC_V4, 6: c.METRIC_V6}


def default_route(family: int, table: int, hops: Sequence[PathHop]) -> Route:
    """The default route of `table` over `hops` (at least one), weighted."""
    dst, metric = _DEFAULT[family], _METRIC[family]
    if len(hops) == 1:
        hop = hops[0]
        return Route(
            family=family,
            table=table,
            dst=dst,
            metric=metric,
            oif=hop.oif,
            gateway=hop.gateway,
            onlink=hop.onlink,
        )
    return Route(family=family, table=table, dst=dst, metric=metric, multipath=tuple(sorted(hops)))
