"""Loading a config with thousands of delegated prefixes (the overlap check).

    python bench/config_load.py [--prefixes 3000]

No root.  Times parse_config for N non-overlapping delegated /64s spread
over 3 links, 1 link and 30 links; the baseline in the same run is the
same links with no prefixes.  Run it against another tree with
PYTHONPATH=<tree> to compare versions.  Prints Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.append(str(Path(__file__).resolve().parent.parent))  # after PYTHONPATH: --compare by it

from wanhooks.config.load import parse_config


def config_text(links: int, per_link: int) -> str:
    lines, k = ["links:"], 0
    for i in range(1, links + 1):
        prefixes = [f"'fd00:{(k + j) // 65536:x}:{(k + j) % 65536:x}::/64'" for j in range(per_link)]
        k += per_link
        delegated = f", delegated: [{', '.join(prefixes)}]" if prefixes else ""
        lines.append(f"  - {{interface: w{i}{delegated}}}")
    return "\n".join(lines) + "\n"


def seconds(text: str, runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        parse_config(text, "bench.yaml")
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prefixes", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"parse_config, {args.prefixes} delegated prefixes, median of {args.runs}\n")
    print("| links | no prefixes ms | with prefixes ms | ratio |")
    print("|---:|---:|---:|---:|")
    for links in (1, 3, 30):
        bare = seconds(config_text(links, 0), args.runs)
        full = seconds(config_text(links, args.prefixes // links), args.runs)
        print(f"| {links} | {bare * 1000:.1f} | {full * 1000:.0f} | {full / bare:.0f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
