"""Reconcile time for 1 to 256 links: today's full-dump round against the mirrored one, and
against spawning `ip` for the same changes.

    python bench/reconcile_scaling.py [--links 1,16,64,256] [--rounds 20]

Run as root: it builds one network namespace (deleted afterwards) holding N
veth pairs, each with a default route in main (as a DHCP client leaves it), and
times, inside it:

* a round after one change -- one link's carrier lost, one link's weight
  changed (a reload), one link's gateway moved in main (a DHCP renewal), and
  nothing changed -- from the round's start to its last write, twice: by the
  kernel the daemon uses (kernel/mirrored.py: reads from a mirror kept by
  notifications) and by a full-dump round (kernel/linux.py: every round
  dumps all it reads), alternating, in the same run;
* initial (empty kernel -> the full plan) and reweight rounds against the same
  operations as one `ip` process each (what a shell script such as
  generic-balancer.sh does).

Prints Markdown tables.
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
CHANGES = ("carrier lost", "weight changed", "gateway moved", "nothing changed")
CHUNKS = 4  # processes per kernel, in turn


def _addr4(i: int) -> str:
    """100.64.<i>. for i up to 255, then 100.65.<i - 255>.: 256 links and more."""
    return f"100.{64 + (i - 1) // 255}.{(i - 1) % 255 + 1}"


def sh(*argv: str, check: bool = True) -> None:
    subprocess.run(argv, check=check, capture_output=True)


def build(ns: str, peer: str, n: int) -> None:
    """N links in ns; their peers (the ISP side) in another namespace, as on a real router;
    each link's default in main, as its DHCP client leaves it."""
    sh("ip", "netns", "add", ns)
    sh("ip", "netns", "add", peer)
    lines = ["link set lo up"]
    for i in range(1, n + 1):
        lines += [
            f"link add w{i} type veth peer name c{i} netns {peer}",
            f"link set w{i} up",
            f"addr add {_addr4(i)}.2/24 dev w{i}",
            f"addr add fd00:{i:x}::2/64 dev w{i} nodad",
            f"route add default via {_addr4(i)}.1 dev w{i} metric {100 + i}",
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
                gateway4=ipaddress.IPv4Address(f"{_addr4(i)}.1"),
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


def inner_changes(n: int, rounds: int, peer: str, kind: str, first: bool) -> dict[str, list[float]]:
    """Runs inside the namespace: a round after each change, by one kernel (a process of its
    own per kernel: the other's garbage and caches are not this one's)."""
    import ipaddress
    import select
    from dataclasses import replace

    from pyroute2 import IPRoute
    from pyroute2.netlink.rtnl import RTMGRP_LINK

    from wanhooks.kernel.linux import LinuxKernel
    from wanhooks.kernel.mirrored import MirroredKernel
    from wanhooks.model import Config, LinkConfig
    from wanhooks.reconcile.round import converge

    run_dir = f"/tmp/wh-bench-{os.getpid()}"
    # IPv4 gateways from main, as DHCP leaves them; IPv6 the ISP's link-local router
    cfg = Config(
        links=tuple(
            LinkConfig(f"w{i}", weight=1 + i % 3, gateway6=ipaddress.IPv6Address("fe80::1"))
            for i in range(1, n + 1)
        )
    )
    k = 1 + n // 2  # the link that changes
    entry = cfg.links[k - 1]
    reweighted = replace(
        cfg, links=tuple(replace(e, weight=e.weight + 5) if e is entry else e for e in cfg.links)
    )
    kernel = MirroredKernel() if kind == "mirrored" else LinuxKernel()
    converge(cfg, kernel, run_dir)
    if first:
        time.sleep(2.5)  # IPv6 duplicate address detection ends: its notifications are not a change
        converge(cfg, kernel, run_dir)
    monitor = IPRoute()
    monitor.bind(groups=RTMGRP_LINK)
    with open(f"/sys/class/net/w{k}/ifindex") as f:
        index = int(f.read())

    def told(carrier: bool) -> None:
        """Until the kernel has told of the carrier change -- its link message, sent when
        the link watch has run, after it deleted what went with the carrier -- as the
        daemon's round starts on that message."""
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            if not select.select([monitor], [], [], 0.05)[0]:
                continue
            for msg in monitor.get():
                lower_up = bool(msg.get("flags", 0) & 0x10000)  # IFF_LOWER_UP
                oper_up = msg.get_attr("IFLA_OPERSTATE") == "UP"
                if msg.get("index") == index and lower_up == carrier and oper_up == carrier:
                    return

    def event(change: str, undo: bool) -> Config:
        if change == "carrier lost":
            sh("ip", "-n", peer, "link", "set", f"c{k}", "up" if undo else "down")
            told(carrier=undo)
        elif change == "weight changed":
            return cfg if undo else reweighted
        elif change == "gateway moved":
            gateway = f"{_addr4(k)}.{1 if undo else 3}"
            sh("ip", "route", "replace", "default", "via", gateway, "dev", f"w{k}", "metric", str(100 + k))
        return cfg

    times: dict[str, list[float]] = {}
    for _ in range(rounds):
        for change in CHANGES:
            config = event(change, undo=False)
            t = time.perf_counter()
            result = converge(config, kernel, run_dir)
            times.setdefault(f"{kind}/{change}", []).append(time.perf_counter() - t)
            times.setdefault(f"ops/{change}", []).append(len(result.report.done))
            converge(event(change, undo=True), kernel, run_dir)  # back, untimed
    monitor.close()
    return times


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--links", default="1,16,64,256")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--inner", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--inner-changes", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--peer", help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--first", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--json", action="store_true", help="print raw JSON instead of Markdown")
    args = ap.parse_args()
    if args.inner:
        print(json.dumps(inner(args.inner, args.rounds)))
        return 0
    if args.inner_changes:
        print(json.dumps(inner_changes(args.inner_changes, args.rounds, args.peer, args.kind, args.first)))
        return 0
    rows = []
    for n in (int(x) for x in args.links.split(",")):
        ns = f"whb{uuid.uuid4().hex[:6]}"
        peer = ns + "-isp"
        rounds = str(args.rounds)
        try:
            build(ns, peer, n)
            found = {}
            # (`ip` refuses a group of 256 members on its command line: that baseline stops at 64)
            runs = [["--inner", str(n), "--rounds", rounds]] if n <= 64 else []
            # the two kernels in turn, CHUNKS processes each, alternating (a noisy machine
            # slows both alike); each its own process, as the daemon is
            chunk = str(max(1, args.rounds // CHUNKS))
            for i in range(CHUNKS):
                for kind in ("mirrored", "full") if i % 2 == 0 else ("full", "mirrored"):
                    argv = ["--inner-changes", str(n), "--peer", peer, "--kind", kind, "--rounds", chunk]
                    runs.append(argv + (["--first"] if not i and kind == "mirrored" else []))
            for argv in runs:
                command = ["ip", "netns", "exec", ns, sys.executable, __file__, *argv]
                for key, values in json.loads(
                    subprocess.run(command, check=True, capture_output=True, text=True).stdout
                ).items():
                    found.setdefault(key, []).extend(values)
        finally:
            sh("ip", "netns", "del", ns, check=False)
            sh("ip", "netns", "del", peer, check=False)
        rows.append((n, found))
    if args.json:
        print(json.dumps(rows))
        return 0
    print("A round after one change, from its start to its last write: the daemon's (reads a mirror")
    print("kept by notifications) against a full-dump round (dumps all it reads), in turn, same run.")
    print()
    print(
        "| links | change | ops | full-dump round p50 ms | p99 ms | mirrored round p50 ms | p99 ms | ratio |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for n, t in rows:
        for change in CHANGES:
            full = [x * 1000 for x in t[f"full/{change}"]]
            ours = [x * 1000 for x in t[f"mirrored/{change}"]]
            ops = int(statistics.median(t[f"ops/{change}"]))
            print(
                f"| {n} | {change} | {ops} | {statistics.median(full):.2f} | {pct(full, 0.99):.2f} | "
                f"{statistics.median(ours):.2f} | {pct(ours, 0.99):.2f} | "
                f"{statistics.median(full) / statistics.median(ours):.1f}x |"
            )
    print()
    print("Building and reweighting by full-dump rounds against the same operations as `ip` processes:")
    print()
    print("| links | change | ops | wanhooks median ms | p99 ms | ops as `ip` processes, ms | ratio |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for n, t in rows:
        if "initial" not in t:
            continue
        for change in ("initial", "reweight"):
            ours = [x * 1000 for x in t[change]]
            base = [x * 1000 for x in t[f"ip-{change}"]]
            ops = int(statistics.median(t[f"ops-{change}"]))
            ratio = statistics.median(base) / statistics.median(ours)
            print(
                f"| {n} | {change} | {ops} | {statistics.median(ours):.2f} | {pct(ours, 0.99):.2f} | "
                f"{statistics.median(base):.2f} | {ratio:.1f}x |"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
