"""Soak: 100,000 events through the daemon; memory, file descriptors and tasks before and after.

    python bench/soak.py [--events 100000] [--links 3]

Root; a 3-link lab, `wanhooks run` in its router with probes on every link.
A flapper in the router namespace (one process, netlink only) takes w3 down
and up, each time changing its address and w1's main default too, as fast
as the kernel takes it, until the daemon has counted --events events (its
own `events` figure in `status --json`: every notification, hook and timer
it was handed).  The daemon's RSS, open fds and asyncio tasks are sampled
after a warm-up of 2,000 events and at each quarter: flat is no leak.  `--links N` adds N - 3
more uplinks (Lab.add_uplinks), all managed and probed.  Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wanhooks.lab import Lab

CONFIG = """\
links:
  - {interface: w1}
  - {interface: w2, gateway: 100.64.2.1}
  - {interface: w3, gateway: 100.64.3.1}
health:
  targets: [203.0.113.10]
"""

FLAPPER = """
import sys, time
from pyroute2 import IPRoute
end = time.monotonic() + float(sys.argv[1])
with IPRoute() as ipr:
    w3 = ipr.link_lookup(ifname="w3")[0]
    w1 = ipr.link_lookup(ifname="w1")[0]
    n = 0
    while time.monotonic() < end:
        ipr.link("set", index=w3, state="down")
        ipr.link("set", index=w3, state="up")
        # the manager's default for w1 moves between two metrics: a gateway event each time
        ipr.route("replace", dst="0.0.0.0/0", gateway="100.64.1.1", oif=w1, priority=201 + n % 2)
        if n:
            ipr.route("del", dst="0.0.0.0/0", gateway="100.64.1.1", oif=w1, priority=201 + (n + 1) % 2)
        n += 1
        time.sleep(0.001)
"""


def status(lab: Lab, base: list[str]) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(lab.ns_exec(lab.router, [*base, "status", "--json"]).stdout)
    return doc


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--links", type=int, default=3, help="uplinks on the router (3 or more)")
    args = ap.parse_args()
    with Lab(3) as lab, tempfile.TemporaryDirectory() as tmp:
        lab.set_main_default(1)
        extra = lab.add_uplinks(args.links - 3)  # w5...: in a namespace of the lab's, deleted with it
        cfg = Path(tmp) / "wanhooks.yaml"
        more = "  - {interface: 'w*'}  # the added uplinks\n" if extra else ""
        cfg.write_text(CONFIG.replace("health:", more + "health:", 1))
        base = [sys.executable, "-m", "wanhooks", "-c", str(cfg), "--run-dir", f"{tmp}/run"]
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", lab.router, *base, "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        flapper = None
        try:
            time.sleep(1.5)
            flapper = subprocess.Popen(
                ["ip", "netns", "exec", lab.router, sys.executable, "-c", FLAPPER, "3600"]
            )
            samples = []
            started = time.monotonic()
            targets = [2_000] + [args.events * k // 4 for k in (1, 2, 3, 4)]
            for target in targets:
                while (doc := status(lab, base))["daemon"]["events"] < target:
                    time.sleep(0.5)
                samples.append((time.monotonic() - started, doc["daemon"]))
            flapper.terminate()
            flapper.wait(10)
            flapper = None
            time.sleep(1)
            settled = status(lab, base)
        finally:
            if flapper is not None:
                flapper.kill()
            daemon.terminate()
            daemon.wait(10)
    print("| when | seconds | events | rounds | RSS KiB | open fds | asyncio tasks |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    labels = ["after warm-up", "1/4", "1/2", "3/4", "end"]
    rows = [(label, f"{t:.0f}", d) for label, (t, d) in zip(labels, samples)]
    rows.append(("settled, 1 s later", "-", settled["daemon"]))
    for label, seconds, d in rows:
        cells = [d[k] for k in ("events", "rounds", "rss_kib", "open_fds", "tasks")]
        print(f"| {label} | {seconds} | " + " | ".join(str(x) for x in cells) + " |")
    print(f"\nin sync at the end: {settled['in_sync']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
