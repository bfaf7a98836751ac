"""kernel/mirror.py: how each notification changes the mirror, fed messages encoded as the
kernel sends them (no root; tests/test_mirror_lab.py checks it against the real kernel)."""

from __future__ import annotations

import ipaddress

from pyroute2.netlink import nlmsg

from wanhooks import constants as c
from wanhooks.kernel import codec, wire
from wanhooks.kernel.messages import RTM_DELNEXTHOP, RTM_NEWNEXTHOP
from wanhooks.kernel.mirror import Mirror
from wanhooks.kernel.netlink import LAYOUTS, RTM_DELROUTE, RTM_NEWROUTE, RTM_NEWRULE, NetlinkSocket
from wanhooks.model import KernelFeatures, MainDefault, Nexthop, NexthopGroup, PolicyDefault, Route, Rule

GW1, GW2 = ipaddress.ip_address("100.64.1.1"), ipaddress.ip_address("100.64.2.1")
DEFAULT = ipaddress.ip_network("0.0.0.0/0")
FEATURES = KernelFeatures()


def message(msg: nlmsg, kind: int) -> wire.Message:
    raw = NetlinkSocket._encode(msg, kind, 0, 1)
    return wire.parse(kind, LAYOUTS[kind], raw)


def owned_route(table: int = c.link_table(2), **kw: object) -> Route:
    return Route(family=4, table=table, dst=DEFAULT, **kw)  # type: ignore[arg-type]


def test_an_owned_route_notified_is_held_until_its_deletion_is() -> None:
    mirror = Mirror()
    route = owned_route(oif=2, gateway=GW1)
    mirror.take(message(codec.route_msg(route), RTM_NEWROUTE))
    owned = mirror.owned()
    assert owned.routes == {route}
    assert mirror.owned() is owned  # nothing changed: the same snapshot, no rebuild
    assert not mirror.dirty  # an owned route's message is the whole truth
    mirror.take(message(codec.route_msg(route), RTM_DELROUTE))
    assert mirror.owned().routes == frozenset()


def test_an_owned_nexthop_deleted_leaves_its_groups_and_routes_to_be_read_again() -> None:
    """The kernel drops a deleted nexthop from its groups and deletes IPv4 routes through it
    without a word: the mirror marks them for a filtered read."""
    mirror = Mirror()
    nh = Nexthop(id=c.NH_LINK_V4_BASE + 2, family=4, oif=2, gateway=GW1)
    group = NexthopGroup(id=c.NH_GROUP_V4, family=4, members=((nh.id, 1),), resilient=False)
    mirror.take(message(codec.nexthop_msg(nh), RTM_NEWNEXTHOP))
    mirror.take(message(codec.group_msg(group), RTM_NEWNEXTHOP))
    through_group = owned_route(table=c.TABLE_BALANCE, nhid=group.id)
    mirror.take(message(codec.route_msg(through_group), RTM_NEWROUTE))
    assert mirror.owned().groups == {group} and mirror.owned().nexthops == {nh}
    mirror.take(message(codec.id_msg(nh.id), RTM_DELNEXTHOP))
    assert mirror.owned().nexthops == frozenset()
    assert mirror.dirty.nexthops_gone == {nh.id}
    assert mirror.tables_through(set(), mirror.dirty.nexthops_gone) == [(4, c.TABLE_BALANCE)]


def test_a_default_replaced_in_main_marks_the_device_it_replaced_too() -> None:
    """`ip route replace default ... metric 500` names only the new route's device."""
    mirror = Mirror()
    mirror.replace_main_defaults(4, None, [MainDefault(4, oif=2, gateway=GW1, metric=500)])
    replacing = Route(family=4, table=c.TABLE_MAIN, dst=DEFAULT, metric=500, oif=3, gateway=GW2)
    msg = codec.route_msg(replacing)
    msg["proto"] = 3  # another program's (boot), not ours
    mirror.take(message(msg, RTM_NEWROUTE))
    assert mirror.dirty.main == {(4, 2), (4, 3)}
    assert mirror.owned().routes == frozenset()  # not ours: not held as owned


def test_another_programs_catch_all_rule_to_a_table_with_a_default_is_a_policy_default() -> None:
    mirror = Mirror()
    tunnel = Rule(family=4, priority=900, table=51820)
    msg = codec.rule_msg(tunnel)
    msg["attrs"] = [(k, v) for k, v in msg["attrs"] if k != "FRA_PROTOCOL"]
    mirror.take(message(msg, RTM_NEWRULE))
    assert mirror.policy_tables() == [(4, 51820)]
    assert mirror.observed(FEATURES).policy_defaults == ()  # whether it holds a default: unknown yet
    mirror.set_has_default((4, 51820), True)
    assert mirror.observed(FEATURES).policy_defaults == (PolicyDefault(4, 900, 51820),)
    assert mirror.owned().rules == frozenset()


def test_an_owned_route_the_kernel_deleted_has_its_link_read_again_but_not_our_own_deletion() -> None:
    """A carrier loss deletes a link's IPv6 routes through its nexthops at once and tells of
    them; the link's own message follows up to a second later.  The deletion is the sign:
    the link is read again before the round plans on a stale carrier."""
    mirror = Mirror()
    route = owned_route(oif=2, gateway=GW1)
    mirror.take(message(codec.route_msg(route), RTM_NEWROUTE), ours=True)
    mirror.take(message(codec.route_msg(route), RTM_DELROUTE), ours=True)
    assert mirror.dirty.reread == set()  # our own deletion: nothing went behind our back
    mirror.take(message(codec.route_msg(route), RTM_NEWROUTE), ours=True)
    mirror.take(message(codec.route_msg(route), RTM_DELROUTE))
    assert mirror.dirty.reread == {2}


def test_a_refused_group_names_the_links_of_its_missing_members_only() -> None:
    mirror = Mirror()
    present = Nexthop(id=c.link_nexthop_id(4, 2), family=4, oif=2, gateway=GW1)
    mirror.take(message(codec.nexthop_msg(present), RTM_NEWNEXTHOP))
    members = ((present.id, 1), (c.link_nexthop_id(4, 7), 1))  # link 7's nexthop went with its carrier
    group = NexthopGroup(id=c.NH_GROUP_V4, family=4, members=members, resilient=False)
    assert mirror.devices_of(group) == {7}
    assert mirror.devices_of(present) == {2}
