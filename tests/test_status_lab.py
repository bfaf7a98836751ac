"""`status --json` from a running daemon, every field checked against the kernel and the faults
the test injected (root; a 6-link lab)."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import DaemonProc, Router, wait_for
from conftest import group_members as members

from wanhooks import constants as c
from wanhooks.lab import Lab, link_addrs
from wanhooks.plan.verdicts import Out

pytestmark = pytest.mark.kernel

Start = Callable[..., DaemonProc]

CONFIG = """\
links:
  - {interface: w1, gateway: [100.64.1.1, "fe80::1"], weight: 1}
  - {interface: w2, gateway: [100.64.2.1, "fe80::1"], weight: 3}
  - {interface: w3, gateway: [100.64.3.1, "fe80::1"]}              # its ISP goes silent
  - {interface: w4, gateway: [100.64.4.1, "fe80::1"]}              # its cable is pulled
  - {interface: w5, gateway: [100.64.5.1, "fe80::1"], tier: 2}     # the backup
  - {interface: w6, gateway: [100.64.6.1, "fe80::1"]}              # the admin disables it
nat: masquerade
sticky: true
pins:
  - {to: 198.51.100.7/32, link: w3}                    # falls back while w3 is down
  - {proto: udp, port: 5060, link: w5, when_down: fail}
health:
  targets: [203.0.113.10, "fd00:ffff::10"]
  interval: 0.1
  loss_window: 10
  hold_down: 1
"""
NAMES = ("w1", "w2", "w3", "w4", "w5", "w6")
STATES = {
    "w1": "active",
    "w2": "active",
    "w3": "failed",
    "w4": "excluded",
    "w5": "standby tier 2",
    "w6": "disabled",
}
WEIGHTS = {"w1": 1, "w2": 3, "w3": 1, "w4": 1, "w5": 1, "w6": 1}
TARGETS = {4: "203.0.113.10", 6: "fd00:ffff::10"}


@pytest.fixture
def lab3() -> Iterator[Lab]:  # this module's router has six links, and leaves NAT to wanhooks
    with Lab(6, router_nat=False) as lab:
        yield lab


def flatten(node: Any, path: str = "") -> dict[str, Any]:
    """Every leaf of the document by path; links are keyed by name, other lists by position,
    and a list of plain values (addresses, targets) is one leaf."""
    if isinstance(node, dict) and node:
        out: dict[str, Any] = {}
        for key, value in node.items():
            out.update(flatten(value, f"{path}.{key}" if path else key))
        return out
    if isinstance(node, list) and node and isinstance(node[0], dict):
        out = {}
        for n, item in enumerate(node):
            out.update(flatten(item, f"{path}[{item.get('name', n)}]"))
        return out
    return {path: node}


class Fields:
    """Checks fields by path and remembers which: the test fails if any field went unchecked."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.leaves = flatten(doc)
        self.checked: set[str] = set()

    def __getitem__(self, path: str) -> Any:
        assert path in self.leaves, f"status --json has no {path}"
        self.checked.add(path)
        return self.leaves[path]

    def eq(self, path: str, want: object) -> None:
        assert self[path] == want, f"{path}: {self.leaves[path]!r}, want {want!r}"

    def that(self, path: str, ok: Callable[[Any], bool], what: str) -> None:
        assert ok(self[path]), f"{path}: {self.leaves[path]!r} is not {what}"

    def unchecked(self) -> list[str]:
        return sorted(set(self.leaves) - self.checked)


def c_counters(lab: Lab) -> dict[int, tuple[int, int]]:
    """(rx, tx) bytes of each ISP's end of its link: what the router's end sent and received."""
    out = {}
    for i in range(1, lab.links + 1):
        stats = lab.ip_json(lab.isp(i), "-s", "link", "show", "dev", "c")[0]["stats64"]
        out[i] = (stats["rx"]["bytes"], stats["tx"]["bytes"])
    return out


def kernel_view(lab: Lab) -> dict[str, Any]:
    """What the router's kernel holds, read with `ip` and `nft`: the test's own reading."""
    links = {link["ifname"]: link["ifindex"] for link in lab.ip_json(lab.router, "link", "show")}
    groups: dict[int, dict[str, int]] = {}
    kinds: dict[int, str] = {}
    nexthops = {n["id"]: n for n in lab.ip_json(lab.router, "nexthop", "show")}
    for family, gid in ((4, c.NH_GROUP_V4), (6, c.NH_GROUP_V6)):
        group = nexthops.get(gid, {"group": []})
        groups[family] = {nexthops[m["id"]]["dev"]: m.get("weight", 1) for m in group["group"]}
        kinds[family] = group.get("type", "mpath")
    return {
        "ifindex": links,
        "groups": groups,
        "kinds": kinds,
        "rules": {f: lab.ip_json(lab.router, f"-{f}", "rule", "show") for f in (4, 6)},
        "nft": lab.r(["nft", "list", "table", "inet", "wanhooks"]).stdout,
    }


def link_table_routes(lab: Lab, family: int, table: int) -> list[dict[str, Any]]:
    return list(lab.ip_json(lab.router, f"-{family}", "route", "show", "table", str(table)))


def global_addresses(lab: Lab, family: int, name: str) -> list[str]:
    doc = lab.ip_json(lab.router, f"-{family}", "addr", "show", "dev", name)
    return [a["local"] for link in doc for a in link["addr_info"] if a.get("scope") == "global"]


def test_status_json_every_field_against_the_kernel_and_the_faults(
    router: Router, daemon_factory: Start
) -> None:
    lab = router.lab
    config_lines = CONFIG.splitlines()
    router.write_config(CONFIG)
    isp_before = c_counters(lab)
    spawned = time.monotonic()
    daemon = daemon_factory()
    started = time.monotonic()
    wait_for(lambda: set(members(lab)) == {"w1", "w2", "w3", "w4", "w6"}, 10, "five links in the group")
    disabled = time.monotonic()
    router.wanhooks("link", "disable", "w6")
    lab.blackhole(3, True)
    lab.carrier_off(4)
    faulted = time.monotonic()
    wait_for(lambda: set(members(lab)) == {"w1", "w2"}, 10, "w1 and w2 alone in the group")
    # 20,000 new connections of 1,400 bytes each: 28 MB against a few kB/s of probes
    lab.send_udp_flows(lab.lan, None, 20000, size=1400)
    # loss counts whole seconds once their echoes' grace is over: let the silence show in it
    # (idle, w3 is found by its next heartbeat: up to ~3 s)
    time.sleep(max(0.0, faulted + 5.0 - time.monotonic()))
    logged = [int(n) for n in re.findall(r"^round (\d+):", daemon.text(), re.M)]
    asked = time.monotonic()
    doc = json.loads(router.wanhooks("status", "--json").stdout)
    answered = time.monotonic()
    isp_after = c_counters(lab)
    kernel = kernel_view(lab)
    f = Fields(doc)

    # --- the document ------------------------------------------------------------------
    f.eq("schema", 2)
    f.eq("config", str(router.config))
    f.eq("mode", "daemon")
    f.eq("daemon_running", True)
    f.eq("cannot_see", None)  # the daemon's own view: nothing missing
    f.eq("balance_mode", "per-connection")
    f.eq("group_kind", kernel["kinds"][4])
    f.eq("group_kind", "resilient")
    f.eq("in_sync", True)
    f.eq("pending_changes", 0)
    f.that(
        "notes",
        lambda n: len(n) == 1 and n[0].startswith("pin 1 (line 11), IPv4") and "w3: health" in n[0],
        "one note: pin 1 falls back while w3 is down",
    )
    for fam in (4, 6):
        route = next(r for r in link_table_routes(lab, fam, c.TABLE_BALANCE) if r["dst"] == "default")
        f.that(f"balance.ipv{fam}.route", lambda text, r=route: f"nhid {r['nhid']}" in text
               and f"table {c.TABLE_BALANCE}" in text, "the kernel's balance route")  # fmt: skip
        for n, (name, weight) in enumerate(sorted(kernel["groups"][fam].items())):
            f.eq(f"balance.ipv{fam}.members[{n}].link", name)
            f.eq(f"balance.ipv{fam}.members[{n}].weight", weight)
        assert len(doc["balance"][f"ipv{fam}"]["members"]) == len(kernel["groups"][fam]) == 2
    masqueraded = sorted(set(re.findall(r"oifname \"?(\w+)\"? meta nfproto ipv4 masquerade", kernel["nft"])))
    marked = sorted(set(re.findall(r"oifname \"?(\w+)\"? ct mark set", kernel["nft"])))
    f.eq("firewall.nat", masqueraded)
    f.eq("firewall.nat", list(NAMES))
    f.eq("firewall.sticky", marked)
    f.eq("firewall.sticky", list(NAMES))
    f.eq("firewall.nat66", [])
    assert "nfproto ipv6 masquerade" not in kernel["nft"]

    # pins: the first falls back (no rule at its priority), the second holds w5's table
    for fam in (4, 6):
        assert not [r for r in kernel["rules"][fam] if r.get("priority") == c.PRIO_PIN_FIRST]
    f.eq("pins[0].line", 1 + next(n for n, line in enumerate(config_lines) if "198.51.100.7" in line))
    f.eq("pins[0].to", ["198.51.100.7/32"])
    f.eq("pins[0].from", [])
    f.eq("pins[0].proto", None)
    f.eq("pins[0].ports", None)
    f.eq("pins[0].target", "w3")
    f.eq("pins[0].when_down", "fallback")
    f.eq("pins[0].now.ipv4", "balance")
    f.eq("pins[1].line", 1 + next(n for n, line in enumerate(config_lines) if "5060" in line))
    f.eq("pins[1].to", [])
    f.eq("pins[1].from", [])
    f.eq("pins[1].proto", 17)
    f.eq("pins[1].ports", [5060, 5060])
    f.eq("pins[1].target", "w5")
    f.eq("pins[1].when_down", "fail")
    w5_table = c.link_table(kernel["ifindex"]["w5"])
    for fam in (4, 6):
        rule = next(r for r in kernel["rules"][fam] if r.get("priority") == c.PRIO_PIN_FIRST + 1)
        assert rule["table"] == str(w5_table) and rule["ipproto"] == "udp" and rule["dport"] == 5060, rule
        f.eq(f"pins[1].now.ipv{fam}", "w5")

    # --- the daemon ------------------------------------------------------------------
    pid = daemon.proc.pid
    f.eq("daemon.pid", pid)
    f.that("daemon.rounds", lambda n: n >= max(logged), f"at least the {max(logged)} rounds it logged")
    f.that("daemon.events", lambda n: n >= doc["daemon"]["rounds"], "at least one event per round")
    with open(f"/proc/{pid}/status") as status:
        rss = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    f.that("daemon.rss_kib", lambda k: abs(k - rss) <= 0.2 * rss, f"near its VmRSS ({rss} kB)")
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    f.that("daemon.open_fds", lambda n: abs(n - fds) <= 3, f"near its {fds} open fds")
    # its tasks: at least the reconciler, the netlink watch, the traffic sampler, the manager
    # watch and one prober per probed family of the four links up (w1, w2, w5, w6)
    f.that("daemon.tasks", lambda n: n >= 4 + 8, "a task per job and per prober")
    f.eq("daemon.disabled", ["w6"])
    f.eq("daemon.draining", [])
    f.eq("daemon.held_gateways", [])
    f.eq("daemon.weight_changes", [])  # every weight is fixed: nothing measured moves them
    f.eq("vrrp", [])  # no keepalived has said anything

    # --- each link ------------------------------------------------------------------------
    balanced_weight = sum(WEIGHTS[n] for n in ("w1", "w2"))
    for name in NAMES:
        i = int(name[1])
        key = f"links[{name}]"
        link = doc["links"][NAMES.index(name)]
        index = kernel["ifindex"][name]
        table = c.link_table(index)
        state = STATES[name]
        f.eq(f"{key}.name", name)
        f.eq(f"{key}.index", index)
        f.eq(f"{key}.state", state)
        f.eq(f"{key}.weight", WEIGHTS[name])
        f.eq(f"{key}.auto_weight", False)
        f.eq(f"{key}.capacity", None)  # weight: auto's estimate: none for a fixed weight
        f.eq(f"{key}.tier", 2 if name == "w5" else 1)
        f.eq(f"{key}.table", table)
        f.eq(f"{key}.delegated", [])  # none given nor learned here (test_delegation_lab.py: some)
        f.eq(
            f"{key}.config_line",
            1 + next(n for n, line in enumerate(config_lines) if f"interface: {name}," in line),
        )
        active = state == "active"
        for fam in (4, 6):  # both families balance w1 and w2 alone
            f.eq(f"{key}.weight_share.ipv{fam}", WEIGHTS[name] / balanced_weight if active else 0.0)
        # how long in this state: the faulted ones since the faults, the others since start-up
        if state in ("failed", "excluded", "disabled"):
            fault = disabled if state == "disabled" else faulted
            f.that(f"{key}.since_s", lambda s, t=fault: 0 <= s <= answered - t, "since the fault")
            f.eq(f"{key}.since_start", False)
        else:
            f.that(f"{key}.since_s", lambda s: asked - faulted <= s <= answered - spawned, "since start-up")
            # the daemon saw it become so: it started untrusted (probing), then answered
            f.eq(f"{key}.since_start", False)
        why = {
            "active": None,
            "failed": "IPv4: health: down: no reply from 203.0.113.10",
            "excluded": "no carrier",
            "standby tier 2": "standby (tier 2): a tier-1 link is up",
            "disabled": "disabled by the admin",
        }[state]
        f.that(f"{key}.why", lambda w, why=why: w == why if why is None else w.startswith(why), repr(why))

        # traffic: the share of the bytes, and the rates, against what each ISP counted
        share = WEIGHTS[name] / balanced_weight if active else 0.0
        f.that(f"{key}.traffic.share", lambda s, want=share: abs(s - want) <= 0.03, f"about {share:.2f}")
        # the first sample is taken as the daemon starts, before its first round
        f.that(
            f"{key}.traffic.window_s", lambda w: asked - started <= w <= answered - spawned, "its life so far"
        )
        window = link["traffic"]["window_s"]
        sent = isp_after[i][0] - isp_before[i][0]  # what reached the ISP: what the router sent
        received = isp_after[i][1] - isp_before[i][1]
        for field, counted in (("tx_bps", sent), ("rx_bps", received)):
            f.that(
                f"{key}.traffic.{field}",
                lambda bps, n=counted, w=window: (
                    abs(bps * w / 8 - n) <= 0.05 * n + 5_000
                ),  # the probes before its first sample
                f"{counted} bytes over the window",
            )

        for fam in (4, 6):
            fk = f"{key}.ipv{fam}"
            in_group = name in kernel["groups"][fam]
            f.eq(f"{fk}.eligible", active)
            f.eq(f"{fk}.in_balance", in_group)
            assert in_group == active
            f.that(
                f"{fk}.reason",
                lambda r, a=active, why=link["why"]: r is None if a else r in why,
                "None when active, else in the link's why",
            )
            f.that(
                f"{fk}.out",
                lambda o, a=active: o is None if a else o in {out.name.lower() for out in Out},
                "None when active, else the reason's code",
            )
            default = next(r for r in link_table_routes(lab, fam, table) if r["dst"] == "default")
            f.eq(f"{fk}.gateway", default["gateway"])
            f.eq(f"{fk}.gateway", link_addrs(i).gateway(fam) if fam == 4 else "fe80::1")
            f.eq(f"{fk}.addresses", global_addresses(lab, fam, name))
            rule = [
                r
                for r in kernel["rules"][fam]
                if r.get("priority") == c.PRIO_LINK_SOURCE and r.get("table") == str(table)
            ]
            assert [r["src"] for r in rule] == global_addresses(lab, fam, name), rule

            hk = f"{fk}.health"
            up = state in ("active", "standby tier 2", "disabled")
            ek = f"{fk}.evidence"  # packets of established connections from beyond, packets sent beyond
            f.that(f"{ek}.sent", lambda n: n > 0, "more than 0 (its probes at least)")
            f.that(
                f"{ek}.heard",
                lambda n, u=up, sent=f.leaves[f"{ek}.sent"]: n > 0 if u else 0 < n < sent,
                "more than 0 (its probes' answers); fewer than sent once its ISP went silent",
            )
            f.eq(f"{hk}.state", "up" if up else "down")
            f.eq(f"{hk}.kind", "icmp")
            f.eq(f"{hk}.targets", [TARGETS[fam]])
            f.eq(f"{hk}.loss_window_s", 10.0)
            f.eq(f"{hk}.suspected", False)
            f.that(f"{hk}.rtt_ms", lambda ms: 0 < ms < 50, "a veth's round trip (under 50 ms)")
            if up:
                f.eq(f"{hk}.loss", 0.0)
                f.that(f"{hk}.last_change", lambda t: t.startswith("answering for"), "answering")
                f.that(
                    f"{hk}.since_s", lambda s: asked - faulted <= s <= answered - spawned, "up since start-up"
                )
            else:
                f.that(f"{hk}.loss", lambda x: 0 < x <= 1, "some loss")
                f.that(
                    f"{hk}.last_change",
                    lambda t, target=TARGETS[fam]: t.startswith(f"no reply from {target} for 0.5 s of fast"),
                    "idle, a heartbeat unanswered: its target silent for 0.5 s of fast probing",
                )
                f.that(f"{hk}.since_s", lambda s: 0 <= s <= answered - faulted, "down since the fault")
            # every link is probed only where its traffic proves nothing: up, a heartbeat every 2 s
            # (w5, on its 5 MB budget, IPv6's bigger echoes less often); failed, resting as often
            f.eq(f"{hk}.pace", "heartbeat" if up else "resting")
            f.that(
                f"{hk}.interval_s",
                lambda s, budgeted=name == "w5" and fam == 6: s > 2.0 if budgeted else s == 2.0,
                "the heartbeat: 2 s (w5's IPv6 on its budget: more)",
            )
            f.eq(f"{hk}.alive_by", "probe")  # the LAN's datagrams had no answer to be heard
            f.eq(f"{hk}.set_aside", [])
            f.that(f"{hk}.probes_sent", lambda n: n > 0, "more than 0")
            f.that(
                f"{hk}.probe_bytes",
                lambda n, sent=f.leaves[f"{hk}.probes_sent"]: sent * 36 <= n <= sent * 2 * 56,
                "an echo (and its answer) per probe sent",
            )
            f.that(f"{hk}.probe_bytes_per_day", lambda n: n > 0, "more than 0")
            # the LAN's 20,000 datagrams went out by w1 and w2 and nothing answered them
            unanswered = name in ("w1", "w2")
            f.that(
                f"{hk}.passive_suspicions",
                lambda n, u=unanswered: n >= 1 if u else n == 0,
                "suspected for the LAN's unanswered datagrams (w1, w2), else 0",
            )

    assert f.unchecked() == []

    # the same, for people: the faults read at a glance
    text = router.wanhooks("status").stdout
    assert text.splitlines()[:2] == [f"mode: daemon; the daemon runs (pid {pid})", ""], text
    header = text.splitlines()[2].split()
    assert header[:5] == ["LINK", "STATE", "WEIGHT", "CARRIED", "(last"] and header[6] == "HEALTH", text
    assert re.search(r"^w2\s+active\s+3 \(75%\)\s+7\d% up \d+\.\d down 0\.\d Mbit/s ", text, re.M), text
    assert re.search(r"^w3\s+failed\s+1 \(0%\)\s+0% up 0\.0 down 0\.0 Mbit/s\s+v4 down", text, re.M), text
    assert re.search(r"^w5\s+standby tier 2\s+.*\d+s\s+standby \(tier 2\)", text, re.M), text

    # a restarted daemon trusts the kernel's group: w1 and w2 are active at its first round,
    # and it cannot know since when -- "since_start", and a "+" after the time
    daemon.stop()
    daemon_factory()
    again = {link["name"]: link for link in json.loads(router.wanhooks("status", "--json").stdout)["links"]}
    assert [again[n]["since_start"] for n in ("w1", "w2")] == [True, True], again
    assert re.search(r"^w1\s+active\s+.*\d+s\+\s*$", router.wanhooks("status").stdout, re.M)
    assert "IPv4 default: w1 x1 (25%) + w2 x3 (75%)  [resilient group, per-connection]" in text
