"""The demo: wanhooks on a simulated host with three uplinks of different speeds.

    python -m wanhooks.demo [--short]

Everything happens in network namespaces created for the run and deleted at
the end (Ctrl-C included): a router running wanhooks, three ISPs shaped to
10/20/10 Mbit/s, an "internet" and a LAN client.  Nothing on the host's own
network changes.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from .constants import RES_IDLE_TIMER_S
from .lab import SERVER4, Lab

RATES = (10.0, 20.0, 10.0)  # Mbit/s, the links' speeds
WEIGHTS = (1, 2, 1)  # in proportion to the speeds, as the 2011 script advised

CONFIG = """\
# three uplinks: weight in proportion to speed
links:
  - interface: w1          # 10 Mbit/s ADSL
    weight: 1
    gateway: [100.64.1.1, "fe80::1"]
  - interface: w2          # 20 Mbit/s fibre
    weight: 2
    gateway: [100.64.2.1, "fe80::1"]
  - interface: w3          # 10 Mbit/s LTE
    weight: 1
    gateway: [100.64.3.1, "fe80::1"]
balance: per-connection
"""


class Demo:
    def __init__(self, lab: Lab, workdir: Path, seconds: float) -> None:
        self.lab = lab
        self.config = workdir / "wanhooks.yaml"
        self.config.write_text(CONFIG)
        self.run_dir = workdir / "run"
        self.seconds = seconds
        self.next_port = 20000

    def wanhooks(self, *args: str) -> str:
        argv = [sys.executable, "-m", "wanhooks", "-c", str(self.config), "--run-dir", str(self.run_dir)]
        return self.lab.ns_exec(self.lab.router, [*argv, *args]).stdout

    def show(self, *args: str, indent: str = "    ") -> None:
        print(f"  $ wanhooks {' '.join(args)}")
        for line in self.wanhooks(*args).splitlines():
            print(indent + line)

    def connections(self, count: int = 3000) -> dict[int, int]:
        """`count` new connections (fresh source ports each round) and where they left."""
        self.lab.reset_flows()
        self.lab.send_udp_flows(self.lab.lan, SERVER4, count, sport_base=self.next_port)
        self.next_port += count
        return self.lab.flows_per_link(4)

    def split_table(self, counts: dict[int, int], weights: Sequence[int]) -> None:
        total = sum(counts.values())
        wsum = sum(w for i, w in enumerate(weights, 1) if counts.get(i) or w)
        print("    link  weight  expected  got")
        for i, w in enumerate(weights, 1):
            share = 100.0 * counts[i] / total if total else 0.0
            expected = 100.0 * w / wsum if wsum else 0.0
            print(f"    w{i}    {w:>6}  {expected:7.1f}%  {share:5.1f}%  ({counts[i]} connections)")

    def throughput(self, flows: int = 16) -> tuple[dict[int, float], float]:
        sink = self.lab.spawn(self.lab.internet, "tcp-sink", "--seconds", str(self.seconds + 30))
        try:
            assert sink.stdout is not None
            sink.stdout.readline()  # "ready"
            before = self.lab.isp_rx_bytes()
            start = time.monotonic()
            self.lab.traffic(
                self.lab.lan,
                "tcp-flood",
                "--dst",
                SERVER4,
                "--flows",
                str(flows),
                "--seconds",
                str(self.seconds),
                check=False,
                timeout=self.seconds + 60,
            )
            elapsed = time.monotonic() - start
            after = self.lab.isp_rx_bytes()
        finally:
            sink.terminate()
            sink.wait()
        mbit = {i: (after[i] - before[i]) * 8 / elapsed / 1e6 for i in after}
        return mbit, sum(mbit.values())


def step(text: str) -> None:
    print(f"\n== {text}")


def run(seconds: float) -> int:
    with Lab(3, shape_mbit=list(RATES)) as lab, tempfile.TemporaryDirectory(prefix="wanhooks-demo-") as tmp:
        demo = Demo(lab, Path(tmp), seconds)
        step(
            f"A host with three uplinks of {'/'.join(f'{r:g}' for r in RATES)} Mbit/s "
            f"(namespaces {lab.prefix}-*), and this config:"
        )
        for line in CONFIG.splitlines():
            print("    " + line)

        step("wanhooks builds the routing: a weighted nexthop group, a table and a rule per link")
        applied = demo.wanhooks("apply").splitlines()
        print(f"  $ wanhooks apply    ({len(applied)} changes; the kernel now holds:)")
        for line in lab.ip(lab.router, "nexthop", "show").splitlines():
            print("    " + line)
        demo.show("status")

        step("3000 new connections from a LAN client: split by weight")
        demo.split_table(demo.connections(), WEIGHTS)

        step(f"16 bulk TCP uploads for {seconds:g} s: the links are used at once")
        mbit, total = demo.throughput()
        for i, rate in enumerate(RATES, 1):
            print(f"    w{i}  {mbit[i]:5.1f} Mbit/s of {rate:g}")
        print(
            f"    total {total:5.1f} Mbit/s = {100 * total / sum(RATES):.0f}% of the links' "
            f"{sum(RATES):g} Mbit/s (one link alone: at most {max(RATES):g})"
        )

        step("w2's cable is pulled: the next apply (a hook or the daemon runs it) takes it out")
        lab.carrier_off(2)
        for line in demo.wanhooks("apply").splitlines():
            print("    " + line)
        demo.show("status")
        during = demo.connections()
        demo.split_table(during, (1, 0, 1))

        step("w2 is back: it rejoins")
        lab.carrier_on(2)
        for line in demo.wanhooks("apply").splitlines():
            print("    " + line)
        print(
            f"    (resilient group: w2 takes back hash buckets once they have been idle "
            f"{RES_IDLE_TIMER_S} s, so no running connection is moved; waiting for that)"
        )
        time.sleep(RES_IDLE_TIMER_S + 1.5)
        after = demo.connections()
        demo.split_table(after, WEIGHTS)

        status = json.loads(demo.wanhooks("status", "--json"))
        active = [link["name"] for link in status["links"] if link["state"].startswith("active")]
        step("Summary")
        print(
            f"    balanced by weight 1:2:1; aggregate {total:.1f} of {sum(RATES):g} Mbit/s; "
            f"w2 out while unplugged ({during[2]} of {sum(during.values())} connections), back after; "
            f"active now: {', '.join(active)}"
        )
        print(f"    cleaning up: deleting namespaces {lab.prefix}-*")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wanhooks.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--short", action="store_true", help="a quick run (CI): 2 s of bulk traffic")
    ap.add_argument("--seconds", type=float, default=8.0, help="bulk traffic duration")
    args = ap.parse_args(argv)
    try:
        return run(2.0 if args.short else args.seconds)
    except KeyboardInterrupt:
        print("\ninterrupted: the lab's namespaces and processes are gone", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
