"""What the daemon costs at the defaults: memory, CPU, and the probes each link carries, idle and busy.

    python bench/idle_cost.py [--links 4] [--window 600] [--cpu-window 120]

Root; for each link count, a lab (namespaces, deleted afterwards) whose
router runs `wanhooks run` with health probes on every link at the defaults
(two targets per link: probes only where traffic proves nothing -- an idle
link gets a heartbeat every 2 s, to each target in turn).  Once it has
settled, two windows of --window seconds:
  idle  no traffic at all: the daemon's CPU time (utime + stime of
        /proc/PID/stat, every thread) and the probes each ISP sees -- echo
        requests arriving from the router and the replies it sends back,
        counted by an nft counter in the ISP's namespace (packets and bytes of
        the IP packets), extrapolated to a day;
  busy  the LAN holds 3 TCP connections per link, each echoing a few bytes
        every 50 ms: the same counts (the traffic is TCP, the probes ICMP).
Then RSS (VmRSS) at the end.

Baselines from the same run:
  memory  a bare interpreter (`python -c 'time.sleep(...)'`) and one that has
          imported what `wanhooks run` imports, then sleeps;
  CPU     the daemon stopped, the same probing done by ping processes: one
          `ping -i 2 -s 8` per link (the same echoes a second, the same
          36-byte packets), in the same lab over --cpu-window seconds;
          wanhooks' CPU is given as a ratio to the pings' total;
  probes  dpinger's and mwan3's defaults, computed, not run (neither is
          packaged for Debian): dpinger sends an echo to its one target every
          0.5 s with no payload (28-byte IPv4 packets; one dpinger per target
          and link); mwan3track checks every 10 s, one 56-byte ping (84-byte
          packets) to the targets in turn until one answers, so one echo per
          link per check while the first target answers.
Needs `ping` from iputils (Debian: iputils-ping).  Prints Markdown tables.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from wanhooks import constants as c
from wanhooks.lab import Lab

TARGETS = ("203.0.113.10", "203.0.113.11")
HEARTBEAT = c.PROBE_HEARTBEAT_S  # an idle link's echo every 2 s (HealthConfig), and the pings'
PING_PAYLOAD = 8  # bytes: wanhooks' echo payload, so both send 36-byte IPv4 packets
ECHO_PORT = 9204
COUNTERS = """\
table inet whcost {
  counter req {}
  counter rep {}
  chain pre { type filter hook prerouting priority -350; policy accept;
    iifname "c" icmp type echo-request counter name req; }
  chain post { type filter hook postrouting priority 350; policy accept;
    oifname "c" icmp type echo-reply counter name rep; }
}
"""
# Computed probe cost per link: (label, echoes per second, bytes of one request packet, IPv4).
COMPUTED = (
    ("dpinger defaults (0.5 s, no payload; one per target)", len(TARGETS) / 0.5, 20 + 8),
    ("mwan3track defaults (10 s, 56-byte payload, first target answers)", 1 / 10, 20 + 8 + 56),
)
IMPORTS = "import wanhooks.cli, wanhooks.service.daemon"


@dataclass(frozen=True)
class Usage:
    cpu_s: float  # CPU seconds used over the window
    elapsed: float
    rss_kib: int  # at the end of the window (summed over the processes)
    requests: dict[int, tuple[int, int]]  # link -> (packets, bytes) of echo requests over the window
    replies: dict[int, tuple[int, int]]

    @property
    def cpu_pct(self) -> float:
        return 100 * self.cpu_s / self.elapsed


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


def counters(lab: Lab) -> dict[int, dict[str, tuple[int, int]]]:
    out = {}
    for i in range(1, lab.links + 1):
        doc = lab.nft_json(lab.isp(i), "list", "table", "inet", "whcost")
        found = {}
        for item in doc["nftables"]:
            if "counter" in item:
                found[item["counter"]["name"]] = (item["counter"]["packets"], item["counter"]["bytes"])
        out[i] = found
    return out


def measure(lab: Lab, pids: list[int], window: float) -> Usage:
    """CPU, RSS and the probes each ISP saw, over `window` seconds."""
    before, cpu0, start = counters(lab), sum(cpu_seconds(p) for p in pids), time.monotonic()
    time.sleep(window)
    after, cpu1, elapsed = counters(lab), sum(cpu_seconds(p) for p in pids), time.monotonic() - start
    rss = sum(rss_kib(p) for p in pids)

    def delta(name: str) -> dict[int, tuple[int, int]]:
        return {
            i: (after[i][name][0] - before[i][name][0], after[i][name][1] - before[i][name][1]) for i in after
        }

    return Usage(cpu1 - cpu0, elapsed, rss, delta("req"), delta("rep"))


def idle_rss(lab: Lab, code: str) -> int:
    """RSS (KiB) of an interpreter running `code`, once it has printed "ready"."""
    argv = [sys.executable, "-c", f"{code}\nimport time\nprint('ready', flush=True)\ntime.sleep(60)"]
    proc = subprocess.Popen(["ip", "netns", "exec", lab.router, *argv], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        return rss_kib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(10)


def group_size(lab: Lab) -> int:
    shown = lab.ip(lab.router, "nexthop", "show", "id", str(c.NH_GROUP_V4), check=False)
    return shown.split(" group ")[1].split()[0].count("/") + 1 if " group " in shown else 0


@dataclass(frozen=True)
class Run:
    idle: Usage  # the daemon, no traffic
    busy: Usage  # the daemon, the LAN's connections on every link
    pings: Usage  # ping processes doing the idle probing, the daemon stopped
    bare_kib: int  # RSS of a bare interpreter
    imported_kib: int  # RSS of an interpreter that imported what the daemon imports


def start_daemon(lab: Lab, tmp: str, links: int) -> tuple[subprocess.Popen[bytes], list[str]]:
    cfg = Path(tmp) / "wanhooks.yaml"
    cfg.write_text(
        "links:\n"
        + "".join(f"  - {{interface: w{i}, gateway: 100.64.{i}.1}}\n" for i in range(1, links + 1))
        + f"health:\n  targets: [{', '.join(TARGETS)}]\n"
    )
    base = [sys.executable, "-m", "wanhooks", "-c", str(cfg), "--run-dir", f"{tmp}/run"]
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", lab.router, *base, "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 15
    while group_size(lab) != links:
        if time.monotonic() > deadline or daemon.poll() is not None:
            daemon.terminate()
            raise RuntimeError("the daemon did not put every link in the group")
        time.sleep(0.1)
    return daemon, base


def lan_traffic(lab: Lab, links: int, seconds: float) -> subprocess.Popen[str]:
    """3 echoing TCP connections per link's worth, from the LAN client, for `seconds`."""
    hold = lab.spawn(lab.lan, "tcp-hold", "--dst", TARGETS[0], "--port", str(ECHO_PORT),
                     "--flows", str(3 * links), "--seconds", str(seconds), "--interval", "0.05")  # fmt: skip
    assert hold.stdout is not None and hold.stdout.readline().strip() == "started"
    return hold


def one_lab(links: int, window: float, cpu_window: float, settle: float) -> Run:
    with Lab(links) as lab, tempfile.TemporaryDirectory() as tmp:
        for i in range(1, links + 1):
            lab.ns_exec(lab.isp(i), ["nft", "-f", "-"], input=COUNTERS)
        bare, imported = idle_rss(lab, "pass"), idle_rss(lab, IMPORTS)
        echo = lab.spawn(
            lab.internet, "tcp-echo", "--port", str(ECHO_PORT), "--seconds", str(3 * window + 600)
        )
        assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
        daemon, base = start_daemon(lab, tmp, links)
        try:
            time.sleep(settle)
            idle = measure(lab, [daemon.pid], window)
            hold = lan_traffic(lab, links, window + 2 * settle)
            time.sleep(settle)
            busy = measure(lab, [daemon.pid], window)
            hold.wait(window + 60)
        finally:
            daemon.terminate()
            daemon.wait(10)
            echo.terminate()
        # The daemon's per-link tables and rules stay (no cleanup): each ping leaves by its link.
        ping = ["ping", "-n", "-q", "-i", f"{HEARTBEAT:g}", "-s", str(PING_PAYLOAD)]
        pings = [
            subprocess.Popen(
                ["ip", "netns", "exec", lab.router, *ping, "-I", f"w{i}", TARGETS[i % len(TARGETS)]],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for i in range(1, links + 1)
        ]
        try:
            time.sleep(settle)
            if any(p.poll() is not None for p in pings):
                raise RuntimeError("a ping exited early")
            theirs = measure(lab, [p.pid for p in pings], cpu_window)
        finally:
            for p in pings:
                p.terminate()
            for p in pings:
                p.wait(10)
        lab.ns_exec(lab.router, [*base, "cleanup"], check=False)
    return Run(idle, busy, theirs, bare, imported)


def per_link(u: Usage) -> tuple[float, float]:
    """Mean over the links: (echo requests per second, bytes per second both ways)."""
    n = len(u.requests)
    reqs = sum(p for p, _ in u.requests.values()) / n / u.elapsed
    both = sum(b for _, b in u.requests.values()) + sum(b for _, b in u.replies.values())
    return reqs, both / n / u.elapsed


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--links", default="4", help="link counts, comma-separated")
    ap.add_argument("--window", type=float, default=600.0, help="seconds measured idle, and again busy")
    ap.add_argument("--cpu-window", type=float, default=120.0, help="seconds the pings are measured")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds after each change, not measured")
    args = ap.parse_args()
    if shutil.which("ping") is None:
        print("idle_cost: needs `ping` (Debian: apt-get install iputils-ping)", file=sys.stderr)
        return 1
    counts = [int(x) for x in args.links.split(",")]
    results = [(n, one_lab(n, args.window, args.cpu_window, args.settle)) for n in counts]
    first = results[0][1]
    print(f"At the defaults, over {args.window:g} s idle and {args.window:g} s with LAN traffic "
          "(RSS at the end; CPU: utime + stime, % of one core; "
          f"the pings over {args.cpu_window:g} s):")  # fmt: skip
    print()
    print("| links | process | RSS MiB | CPU % | CPU vs the pings |")
    print("|---:|---|---:|---:|---:|")
    print(f"| - | bare interpreter, `python -c 'time.sleep()'` | {first.bare_kib / 1024:.1f} | - | - |")
    print(f"| - | interpreter with `{IMPORTS}` | {first.imported_kib / 1024:.1f} | - | - |")
    for n, run in results:
        for label, u in (("idle", run.idle), ("busy", run.busy)):
            ratio = f"{u.cpu_pct / run.pings.cpu_pct:.1f}x" if run.pings.cpu_s > 0 else "-"
            print(f"| {n} | `wanhooks run`, {label} | {u.rss_kib / 1024:.1f} | {u.cpu_pct:.2f} | {ratio} |")
        print(f"| {n} | {n} x `ping -i {HEARTBEAT:g} -s {PING_PAYLOAD}` (together: the idle probing) | "
              f"{run.pings.rss_kib / 1024:.1f} | {run.pings.cpu_pct:.2f} | 1x |")  # fmt: skip
    print()
    print("Probe cost per link (IPv4, measured at the ISP: echo requests in, replies out, extrapolated "
          "to a day; dpinger and mwan3 computed from their defaults):")  # fmt: skip
    print()
    print("| links | prober | echo requests/s | bytes/s both ways | MB/day | vs dpinger |")
    print("|---:|---|---:|---:|---:|---:|")
    dpinger_bps = 2 * COMPUTED[0][1] * COMPUTED[0][2]
    for n, run in results:
        for label, u in (("wanhooks, idle", run.idle), ("wanhooks, busy", run.busy), ("pings", run.pings)):
            rate, bps = per_link(u)
            worst = max(b for _, b in u.requests.values()) * 2 / u.elapsed * 86400 / 1e6
            print(f"| {n} | {label} | {rate:.2f} | {bps:.1f} | {bps * 86400 / 1e6:.2f} (worst link "
                  f"{worst:.2f}) | {bps / dpinger_bps:.2f}x |")  # fmt: skip
    for label, rate, size in COMPUTED:
        bps = 2 * rate * size
        mb = bps * 86400 / 1e6
        print(f"| - | {label} | {rate:.1f} | {bps:.0f} | {mb:.1f} | {bps / dpinger_bps:.1f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
