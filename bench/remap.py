"""Flow remap: how many existing flows change link when a link leaves the balance, and when it returns.

    python bench/remap.py [--flows 10000] [--weights 1,2,1] [--groups resilient,hash-threshold,legacy]

Root; builds a lab (namespaces, deleted afterwards).  For each group kind
(`group:` in the config: wanhooks' resilient nexthop group, a hash-threshold
nexthop group, the legacy multipath route) and each link k in turn:

  before   every link up; a LAN client sends --flows one-datagram UDP flows
           (fixed source ports, so every send makes the same 5-tuples); each
           ISP records which flows it carried;
  leave    link k loses carrier (cable pulled) and `wanhooks apply` runs; the
           same flows again: a flow *moved* if another link carries it now;
  return   carrier back, `wanhooks apply`, then a wait of the idle timer + 1 s
           with no traffic before the same flows are sent a third time.  A
           resilient group hands buckets back to a returning member only once
           they have been idle that long (a busy one only after the unbalanced
           timer: 30 s without sticky connections, as here), so
           without the wait the returning link would get only the idle part of
           its share back; the wait is the same for every kind.

The ideal: only the flows that were on link k must move when it leaves (its
share s of them); when it returns, only the flows that land on it must move
(s again, if the weights are to hold).  The "minimum" columns are exactly
those counts for this flow set, so "moved" above the minimum is needless
remapping: established connections broken for nothing (see sticky_survival.py
for what that costs a NATed TCP connection).  "not back home" counts the flows
on another link than before the leave, after the round trip.  Prints a
Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from wanhooks import constants as c
from wanhooks.lab import SERVER4, Lab

Placement = dict[tuple[int, str], int]  # (source port, destination) -> the link that carried it


@dataclass(frozen=True)
class Row:
    group: str
    link: int
    share: float  # the link's weight share
    flows: int  # flows seen before the leave
    lost: int  # flows no ISP saw in one of the three sends
    leave_moved: int
    leave_min: int  # flows that were on the link: they must move
    return_moved: int
    return_min: int  # flows on the link after it returned: they had to move
    not_home: int  # flows on another link than before the leave, after the round trip


def members(lab: Lab, group: str) -> set[str]:
    """The devices in the IPv4 balance group (or multipath route) right now."""
    if group == "legacy":
        table = lab.ip(lab.router, "-4", "route", "show", "table", str(c.TABLE_BALANCE), check=False)
        return {word.split()[0] for word in table.split(" dev ")[1:]}
    shown = lab.ip(lab.router, "nexthop", "show", "id", str(c.NH_GROUP_V4), check=False)
    if " group " not in shown:
        return set()
    ids = [part.split(",")[0] for part in shown.split(" group ")[1].split()[0].split("/")]
    found = set()
    for nhid in ids:
        one = lab.ip(lab.router, "nexthop", "show", "id", nhid, check=False)
        if " dev " in one:
            found.add(one.split(" dev ")[1].split()[0])
    return found


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out waiting for {what}")
        time.sleep(0.05)


def has_members(lab: Lab, group: str, want: set[str]) -> bool:
    return members(lab, group) == want


def is_up(lab: Lab, dev: str) -> bool:
    """Asked by name: the kernel handles the device's pending carrier event first."""
    return bool(lab.ip_json(lab.router, "link", "show", "dev", dev)[0]["operstate"] == "UP")


def placement(lab: Lab, flows: int) -> Placement:
    """Send the flows (a fresh NAT table, so each keeps its source port) and read where each went."""
    lab.ns_exec(lab.router, ["conntrack", "-F"], check=False)
    lab.reset_flows()
    lab.send_udp_flows(lab.lan, SERVER4, flows, sport_base=20000)
    seen: Placement = {}
    for link, keys in lab.flow_keys_per_link(4).items():
        for key in keys:
            seen[(key.sport, key.daddr)] = link
    return seen


def moved(a: Placement, b: Placement) -> int:
    return sum(1 for flow, link in a.items() if flow in b and b[flow] != link)


def one_kind(lab: Lab, tmp: str, group: str, weights: list[int], flows: int) -> list[Row]:
    links = "".join(
        f"  - {{interface: w{i}, weight: {w}, gateway: 100.64.{i}.1}}\n" for i, w in enumerate(weights, 1)
    )
    cfg = Path(tmp) / f"wanhooks-{group}.yaml"
    cfg.write_text(f"links:\n{links}group: {group}\nsticky: false\n")
    base = [sys.executable, "-m", "wanhooks", "-c", str(cfg), "--run-dir", f"{tmp}/run"]
    everyone = {f"w{i}" for i in range(1, len(weights) + 1)}
    rows: list[Row] = []
    try:
        lab.ns_exec(lab.router, [*base, "apply"])
        wait_for(partial(has_members, lab, group, everyone), "every link in the group")
        for k in range(1, len(weights) + 1):
            dev, rest = f"w{k}", everyone - {f"w{k}"}
            for i in range(1, len(weights) + 1):  # neighbours resolved: no datagram waits on ARP
                lab.ping(lab.router, lab.link(i).gateway4)
            before = placement(lab, flows)
            lab.carrier_off(k)
            lab.ns_exec(lab.router, [*base, "apply"])
            wait_for(partial(has_members, lab, group, rest), f"{dev} out of the group")
            left = placement(lab, flows)
            sent = time.monotonic()
            lab.carrier_on(k)
            wait_for(partial(is_up, lab, dev), f"{dev} operationally up")
            lab.ns_exec(lab.router, [*base, "apply"])
            wait_for(partial(has_members, lab, group, everyone), f"{dev} back in the group")
            lab.ping(lab.router, lab.link(k).gateway4)
            time.sleep(max(0.0, sent + c.RES_TIMERS_UNSTICKY.idle_s + 1 - time.monotonic()))
            back = placement(lab, flows)
            rows.append(
                Row(
                    group=group,
                    link=k,
                    share=weights[k - 1] / sum(weights),
                    flows=len(before),
                    lost=flows - min(len(before), len(left), len(back)),
                    leave_moved=moved(before, left),
                    leave_min=sum(1 for link in before.values() if link == k),
                    return_moved=moved(left, back),
                    return_min=sum(1 for link in back.values() if link == k),
                    not_home=moved(before, back),
                )
            )
    finally:
        lab.ns_exec(lab.router, [*base, "cleanup"], check=False)
    return rows


def pct(n: int, total: int) -> str:
    return f"{100 * n / max(1, total):.1f}%"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=10_000)
    ap.add_argument("--weights", default="1,2,1")
    ap.add_argument("--groups", default="resilient,hash-threshold,legacy")
    args = ap.parse_args()
    weights = [int(w) for w in args.weights.split(",")]
    if args.flows > 40_000:
        ap.error("--flows: at most 40000 (the source ports of one destination)")
    rows: list[Row] = []
    with Lab(len(weights)) as lab, tempfile.TemporaryDirectory() as tmp:
        for group in args.groups.split(","):
            rows += one_kind(lab, tmp, group, weights, args.flows)
    print(
        "| group | link out (weight share) | flows | leave: moved | leave: minimum | "
        "return: moved | return: minimum | not back home after the round trip |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        n = r.flows
        print(
            f"| {r.group} | w{r.link} ({100 * r.share:.0f}%) | {n} | "
            f"{pct(r.leave_moved, n)} | {pct(r.leave_min, n)} | "
            f"{pct(r.return_moved, n)} | {pct(r.return_min, n)} | {pct(r.not_home, n)} |"
        )
    lost = sum(r.lost for r in rows)
    print()
    print(
        f"Flows sent per step: {args.flows} (LAN client, IPv4, forwarded and masqueraded); "
        f"not seen by any ISP in some step: {lost}. "
        f"Return measured {c.RES_TIMERS_UNSTICKY.idle_s + 1} s after the last traffic "
        f"(the resilient group's idle timer is {c.RES_TIMERS_UNSTICKY.idle_s} s)."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
