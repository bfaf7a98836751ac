"""Kernel objects as the `ip` command lines that would create them: for plan, apply and logs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from ..constants import RTPROT_WANHOOKS, TABLE_MAIN
from ..model import Action, Desired, KernelObject, Nexthop, NexthopGroup, Op, Route, Rule, Sysctl

Names = Mapping[int, str]


def _dev(names: Names, index: int | None) -> str:
    return names.get(index, f"if{index}") if index is not None else "?"


PROTO_NAMES = {1: "icmp", 6: "tcp", 17: "udp", 58: "ipv6-icmp", 132: "sctp"}


def rule_text(rule: Rule) -> str:
    parts = [f"pref {rule.priority}"]
    parts.append(
        f"from {rule.src.network_address if rule.src.prefixlen in (32, 128) else rule.src}"
        if rule.src is not None
        else "from all"
    )
    if rule.dst is not None:
        parts.append(f"to {rule.dst}")
    if rule.ip_proto is not None:
        parts.append(f"ipproto {PROTO_NAMES.get(rule.ip_proto, str(rule.ip_proto))}")
    if rule.dport is not None:
        first, last = rule.dport
        parts.append(f"dport {first}" if first == last else f"dport {first}-{last}")
    if rule.fwmark is not None:
        parts.append(f"fwmark {rule.fwmark:#x}/{rule.fwmask if rule.fwmask is not None else 0xFFFFFFFF:#x}")
    if rule.unreachable:
        parts.append("unreachable")
    else:
        parts.append("lookup main" if rule.table == TABLE_MAIN else f"lookup {rule.table}")
    if rule.suppress_prefixlength is not None:
        parts.append(f"suppress_prefixlength {rule.suppress_prefixlength}")
    return f"ip -{rule.family} rule add " + " ".join(parts) + f" proto {RTPROT_WANHOOKS}"


def route_text(route: Route, names: Names) -> str:
    dst = "default" if route.dst.prefixlen == 0 else str(route.dst)
    parts = [dst]
    if route.nhid is not None:
        parts.append(f"nhid {route.nhid}")
    elif route.multipath:
        for hop in route.multipath:
            via = f" via {hop.gateway}" if hop.gateway is not None else ""
            onlink = " onlink" if hop.onlink else ""
            parts.append(f"nexthop{via} dev {_dev(names, hop.oif)} weight {hop.weight}{onlink}")
    else:
        if route.gateway is not None:
            parts.append(f"via {route.gateway}")
        parts.append(f"dev {_dev(names, route.oif)}")
        if route.onlink:
            parts.append("onlink")
    if route.scope != "universe":
        parts.append(f"scope {route.scope}")
    if route.prefsrc is not None:
        parts.append(f"src {route.prefsrc}")
    parts.append(f"table {route.table} metric {route.metric} proto {RTPROT_WANHOOKS}")
    return f"ip -{route.family} route replace " + " ".join(parts)


def nexthop_text(obj: Nexthop | NexthopGroup, names: Names) -> str:
    if isinstance(obj, NexthopGroup):
        members = "/".join(f"{i},{w}" if w != 1 else str(i) for i, w in obj.members)
        text = f"ip nexthop replace id {obj.id} group {members}"
        if obj.resilient:
            text += (
                f" type resilient buckets {obj.buckets} idle_timer {obj.idle_timer}"
                f" unbalanced_timer {obj.unbalanced_timer}"
            )
        return text + f" proto {RTPROT_WANHOOKS}"
    via = f" via {obj.gateway}" if obj.gateway is not None else ""
    onlink = " onlink" if obj.onlink else ""
    return (
        f"ip -{obj.family} nexthop replace id {obj.id}{via} dev {_dev(names, obj.oif)}{onlink}"
        f" proto {RTPROT_WANHOOKS}"
    )


def object_text(obj: KernelObject, names: Names) -> str:
    if isinstance(obj, Rule):
        return rule_text(obj)
    if isinstance(obj, Route):
        return route_text(obj, names)
    return nexthop_text(obj, names)


def sysctl_text(sysctl: Sysctl) -> str:
    return f"sysctl -w {sysctl.path.replace('/', '.')}={sysctl.value}"


def op_text(op: Op, names: Names) -> str:
    mark = {Action.ADD: "+", Action.REPLACE: "~", Action.DELETE: "-"}[op.action]
    return f"{mark} {delete_text(op.obj) if op.action is Action.DELETE else object_text(op.obj, names)}"


def delete_text(obj: KernelObject) -> str:
    """The command that removes obj: only what identifies it."""
    if isinstance(obj, (Nexthop, NexthopGroup)):
        return f"ip nexthop del id {obj.id}"
    if isinstance(obj, Route):
        dst = "default" if obj.dst.prefixlen == 0 else str(obj.dst)
        return (
            f"ip -{obj.family} route del {dst} table {obj.table} metric {obj.metric} proto {RTPROT_WANHOOKS}"
        )
    return rule_text(obj).replace(" rule add ", " rule del ", 1)


def desired_lines(desired: Desired, names: Names) -> list[str]:
    """Desired as the commands that would build it, in the order the reconciler adds things."""
    lines = [sysctl_text(s) for s in sorted(desired.sysctls)]
    lines += [nexthop_text(n, names) for n in sorted(desired.nexthops)]
    lines += [nexthop_text(g, names) for g in sorted(desired.groups)]
    lines += [route_text(r, names) for r in _route_order(desired.routes)]
    lines += [rule_text(r) for r in sorted(desired.rules, key=lambda r: (r.family, r.priority, str(r.src)))]
    return lines


def _route_order(routes: Iterable[Route]) -> list[Route]:
    return sorted(routes, key=lambda r: (r.family, r.table, r.dst.prefixlen, str(r.dst)))
