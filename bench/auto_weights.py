"""`weight: auto` against hand-set weights, on links of 5, 20 and 10 Mbit/s, in one run.

    python bench/auto_weights.py [--converge 150] [--reshaped 120] [--idle 60] [--handset 120]

Root; builds a 3-link lab (namespaces, deleted afterwards) whose links are
shaped both ways with tbf (the lab's `shape`: 50 ms of queue).  A LAN client
keeps them busy: 12 bulk uploads and 12 bulk downloads, each connection
living 5 s before the next one starts (so new connections keep being
balanced), plus 4 workers opening short connections.

  auto      every link `weight: auto`, no capacity hints.  From the start of the
            load: when the kernel's weight shares first come within 15 %
            (relative) of the capacity shares (5:20:10) and stay there; then w2
            is reshaped 20 -> 5 Mbit/s and the same for 5:5:10; then the load
            stops for `idle` seconds (the weights must not move: no traffic is
            not no capacity).  Every weight change is counted.
  hand-set  weights 1:4:2, written by hand (correct for 5:20:10): the same load.

Throughput is what the ISPs received and sent on their customer side, over the
second half of each phase.  Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from wanhooks import constants as c
from wanhooks.lab import SERVER4, Lab

RATES = {1: 5.0, 2: 20.0, 3: 10.0}  # Mbit/s
TARGETS = "[203.0.113.10, 203.0.113.11]"
TOLERANCE = 0.15


@dataclass
class Trace:
    at: list[float] = field(default_factory=list)
    shares: list[dict[int, float]] = field(default_factory=list)
    bytes_: list[int] = field(default_factory=list)  # ISP customer-side rx + tx, all links
    changes: list[float] = field(default_factory=list)

    def settled_at(self, rates: dict[int, float], start: float, end: float) -> float | None:
        """When the shares came within TOLERANCE of `rates`' and stayed so until `end`."""
        total = sum(rates.values())
        since = None
        for at, shares in zip(self.at, self.shares):
            if not start <= at <= end:
                continue
            ok = bool(shares) and all(
                abs(shares.get(i, 0) / (r / total) - 1) <= TOLERANCE for i, r in rates.items()
            )
            since = (since if since is not None else at) if ok else None
        return None if since is None else since - start

    def mbit(self, start: float, end: float) -> float:
        points = [(at, b) for at, b in zip(self.at, self.bytes_) if start <= at <= end]
        if len(points) < 2:
            return 0.0
        (t0, b0), (t1, b1) = points[0], points[-1]
        return 8 * (b1 - b0) / (t1 - t0) / 1e6


def shares(lab: Lab) -> dict[int, float]:
    nexthops = {n["id"]: n for n in lab.ip_json(lab.router, "nexthop", "show")}
    group = nexthops.get(c.NH_GROUP_V4)
    if group is None:
        return {}
    weights = {int(nexthops[m["id"]]["dev"][1:]): m.get("weight", 1) for m in group["group"]}
    total = sum(weights.values())
    return {i: w / total for i, w in weights.items()}


def isp_bytes(lab: Lab) -> int:
    total = 0
    for isp in lab.isps:
        stats = lab.ip_json(isp, "-s", "link", "show", "dev", "c")[0]["stats64"]
        total += int(stats["rx"]["bytes"]) + int(stats["tx"]["bytes"])
    return total


def load(lab: Lab, seconds: float) -> list[subprocess.Popen[str]]:
    common = ["--dst", SERVER4, "--seconds", str(seconds)]
    return [
        lab.spawn(lab.lan, "tcp-churn", *common, "--port", "9100", "--flows", "12", "--life", "5"),
        lab.spawn(lab.lan, "tcp-churn", *common, "--port", "9300", "--flows", "12", "--life", "5", "--pull"),
        lab.spawn(lab.lan, "tcp-churn", *common, "--port", "9100", "--flows", "4", "--life", "0.3"),
    ]


def record(lab: Lab, trace: Trace, zero: float, until: float) -> None:
    while (now := time.monotonic()) < until:
        current = shares(lab)
        if (
            trace.shares
            and current
            and any(abs(current.get(i, 0) - trace.shares[-1].get(i, 0)) > 0.002 for i in current)
        ):
            trace.changes.append(now - zero)
        trace.at.append(now - zero)
        trace.shares.append(current)
        trace.bytes_.append(isp_bytes(lab))
        time.sleep(max(0.0, 1.0 - (time.monotonic() - now)))


def run(lab: Lab, tmp: str, links: str, phases: list[tuple[str, float]]) -> Trace:
    cfg = Path(tmp) / "wanhooks.yaml"
    cfg.write_text(f"links:\n{links}health: {{targets: {TARGETS}}}\n")
    base = [sys.executable, "-m", "wanhooks", "-c", str(cfg), "--run-dir", f"{tmp}/run"]
    for i, rate in RATES.items():
        lab.shape(i, rate)
    log = open(Path(tmp) / "daemon.log", "a")  # noqa: SIM115 - closed below
    daemon = subprocess.Popen(["ip", "netns", "exec", lab.router, *base, "run"], stdout=log, stderr=log)
    trace = Trace()
    procs: list[subprocess.Popen[str]] = []
    try:
        deadline = time.monotonic() + 15
        while len(shares(lab)) < 3 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(3)  # idle round trips first: the estimators' baselines
        zero = time.monotonic()
        busy = sum(seconds for what, seconds in phases if what != "idle")
        procs = load(lab, busy)
        at = zero
        for what, seconds in phases:
            if what == "reshape":
                lab.shape(2, 5.0)
            elif what == "idle":
                for proc in procs:
                    proc.terminate()
            at += seconds
            record(lab, trace, zero, at)
        return trace
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        daemon.terminate()
        daemon.wait(10)
        log.close()
        lab.ns_exec(lab.router, [*base, "cleanup"], check=False)
        for i in RATES:
            lab.shape(i, None)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--converge", type=float, default=150.0)
    ap.add_argument("--reshaped", type=float, default=120.0)
    ap.add_argument("--idle", type=float, default=60.0)
    ap.add_argument("--handset", type=float, default=120.0)
    args = ap.parse_args()
    auto = "".join(f"  - {{interface: w{i}, gateway: 100.64.{i}.1, weight: auto}}\n" for i in RATES)
    fixed = "".join(
        f"  - {{interface: w{i}, gateway: 100.64.{i}.1, weight: {w}}}\n" for i, w in zip(RATES, (1, 4, 2))
    )
    with Lab(3) as lab, tempfile.TemporaryDirectory() as tmp:
        servers = [
            lab.spawn(lab.internet, "tcp-sink", "--port", "9100", "--seconds", "36000"),
            lab.spawn(lab.internet, "tcp-source", "--port", "9300", "--seconds", "36000"),
        ]
        for server in servers:
            assert server.stdout is not None and server.stdout.readline().strip() == "ready"
        try:
            c1, c2 = args.converge, args.converge + args.reshaped
            a = run(lab, tmp, auto, [("load", c1), ("reshape", args.reshaped), ("idle", args.idle)])
            h = run(lab, tmp, fixed, [("load", args.handset)])
        finally:
            for server in servers:
                server.terminate()
        print((Path(tmp) / "daemon.log").read_text()[-3000:], file=sys.stderr)
    reshaped = {1: 5.0, 2: 5.0, 3: 10.0}
    first = a.settled_at(RATES, 0, c1)
    follow = a.settled_at(reshaped, c1, c2)
    steady = [t for t in a.changes if first is not None and first + 1 < t <= c1]
    idle_moves = [t for t in a.changes if t > c2 + 1]
    auto_mbit, hand_mbit = a.mbit(c1 / 2, c1), h.mbit(args.handset / 2, args.handset)
    final = a.shares[[i for i, t in enumerate(a.at) if t <= c1][-1]]
    print("| measure | figure | target |")
    print("|---|---:|---|")
    print(f"| shares within 15 % of 5:20:10 after | {_s(first)} | <= 120 s |")
    print(f"| shares at {c1:g} s (w1/w2/w3) | {_shares(final)} | 14/57/29 % |")
    print(f"| w2 reshaped 20 -> 5: shares within 15 % of 5:5:10 after | {_s(follow)} | <= 60 s |")
    print(
        f"| weight changes after settling, {c1:g} s run | {len(steady)} at {_times(steady)} | <= 1 per 60 s |"
    )
    print(f"| weight changes over {args.idle:g} s idle | {len(idle_moves)} | 0 |")
    print(
        f"| aggregate throughput (auto / hand-set 1:4:2) | {auto_mbit:.1f} / {hand_mbit:.1f} Mbit/s "
        f"= {100 * auto_mbit / hand_mbit:.0f} % | >= 95 % of hand-set |"
    )
    print(f"| sum of the links' rates, both ways | {2 * sum(RATES.values()):.0f} Mbit/s | |")
    print(json.dumps({"changes": a.changes}), file=sys.stderr)
    return 0


def _s(value: float | None) -> str:
    return "never" if value is None else f"{value:.0f} s"


def _shares(shares: dict[int, float]) -> str:
    return "/".join(f"{100 * shares.get(i, 0):.0f}" for i in RATES) + " %"


def _times(times: list[float]) -> str:
    return ", ".join(f"{t:.0f} s" for t in times) or "-"


if __name__ == "__main__":
    raise SystemExit(main())
