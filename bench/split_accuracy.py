"""How closely new connections follow the weights: per-link share vs weight, measured at the ISPs.

    python bench/split_accuracy.py [--flows 1000,10000,100000] [--weights 1,2,1]

Root; builds a lab (namespaces, deleted afterwards), applies wanhooks with
per-connection balancing and sends N one-datagram UDP flows (for each N in
--flows) from the router itself and from a LAN client, over IPv4 and IPv6.
Prints a Markdown table.  The last column is what pure chance allows: the
largest link's binomial standard deviation at N, in percentage points (an
error within about 3 of it is sampling noise, not a skewed hash).
"""

from __future__ import annotations

import argparse
import ipaddress
import math
import sys
import tempfile
from pathlib import Path

from wanhooks.lab import SERVER4, SERVER6, Lab


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", default="1000,10000,100000", help="flow counts, comma-separated")
    ap.add_argument("--weights", default="1,2,1")
    args = ap.parse_args()
    weights = [int(w) for w in args.weights.split(",")]
    with Lab(len(weights)) as lab, tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "wanhooks.yaml"
        cfg.write_text(
            "links:\n"
            + "".join(
                f'  - {{interface: w{i}, weight: {w}, gateway: [100.64.{i}.1, "fe80::1"]}}\n'
                for i, w in enumerate(weights, 1)
            )
        )
        wanhooks = [sys.executable, "-m", "wanhooks", "-c", str(cfg), "--run-dir", f"{tmp}/run", "apply"]
        lab.ns_exec(lab.router, wanhooks)
        total_w = sum(weights)
        heads = " | ".join(f"w{i} (want {100 * w / total_w:.1f}%)" for i, w in enumerate(weights, 1))
        print(f"| source | family | flows | {heads} | max error (pp) | binomial 1 sd (pp) |")
        print("|---|---|---:|" + "---:|" * len(weights) + "---:|---:|")
        next_dst = 0
        for flows in (int(n) for n in args.flows.split(",")):
            for source, ns in (("router", lab.router), ("LAN (forwarded)", lab.lan)):
                for family, server in ((4, SERVER4), (6, SERVER6)):
                    lab.reset_flows()
                    # 40000 source ports per destination (the lab's internet answers a whole
                    # prefix), and a fresh destination every time: a 5-tuple reused while its
                    # last NAT mapping lives would clash with it
                    for first in range(0, flows, 40000):
                        dst = str(ipaddress.ip_address(server) + next_dst)
                        next_dst += 1
                        lab.send_udp_flows(ns, dst, min(40000, flows - first), sport_base=20000)
                    counts = lab.flows_per_link(family)
                    got = sum(counts.values())
                    shares = [100 * counts[i] / got for i in range(1, len(weights) + 1)]
                    err = max(abs(s - 100 * w / total_w) for s, w in zip(shares, weights))
                    p = max(weights) / total_w
                    sd = 100 * math.sqrt(p * (1 - p) / got)
                    cells = " | ".join(f"{s:.2f}%" for s in shares)
                    print(f"| {source} | IPv{family} | {got} | {cells} | {err:.2f} | {sd:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
