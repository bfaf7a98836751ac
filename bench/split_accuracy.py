"""How closely new connections follow the weights: per-link share vs weight, measured at the ISPs.

    python bench/split_accuracy.py [--flows 3000] [--weights 1,2,1]

Root; builds a lab (namespaces, deleted afterwards), applies wanhooks with
per-connection balancing and sends N one-datagram UDP flows from the router
itself and from a LAN client, over IPv4 and IPv6.  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from wanhooks.lab import SERVER4, SERVER6, Lab


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=3000)
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
        print(f"| source | family | flows | {heads} | max error (pp) |")
        print("|---|---|---:|" + "---:|" * len(weights) + "---:|")
        port = 20000
        for source, ns in (("router", lab.router), ("LAN (forwarded)", lab.lan)):
            for family, server in ((4, SERVER4), (6, SERVER6)):
                lab.reset_flows()
                lab.send_udp_flows(ns, server, args.flows, sport_base=port)
                port += args.flows
                counts = lab.flows_per_link(family)
                got = sum(counts.values())
                shares = [100 * counts[i] / got for i in range(1, len(weights) + 1)]
                err = max(abs(s - 100 * w / total_w) for s, w in zip(shares, weights))
                cells = " | ".join(f"{s:.1f}%" for s in shares)
                print(f"| {source} | IPv{family} | {got} | {cells} | {err:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
