"""`wanhooks status`: what the user needs at a glance, from the kernel and the plan.

The JSON document is versioned (`schema`); README.md documents its fields.
"""

from __future__ import annotations

import time
from typing import Any

from .. import constants as c
from ..model import Config, Desired, GroupKind, LinkPlan, Observed, Op, Owned, Route
from ..plan.names import printable_line
from ..plan.planner import match_entry
from ..plan.verdicts import HealthState, Out
from ..reconcile.render import PROTO_NAMES, route_text
from ..router.pins import pin_families

SCHEMA_VERSION = 2


def _balance_members(owned: Owned, family: int) -> dict[int, int]:
    """ifindex -> weight of the links the kernel's balance route really uses now."""
    route = _balance_route(owned, family)
    if route is None:
        return {}
    if route.multipath:
        return {hop.oif: hop.weight for hop in route.multipath}
    if route.oif is not None:
        return {route.oif: 1}
    groups = {g.id: g for g in owned.groups}
    nexthops = {n.id: n for n in owned.nexthops}
    group = groups.get(route.nhid or -1)
    if group is None:
        return {}
    return {nexthops[i].oif: w for i, w in group.members if i in nexthops}


def _balance_route(owned: Owned, family: int) -> Route | None:
    return next(
        (
            r
            for r in owned.routes
            if r.family == family and r.table == c.TABLE_BALANCE and r.dst.prefixlen == 0
        ),
        None,
    )


def link_state(link: LinkPlan, in_balance: dict[int, bool]) -> str:
    """One word or two for a link, most telling first: active (both families, or one),
    probing (new: no answer yet), recovering (answering again, in its hold-down), failed
    (its probes), standby (a lower tier), disabled or draining (the admin), pending (wanted
    but not in the kernel yet: apply not run), excluded (why says why)."""
    fams = [f for f in (4, 6) if in_balance.get(f)]
    if fams == [4, 6]:
        return "active"
    if fams:
        return f"active IPv{fams[0]} only"
    if any(link.eligible.values()):
        return "pending"
    reasons = [r for r in (link.reasons[4], link.reasons[6]) if r is not None]
    health = {r.health_state for r in reasons if r.out is Out.HEALTH}
    outs = {r.out for r in reasons}
    for found, state in (
        (HealthState.PROBING in health, "probing"),
        (HealthState.RECOVERING in health, "recovering"),
        (bool(health), "failed"),
        (Out.STANDBY in outs, f"standby tier {link.tier}"),
        (Out.DISABLED in outs, "disabled"),
        (Out.DRAINING in outs, "draining"),
        (Out.SHARED_ADDRESS_ABSENT in outs, "waiting"),  # for the pair's other router's address
    ):
        if found:
            return state
    return "excluded"


def why_not(link: LinkPlan) -> str | None:
    """Why a family is not balanced, in one phrase (both families' when they differ)."""
    reasons = {f: str(r) for f in (4, 6) if (r := link.reasons[f]) is not None}
    if not reasons:
        return None
    if len(set(reasons.values())) == 1:
        return next(iter(reasons.values()))
    return "; ".join(f"IPv{f}: {why}" for f, why in reasons.items())


# a link's reason code (each family's "out") when it waits for a pair's shared address
WAITING = Out.SHARED_ADDRESS_ABSENT.name.lower()


def status_json(
    config: Config,
    observed: Observed,
    desired: Desired,
    owned: Owned,
    kind: GroupKind,
    pending: list[Op],
    *,
    daemon_running: bool | None = None,
    cannot_see: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The status document.  daemon_running: True, False, or None when this view cannot tell
    (the daemon's own document says so by its `daemon` section); cannot_see: what a view from
    the kernel alone lacks while a daemon may hold it ({"what": [...], "why": "..."})."""
    names = {link.index: link.name for link in observed.links}
    now = time.monotonic()
    live = {f: _balance_members(owned, f) for f in (4, 6)}
    # what each link's weight asks for now: its part of the weights in the kernel's balance
    total_weight = {f: sum(live[f].values()) for f in (4, 6)}
    links = []
    for link in desired.links:
        entry: dict[str, Any] = {
            "name": link.name,
            "index": link.index,
            "state": link_state(link, {f: link.index in live[f] for f in (4, 6)}),
            "why": why_not(link),
            "since_s": None,  # the daemon knows: how long the link has been in this state
            "since_start": None,  # the daemon's: true when so since it started (maybe longer)
            "weight": link.weight,
            "auto_weight": link.auto_weight,
            "capacity": None,  # the daemon's, for weight: auto: the estimate, its evidence, why
            "weight_share": {
                f"ipv{f}": round(live[f].get(link.index, 0) / total_weight[f], 4) if total_weight[f] else 0.0
                for f in (4, 6)
            },
            "traffic": None,  # the daemon's: this link's share of the last minute's bytes
            "tier": link.tier,
            "table": link.table,
            "config_line": link.config_line,
            "delegated": _delegated(config, observed, link.name, now),
        }
        for f in (4, 6):
            gateway = link.gateways[f]
            entry[f"ipv{f}"] = {
                "eligible": link.eligible[f],
                "reason": str(reason) if (reason := link.reasons[f]) is not None else None,
                "out": reason.out.name.lower() if reason is not None else None,  # the reason's code
                "gateway": str(gateway) if gateway is not None else None,
                "addresses": [str(a) for a in link.addresses[f]],
                "in_balance": link.index in live[f],
            }
        links.append(entry)
    balance: dict[str, Any] = {}
    for f in (4, 6):
        route = _balance_route(owned, f)
        balance[f"ipv{f}"] = {
            "route": route_text(route, names) if route else None,
            "members": [{"link": names.get(i, str(i)), "weight": w} for i, w in sorted(live[f].items())],
        }
    return {
        "schema": SCHEMA_VERSION,
        "config": config.path,
        "mode": config.mode.value,
        "daemon_running": daemon_running,
        "cannot_see": cannot_see,
        "balance_mode": config.balance.value,
        "group_kind": kind.value,
        "links": links,
        "balance": balance,
        "firewall": {
            "nat": [link.name for link in desired.firewall.links if link.nat],
            "nat66": [link.name for link in desired.firewall.links if link.nat66],
            "sticky": [link.name for link in desired.firewall.links if link.mark],
        },
        "pins": _pins(config, desired, names),
        "in_sync": not pending,
        "pending_changes": len(pending),
        "notes": list(desired.notes),
    }


def _delegated(config: Config, observed: Observed, name: str, now: float) -> list[dict[str, Any]]:
    """A link's delegated prefixes: the config's (lifetimes null: for as long as it says), then
    those learned (plan/delegations.py), each with where it came from and its lifetimes left."""
    entry = match_entry(config, name)
    given = [
        {
            "prefix": str(p),
            "source": "config",
            "lan": None,
            "preferred_s": None,
            "valid_s": None,
            "present": True,
        }
        for p in (entry.delegated if entry is not None else ())
    ]
    learned = [
        {
            "prefix": str(d.prefix),
            "source": d.source.value,
            "lan": d.lan,
            "preferred_s": round(max(0.0, d.preferred_until - now), 1),
            "valid_s": round(max(0.0, d.valid_until - now), 1),
            "present": d.present,  # false: gone from the LAN, kept while hosts' addresses are valid
        }
        for d in sorted(observed.delegations, key=lambda d: (not d.present, d.prefix))
        if d.link == name
    ]
    return given + learned


def _pins(config: Config, desired: Desired, names: dict[int, str]) -> list[dict[str, Any]]:
    """Each pin and where its traffic goes now, per family: a link, a tier, "refused" or "balance"."""
    out = []
    for position, pin in enumerate(config.pins):
        rules = [r for r in desired.rules if r.priority == c.PRIO_PIN_FIRST + position]
        now: dict[str, str] = {}
        for f in pin_families(pin):
            rule = next((r for r in rules if r.family == f), None)
            if rule is None:
                now[f"ipv{f}"] = "balance"
            elif rule.unreachable:
                now[f"ipv{f}"] = "refused"
            elif pin.tier is not None:
                now[f"ipv{f}"] = f"tier {pin.tier}"
            else:
                now[f"ipv{f}"] = names.get(rule.table - c.TABLE_BASE, str(rule.table))
        out.append(
            {
                "line": pin.line,
                "to": [str(p) for p in pin.to],
                "from": [str(p) for p in pin.sources],
                "proto": pin.proto,
                "ports": list(pin.ports) if pin.ports else None,
                "target": pin.link if pin.link is not None else f"tier {pin.tier}",
                "when_down": "fail" if pin.fail_closed else "fallback",
                "now": now,
            }
        )
    return out


def status_text(
    config: Config,
    observed: Observed,
    desired: Desired,
    owned: Owned,
    kind: GroupKind,
    pending: list[Op],
    *,
    daemon_running: bool | None = None,
    cannot_see: dict[str, Any] | None = None,
) -> str:
    doc = status_json(
        config, observed, desired, owned, kind, pending, daemon_running=daemon_running, cannot_see=cannot_see
    )
    return render_status(doc)


def _duration(seconds: float) -> str:
    """A short age: 42s, 7m, 3h, 2d."""
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size:.0f}{unit}"
    return f"{seconds:.0f}s"


def _health_cell(link: dict[str, Any]) -> str:
    """e.g. "v4 up 12ms 0%" per probed family: state, round trip, loss."""
    cells = []
    for f in (4, 6):
        h = link[f"ipv{f}"].get("health")
        if not h:
            continue
        rtt = f" {h['rtt_ms']:.0f}ms" if h.get("rtt_ms") is not None else ""
        loss = f" {100 * h['loss']:.0f}%" if h.get("loss") is not None else ""
        checking = " (checking)" if h.get("suspected") else ""
        cells.append(f"v{f} {h['state']}{checking}{rtt}{loss}{_proof(h)}")
    return ", ".join(cells) or "-"


def _proof(h: dict[str, Any]) -> str:
    """What shows the link alive: " heard" (its traffic), or what its probes cost a day."""
    if h.get("alive_by") == "passive":
        return " heard"
    per_day = h.get("probe_bytes_per_day")
    return f" probes {per_day / 1e6:.1f}MB/d" if per_day is not None else ""


def _traffic_cell(link: dict[str, Any]) -> str:
    """e.g. "48% up 9.6 down 0.3 Mbit/s": its share of the window's bytes, and its rates."""
    t = link.get("traffic")
    if not t or t.get("share") is None:
        return "-"
    up, down = t["tx_bps"] / 1e6, t["rx_bps"] / 1e6
    return f"{100 * t['share']:.0f}% up {up:.1f} down {down:.1f} Mbit/s"


def _weight_cell(link: dict[str, Any]) -> str:
    """e.g. "2 (22%)": the weight and the part of the balance it asks for, in the family the
    link is balanced in (IPv4 first); a schema-1 document (an older daemon) has no share."""
    shares = link.get("weight_share")
    weight = "auto" if link.get("auto_weight") else str(link["weight"])
    if not isinstance(shares, dict):
        return weight
    family = next((f for f in (4, 6) if link[f"ipv{f}"]["in_balance"]), 4)
    return f"{weight} ({100 * shares[f'ipv{family}']:.0f}%)"


def _rate_text(direction: dict[str, Any]) -> str:
    if direction.get("bps") is None:
        return "unknown"
    age = direction.get("age_s")
    seen = f", {_duration(age)} ago" if age is not None else ""
    return f"{direction['bps'] / 1e6:.1f} Mbit/s ({direction['evidence']}{seen})"


def _capacity_lines(doc: dict[str, Any]) -> list[str]:
    """weight: auto: what each auto link's weight rests on, and the last changes."""
    lines = []
    for link in doc["links"]:
        cap = link.get("capacity")
        if not link.get("auto_weight") or not isinstance(cap, dict):
            continue
        rtt = ""
        if cap.get("baseline_rtt_ms") is not None:
            rtt = f"; round trip {cap['baseline_rtt_ms']:g} ms idle"
            if cap.get("delay_ms") is not None:
                rtt += f", +{cap['delay_ms']:g} ms now" + (" (queueing)" if cap.get("saturated") else "")
        lines.append(
            f"  {link['name']}: down {_rate_text(cap['down'])}, up {_rate_text(cap['up'])}{rtt}: {cap['why']}"
        )
    if not lines:
        return []
    changes = (doc.get("daemon") or {}).get("weight_changes") or []
    lines += [f"  weights changed {_duration(c['ago_s'])} ago: {c['why']}" for c in changes[-3:]]
    return ["auto weights, from each link's measured capacity (its fuller direction):", *lines]


def _since_cell(link: dict[str, Any]) -> str:
    if link.get("since_s") is None:
        return "-"
    return _duration(link["since_s"]) + ("+" if link.get("since_start") else "")


def _delegated_lines(doc: dict[str, Any]) -> list[str]:
    """IPv6 delegated to w1: 2001:db8:1:100::/64 on lan1 (networkd; preferred 12 s, valid 22 s)"""
    lines = []
    for link in doc["links"]:
        prefixes = link.get("delegated") or []
        if prefixes:
            lines.append(f"IPv6 delegated to {link['name']}: " + "; ".join(map(_prefix_text, prefixes)))
    return lines


def _prefix_text(p: dict[str, Any]) -> str:
    """One prefix of the document (which may come from a daemon of another version)."""
    if p["source"] == "config":
        return f"{p['prefix']} (config)"
    valid = "forever" if p["valid_s"] is None else _duration(p["valid_s"])
    if not p["present"]:
        return f"{p['prefix']} ({p['source']}; gone from {p['lan']}, kept for its hosts {valid})"
    preferred = "forever" if p["preferred_s"] is None else _duration(p["preferred_s"])
    return f"{p['prefix']} on {p['lan']} ({p['source']}; preferred {preferred}, valid {valid})"


def _pin_text(pin: dict[str, Any]) -> str:
    """What a pin selects, e.g. "udp port 5060-5061 from 192.168.1.50/32"."""
    parts = []
    if pin["proto"] is not None:
        parts.append(PROTO_NAMES.get(pin["proto"], str(pin["proto"])))
    if pin["ports"]:
        first, last = pin["ports"]
        parts.append(f"port {first}" if first == last else f"port {first}-{last}")
    if pin["to"]:
        parts.append("to " + ",".join(pin["to"]))
    if pin["from"]:
        parts.append("from " + ",".join(pin["from"]))
    return " ".join(parts)


START_DAEMON = "start it: systemctl start wanhooks"


def _daemon_runs(doc: dict[str, Any]) -> bool | None:
    """Whether a daemon runs: its own document says so; else what the view could tell."""
    if doc.get("daemon"):
        return True
    running = doc.get("daemon_running")
    return running if isinstance(running, bool) else None


def _top_lines(doc: dict[str, Any]) -> list[str]:
    """The mode, whether the daemon runs, and what this view cannot see: before the table."""
    mode, runs, daemon = doc.get("mode"), _daemon_runs(doc), doc.get("daemon")
    pid = f" (pid {daemon['pid']})" if daemon and "pid" in daemon else ""
    lines = []
    if mode == "daemon":
        lines.append(
            {
                True: f"mode: daemon; the daemon runs{pid}",
                False: f"mode: daemon; daemon not running: hooks do nothing; {START_DAEMON}",
                None: "mode: daemon; whether the daemon runs cannot be seen from here",
            }[runs]
        )
    elif mode == "hooks-only":
        also = f"; a daemon runs all the same{pid} and owns the routing" if runs else ""
        lines.append(f"mode: hooks-only: no daemon, the dispatcher hooks apply each change{also}")
    elif mode is not None:
        lines.append(f"mode: {mode}")
    blind = doc.get("cannot_see")
    if isinstance(blind, dict) and isinstance(blind.get("what"), list) and blind["what"]:
        lines.append(f"this view cannot see {', '.join(map(str, blind['what']))}: {blind.get('why', '')}")
    return [*lines, ""] if lines else []


def _out_of_sync_line(doc: dict[str, Any]) -> str:
    """The kernel differs from the plan: who will fix it.  Never `apply` beside a daemon."""
    changes = f"kernel differs from the plan by {doc['pending_changes']} change(s)"
    runs = _daemon_runs(doc)
    if runs:
        return f"{changes}: the daemon makes them at its next round"
    if runs is None:
        return f"{changes}: a daemon, if one runs, makes them (root's `wanhooks status` tells more)"
    if doc.get("mode") == "daemon":
        return f"{changes}: the daemon is not running ({START_DAEMON}); or run `wanhooks apply` once"
    return f"{changes}: run `wanhooks apply`"


def render_status(doc: dict[str, Any]) -> str:
    """The status document as a table for people (the daemon sends the document)."""
    top = _top_lines(doc)
    probed = any(link[f"ipv{f}"].get("health") for link in doc["links"] for f in (4, 6))
    windows = [link["traffic"]["window_s"] for link in doc["links"] if link.get("traffic")]
    timed = any(link.get("since_s") is not None for link in doc["links"])
    header = ["LINK", "STATE", "WEIGHT"]
    header += [f"CARRIED (last {_duration(max(windows))})"] if windows else []
    header += ["HEALTH"] if probed else []
    header += ["GATEWAY"]
    header += ["SINCE"] if timed else []
    header += ["WHY NOT"]
    rows = [tuple(header)]
    for link in doc["links"]:
        gateways = [link[f"ipv{f}"]["gateway"] for f in (4, 6) if link[f"ipv{f}"]["gateway"]]
        row = [link["name"], link["state"], _weight_cell(link)]
        row += [_traffic_cell(link)] if windows else []
        row += [_health_cell(link)] if probed else []
        row += [", ".join(gateways) or "-"]
        row += [_since_cell(link)] if timed else []
        row += [link.get("why") or ""]
        rows.append(tuple(row))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = top + ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    if not doc["links"]:
        lines.append("(no interface matches the config)")
    lines.append("")
    for f in (4, 6):
        members = doc["balance"][f"ipv{f}"]["members"]
        if members:
            total = sum(m["weight"] for m in members)
            split = " + ".join(
                f"{m['link']} x{m['weight']} ({100 * m['weight'] / total:.0f}%)" for m in members
            )
            lines.append(f"IPv{f} default: {split}  [{doc['group_kind']} group, {doc['balance_mode']}]")
        else:
            lines.append(f"IPv{f} default: none -- the main table's default route is used")
    firewall = doc.get("firewall") or {}
    if firewall.get("nat") or firewall.get("nat66") or firewall.get("sticky"):
        parts = [f"NAT out of {', '.join(firewall['nat'])}"] if firewall["nat"] else []
        parts += [f"NAT66 out of {', '.join(firewall['nat66'])}"] if firewall["nat66"] else []
        parts += ["sticky connections"] if firewall["sticky"] else []
        lines.append("nftables (inet wanhooks): " + "; ".join(parts))
    lines += _capacity_lines(doc)
    lines += _delegated_lines(doc)
    for pin in doc.get("pins", []):
        where = ", ".join(f"{fam}: {goes}" for fam, goes in pin["now"].items())
        lines.append(f"pin (line {pin['line']}) {_pin_text(pin)} -> {pin['target']}: now {where}")
    for note in doc["notes"]:
        lines.append(f"note: {note}")
    if doc.get("schema") != SCHEMA_VERSION:
        lines.append(
            f"note: the daemon answers in status schema {doc.get('schema')}, this wanhooks reads "
            f"{SCHEMA_VERSION}: restart the daemon (an upgrade) to see everything"
        )
    daemon = doc.get("daemon")
    if daemon:
        extra = [f"daemon pid {daemon['pid']}, {daemon['rounds']} rounds"]
        extra += [f"disabled: {', '.join(daemon['disabled'])}"] if daemon["disabled"] else []
        extra += [f"draining: {', '.join(daemon['draining'])}"] if daemon["draining"] else []
        extra += (
            [f"{len(daemon['held_gateways'])} gateway(s) held over a rebind"]
            if daemon["held_gateways"]
            else []
        )
        lines.append("; ".join(extra))
    roles = doc.get("vrrp") or []
    if roles:  # keepalived's word (wanhooks vrrp notify)
        said = ", ".join(f"{r['state']} in {r['instance']} ({_duration(r['since_s'])})" for r in roles)
        waiting = [
            link["name"]
            for link in doc["links"]
            if any(link[f"ipv{f}"].get("out") == WAITING for f in (4, 6))
        ]
        lines.append(
            f"vrrp: this router is {said}"
            + (f"; waiting for their shared address: {', '.join(waiting)}" if waiting else "")
        )
    if not doc["in_sync"]:
        lines.append(_out_of_sync_line(doc))
    # The document may come from a daemon (of another version) and hold text from outside
    # (names, reasons, notes): nothing in it may move the cursor or forge a line.
    return "\n".join(printable_line(line) for line in lines)
