"""Start-up trust: a restarted daemon does not take a link out while its first probes
are on their way (pure).

The links the kernel's balance group holds when the daemon starts were judged good
by the daemon before it; each starts `up` (trusted) rather than `probing`, and the
first answers -- or their absence -- judge it as usual.  Only the first round trusts
the kernel this way.
"""

from __future__ import annotations

from .. import constants as c
from ..model import Observed, Owned


def group_members(observed: Observed, owned: Owned) -> set[tuple[str, int]]:
    """(link name, family) for every link in the kernel's balance group now: a nexthop
    group's members, or a legacy multipath route's hops."""
    names = {link.index: link.name for link in observed.links}
    nexthops = {n.id: n for n in owned.nexthops}
    out = set()
    for group in owned.groups:
        for nhid, _weight in group.members:
            nh = nexthops.get(nhid)
            if nh is not None and nh.oif in names:
                out.add((names[nh.oif], nh.family))
    for route in owned.routes:
        if route.table != c.TABLE_BALANCE:
            continue
        for hop in route.multipath or ():
            if hop.oif in names:
                out.add((names[hop.oif], route.family))
        if route.oif in names:
            out.add((names[route.oif], route.family))
    return out
