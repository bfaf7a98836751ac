"""Aggregate throughput of many TCP flows over shaped links, against the sum of each link alone.

    python bench/throughput.py [--rates 20,40,20] [--flows 16] [--seconds 6] [--trials 3]

Root; builds a lab (namespaces, deleted afterwards) whose links are shaped
with tbf both ways at --rates Mbit/s.  In the same run:

1. *calibration*: wanhooks with one link at a time; `flows` TCP uploads from
   a LAN client; that link's rate is what its ISP receives in a steady window
   (after --warmup seconds of slow start);
2. *balanced*: wanhooks with every link, weights proportional to the rates,
   the same flows; the aggregate over the same kind of window.

The figure is balanced / (sum of calibrated rates): how much of the links'
real capacity per-connection balancing delivers.  Each trial draws fresh
source ports, so the flows land on the links differently each time; a link
that gets no flow at all shows as a shortfall (with 16 flows and a 25 %
link, 1 % of trials; the table shows each link's connections, counted by
its ISP).  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

from wanhooks.lab import SERVER4, Lab


def window_rates(lab: Lab, flows: int, warmup: float, seconds: float) -> dict[int, float]:
    """Mbit/s each ISP received from the router over a steady window of a `flows`-flow upload."""
    flood = lab.spawn(
        lab.lan, "tcp-flood", "--dst", SERVER4, "--flows", str(flows), "--seconds", str(warmup + seconds + 1)
    )
    try:
        time.sleep(warmup)
        before, start = lab.isp_rx_bytes(), time.monotonic()
        time.sleep(seconds)
        after, elapsed = lab.isp_rx_bytes(), time.monotonic() - start
    finally:
        flood.wait(warmup + seconds + 30)
    return {i: (after[i] - before[i]) * 8 / elapsed / 1e6 for i in after}


def rounds_with_an_empty_link(lab: Lab, flows: int, rounds: int) -> int:
    """Short uploads of `flows` connections: in how many did some link get none?"""
    empty = 0
    for _ in range(rounds):
        lab.reset_flows()
        argv = ["tcp-flood", "--dst", SERVER4, "--flows", str(flows), "--seconds", "0.2"]
        lab.traffic(lab.lan, *argv, check=False)
        empty += any(not keys for keys in lab.flow_keys_per_link(4).values())
    return empty


def apply(lab: Lab, cfg: Path, run_dir: str, links: dict[int, int]) -> None:
    cfg.write_text(
        "links:\n"
        + "".join(f"  - {{interface: w{i}, weight: {w}, gateway: 100.64.{i}.1}}\n" for i, w in links.items())
    )
    lab.ns_exec(lab.router, [sys.executable, "-m", "wanhooks", "-c", str(cfg), "--run-dir", run_dir, "apply"])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="20,40,20", help="Mbit/s of each link")
    ap.add_argument("--flows", type=int, default=16)
    ap.add_argument("--seconds", type=float, default=6.0, help="the measured window")
    ap.add_argument("--warmup", type=float, default=2.0, help="slow start, not measured")
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--hash-rounds", type=int, default=60, help="short rounds counting links left empty")
    args = ap.parse_args()
    rates = [float(r) for r in args.rates.split(",")]
    unit = math.gcd(*(int(r) for r in rates)) or 1
    weights = {i: max(1, round(r / unit)) for i, r in enumerate(rates, 1)}
    rows = []
    with Lab(len(rates), shape_mbit=rates) as lab, tempfile.TemporaryDirectory() as tmp:
        sink = lab.spawn(lab.internet, "tcp-sink", "--seconds", "3600")
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        cfg, run_dir = Path(tmp) / "wanhooks.yaml", f"{tmp}/run"
        try:
            for trial in range(1, args.trials + 1):
                calibrated = {}
                for i in weights:
                    apply(lab, cfg, run_dir, {i: 1})
                    calibrated[i] = window_rates(lab, args.flows, args.warmup, args.seconds)[i]
                apply(lab, cfg, run_dir, weights)
                time.sleep(2)  # the last calibration's send buffers drain (they would count as flows)
                lab.reset_flows()
                balanced = window_rates(lab, args.flows, args.warmup, args.seconds)
                rows.append((trial, calibrated, balanced, lab.flows_per_link(4)))
            empty = rounds_with_an_empty_link(lab, args.flows, args.hash_rounds)
        finally:
            sink.terminate()
            sink.wait()
    shaped = "/".join(f"{r:g}" for r in rates)
    print(f"| trial | calibrated per link (Mbit/s, shaped {shaped}) | sum | balanced per link |", end="")
    print(" connections per link | total | ratio |\n|---:|---|---:|---|---|---:|---:|")
    ratios = []
    for trial, calibrated, balanced, flows in rows:
        total_c, total_b = sum(calibrated.values()), sum(balanced.values())
        ratios.append(total_b / total_c)
        cal = " / ".join(f"{v:.1f}" for v in calibrated.values())
        bal = " / ".join(f"{v:.1f}" for v in balanced.values())
        conns = " / ".join(str(n) for n in flows.values())
        ratio = f"{100 * ratios[-1]:.1f}%"
        print(f"| {trial} | {cal} | {total_c:.1f} | {bal} | {conns} | {total_b:.1f} | {ratio} |")
    print(f"\nmedian ratio {100 * statistics.median(ratios):.1f}% (min {100 * min(ratios):.1f}%)")
    shares = [w / sum(weights.values()) for w in weights.values()]
    chance = 1 - math.prod(1 - (1 - p) ** args.flows for p in shares)  # about: links nearly independent
    print(
        f"rounds of {args.flows} new connections that left a link with none: {empty} of {args.hash_rounds} "
        f"(chance alone: about {100 * chance:.1f}%)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
