"""Reconcile time for 1, 8, 32 and 64 links, against spawning `ip` for the same changes.

    python bench/reconcile_scaling.py [--links 1,8,32,64] [--rounds 30]

Run as root: it builds one network namespace (deleted afterwards) holding N
veth pairs, and times, inside it, three reconciles per size:
  initial   empty kernel -> the full plan (both families)
  reweight  one link's weight changes -> both groups replaced in place
  steady    nothing changed (the daemon's cost per event that needs nothing)
and, as baseline, the same operations as one `ip` process each (what a
shell script such as generic-balancer.sh does).  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))


def sh(*argv: str, check: bool = True) -> None:
    subprocess.run(argv, check=check, capture_output=True)


def build(ns: str, peer: str, n: int) -> None:
    """N links in ns; their peers (the ISP side) in another namespace, as on a real router."""
    sh("ip", "netns", "add", ns)
    sh("ip", "netns", "add", peer)
    lines = ["link set lo up"]
    for i in range(1, n + 1):
        lines += [
            f"link add w{i} type veth peer name c{i} netns {peer}",
            f"link set w{i} up",
            f"addr add 100.64.{i}.2/24 dev w{i}",
            f"addr add fd00:{i:x}::2/64 dev w{i} nodad",
        ]
    subprocess.run(["ip", "-n", ns, "-batch", "-"], input="\n".join(lines), text=True, check=True)
    peer_lines = [f"link set c{i} up" for i in range(1, n + 1)]
    subprocess.run(["ip", "-n", peer, "-batch", "-"], input="\n".join(peer_lines), text=True, check=True)


def inner(n: int, rounds: int) -> dict[str, list[float]]:
    """Runs inside the namespace."""
    import ipaddress
    from dataclasses import replace

    from wanhooks.kernel.linux import LinuxKernel
    from wanhooks.model import Config, LinkConfig
    from wanhooks.plan.planner import plan
    from wanhooks.reconcile.diff import cleanup, diff
    from wanhooks.reconcile.render import op_text
    from wanhooks.reconcile.round import converge

    run_dir = f"/tmp/wh-bench-{os.getpid()}"
    cfg = Config(
        links=tuple(
            LinkConfig(
                f"w{i}",
                weight=1 + i % 3,
                gateway4=ipaddress.IPv4Address(f"100.64.{i}.1"),
                gateway6=ipaddress.IPv6Address("fe80::1"),
            )
            for i in range(1, n + 1)
        )
    )
    # A change that touches every size alike: one link's weight changes (config reload),
    # so both groups are replaced in place.
    first = cfg.links[0]
    reweighted = replace(cfg, links=(replace(first, weight=first.weight + 5), *cfg.links[1:]))
    kernel = LinuxKernel()
    times: dict[str, list[float]] = {
        k: []
        for k in ("initial", "reweight", "steady", "ip-initial", "ip-reweight", "ops-initial", "ops-reweight")
    }
    names = {link.index: link.name for link in kernel.observe().links}
    for _ in range(rounds):
        cleanup(kernel, run_dir)
        t = time.perf_counter()
        converge(cfg, kernel, run_dir)
        times["initial"].append(time.perf_counter() - t)
        t = time.perf_counter()
        converge(cfg, kernel, run_dir)
        times["steady"].append(time.perf_counter() - t)
        t = time.perf_counter()
        r = converge(reweighted, kernel, run_dir)
        times["reweight"].append(time.perf_counter() - t)
        times["ops-reweight"].append(len(r.report.done))
        converge(cfg, kernel, run_dir)
    # Baseline: the same operations, one `ip` process each.
    for _ in range(max(3, rounds // 5)):
        cleanup(kernel, run_dir)
        desired = plan(cfg, kernel.observe())
        ops = diff(desired, kernel.dump_owned())
        cmds = [op_text(op, names)[2:] for op in ops]
        t = time.perf_counter()
        for cmd in cmds:
            subprocess.run(cmd.split(), check=True, capture_output=True)
        times["ip-initial"].append(time.perf_counter() - t)
        times["ops-initial"].append(len(cmds))
        desired = plan(reweighted, kernel.observe())
        ops = diff(desired, kernel.dump_owned())
        cmds = [op_text(op, names)[2:] for op in ops]
        t = time.perf_counter()
        for cmd in cmds:
            subprocess.run(cmd.split(), check=True, capture_output=True)
        times["ip-reweight"].append(time.perf_counter() - t)
    cleanup(kernel, run_dir)
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--links", default="1,8,32,64")
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="print raw JSON instead of Markdown")
    args = ap.parse_args()
    if args.inner:
        print(json.dumps(inner(args.inner, args.rounds)))
        return 0
    rows = []
    for n in (int(x) for x in args.links.split(",")):
        ns = f"whb{uuid.uuid4().hex[:6]}"
        peer = ns + "-isp"
        try:
            build(ns, peer, n)
            out = subprocess.run(
                [
                    "ip",
                    "netns",
                    "exec",
                    ns,
                    sys.executable,
                    __file__,
                    "--inner",
                    str(n),
                    "--rounds",
                    str(args.rounds),
                ],
                check=True,
                capture_output=True,
                text=True,
            ).stdout
        finally:
            sh("ip", "netns", "del", ns, check=False)
            sh("ip", "netns", "del", peer, check=False)
        rows.append((n, json.loads(out)))
    if args.json:
        print(json.dumps(rows))
        return 0
    print("| links | change | ops | wanhooks median ms | p99 ms | ops as `ip` processes, ms | ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n, t in rows:
        for change in ("initial", "reweight"):
            ours = [x * 1000 for x in t[change]]
            base = [x * 1000 for x in t[f"ip-{change}"]]
            ops = int(statistics.median(t[f"ops-{change}"]))
            ratio = statistics.median(base) / statistics.median(ours)
            print(
                f"| {n} | {change} | {ops} | {statistics.median(ours):.2f} | {pct(ours, 0.99):.2f} | "
                f"{statistics.median(base):.2f} | {ratio:.1f}x |"
            )
        steady = [x * 1000 for x in t["steady"]]
        print(
            f"| {n} | steady (no-op) | 0 | {statistics.median(steady):.2f} | "
            f"{pct(steady, 0.99):.2f} | - | - |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
