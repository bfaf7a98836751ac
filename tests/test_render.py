"""Kernel objects as the ip commands that make or remove them (reconcile/render.py): what
`wanhooks plan` prints and every log line about a change says."""

from __future__ import annotations

import ipaddress

from wanhooks import constants as c
from wanhooks.model import Action, Nexthop, NexthopGroup, Op, PathHop, Route, Rule
from wanhooks.reconcile.render import op_text, route_text, rule_text

NAMES = {11: "w1", 12: "w2"}
P = c.RTPROT_WANHOOKS


def test_rules_read_as_ip_rule_commands() -> None:
    src = Rule(4, c.PRIO_LINK_SOURCE, 2000000011, src=ipaddress.ip_network("100.64.1.2/32"))
    assert (
        rule_text(src)
        == f"ip -4 rule add pref {c.PRIO_LINK_SOURCE} from 100.64.1.2 lookup 2000000011 proto {P}"
    )
    pin = Rule(
        6,
        500,
        0,
        dst=ipaddress.ip_network("2001:db8::/32"),
        ip_proto=17,
        dport=(5060, 5061),
        unreachable=True,
    )
    assert (
        rule_text(pin)
        == "ip -6 rule add pref 500 from all to 2001:db8::/32 ipproto udp dport 5060-5061 unreachable"
        f" proto {P}"
    )
    sticky = Rule(4, 600, 254, fwmark=0x1000000, fwmask=0xFF000000, suppress_prefixlength=0)
    assert "fwmark 0x1000000/0xff000000 lookup main suppress_prefixlength 0" in rule_text(sticky)


def test_routes_name_their_devices_and_hops() -> None:
    default = ipaddress.ip_network("0.0.0.0/0")
    legacy = Route(4, 2000000000, default, metric=10, multipath=(
        PathHop(11, ipaddress.ip_address("100.64.1.1"), 1), PathHop(99, None, 2, onlink=True),
    ))  # fmt: skip
    assert route_text(legacy, NAMES) == (
        "ip -4 route replace default nexthop via 100.64.1.1 dev w1 weight 1 nexthop dev if99 weight 2 onlink"
        f" table 2000000000 metric 10 proto {P}"
    )


def test_an_op_says_what_it_does_and_a_delete_only_what_identifies() -> None:
    hop = Nexthop(1000011, 4, 11, ipaddress.ip_address("100.64.1.1"))
    group = NexthopGroup(
        2000000001, 4, ((1000011, 1), (1000012, 3)), buckets=128, idle_timer=1, unbalanced_timer=1
    )
    assert (
        op_text(Op(Action.ADD, hop), NAMES)
        == f"+ ip -4 nexthop replace id 1000011 via 100.64.1.1 dev w1 proto {P}"
    )
    assert op_text(Op(Action.REPLACE, group), NAMES) == (
        f"~ ip nexthop replace id 2000000001 group 1000011/1000012,3 type resilient buckets 128"
        f" idle_timer 1 unbalanced_timer 1 proto {P}"
    )
    assert op_text(Op(Action.DELETE, group), NAMES) == "- ip nexthop del id 2000000001"
    route = Route(6, 2000000012, ipaddress.ip_network("::/0"), metric=1024, oif=12)
    assert (
        op_text(Op(Action.DELETE, route), NAMES)
        == f"- ip -6 route del default table 2000000012 metric 1024 proto {P}"
    )
