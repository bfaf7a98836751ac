"""A busy router: how soon a returning or joining link gets its share of new connections.

    python bench/busy_router.py [--rates 20,300,3000] [--after 20] [--hold 60]

Root; builds a 3-link lab (namespaces, deleted afterwards).  Every link has
weight 1 (43 of the resilient group's 128 buckets each), NAT and sticky
connections as configured.  For each rate of new connections, each group
setting and each scenario:

  return   all three links up; w3 loses carrier and leaves the group; 5 s
           later it gets carrier back and rejoins.
  join     w3 is down from the start (the group has never had it); it comes up.

A LAN client opens `rate` new one-datagram UDP flows a second from well
before the change to `after` seconds past it (every flow a 5-tuple conntrack
has not seen); each ISP counts the datagrams it receives, sampled every
0.5 s.  `hold` long-lived NATed TCP connections (an echo every 50 ms), opened
while w3 is out, run through the change: one is *lost* when an echo is late
by a second or more, or it is reset.  Time zero is when w3 is back in the
kernel's group (the member is there, polled every 50 ms).

Settings, all in the same run:

  before #15    idle_timer 5 s, unbalanced_timer 0 (never force), sticky on:
                wanhooks 0.2's group.
  sticky on     the default now: 1 s and 1 s.
  sticky off    the default without sticky connections: 5 s and 30 s.

Prints a Markdown table: w3's share of new flows over the seconds after time
zero (its weight's share is 33 %), when it first reached 90 % of that share,
and the held connections lost.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from wanhooks import constants as c
from wanhooks.lab import SERVER4, Lab

LINKS = "".join(f"  - {{interface: w{i}, gateway: 100.64.{i}.1}}\n" for i in (1, 2, 3))
SHARE = 1 / 3
WARM_S = 8.0  # new flows before the change: every bucket busy, conntrack filled
OUT_S = 5.0  # how long w3 is out, in the return scenario
SAMPLE_S = 0.5


@dataclass(frozen=True)
class Setting:
    name: str
    sticky: bool
    timers: str  # the config's resilient: line, or "" for the default


SETTINGS = (
    Setting("before #15", True, "resilient: {idle_timer: 5, unbalanced_timer: 0}\n"),
    Setting("sticky on (default)", True, ""),
    Setting("sticky off (default)", False, ""),
)


@dataclass(frozen=True)
class Result:
    shares: list[tuple[float, float]]  # (seconds after time zero, w3's share in the half second before)
    lost: int
    held: int
    sent: int

    def share_between(self, start: float, end: float) -> float | None:
        window = [share for at, share in self.shares if start < at <= end]
        return sum(window) / len(window) if window else None

    def reached(self) -> float | None:
        """Seconds until w3 first carried >= 90 % of its share over a whole second."""
        for (at, a), (_, b) in zip(self.shares, self.shares[1:]):
            if at >= 0 and (a + b) / 2 >= 0.9 * SHARE:
                return at + SAMPLE_S
        return None


def in_group(lab: Lab) -> set[str]:
    """The devices in the IPv4 balance group right now."""
    shown = lab.ip_json(lab.router, "nexthop", "show", "id", str(c.NH_GROUP_V4)) if _has_group(lab) else []
    ids = [m["id"] for m in shown[0].get("group", [])] if shown else []
    found = set()
    for nhid in ids:
        one = lab.ip_json(lab.router, "nexthop", "show", "id", str(nhid))
        found.add(one[0].get("dev", ""))
    return found


def _has_group(lab: Lab) -> bool:
    return " group " in lab.ip(lab.router, "nexthop", "show", "id", str(c.NH_GROUP_V4), check=False)


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 15.0) -> float:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.05)
    return time.monotonic()


def one_run(
    lab: Lab, tmp: str, setting: Setting, scenario: str, rate: int, after: float, hold: int
) -> Result:
    cfg = Path(tmp) / "wanhooks.yaml"
    cfg.write_text(
        f"links:\n{LINKS}nat: masquerade\nsticky: {str(setting.sticky).lower()}\n{setting.timers}"
        "health: {enabled: false}\n"
    )
    run_dir = f"{tmp}/run"
    base = [sys.executable, "-m", "wanhooks", "-c", str(cfg), "--run-dir", run_dir]
    if scenario == "join":
        lab.link_down(3)
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", lab.router, *base, "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    churn = holder = None
    try:
        members = {"w1", "w2"} if scenario == "join" else {"w1", "w2", "w3"}
        wait_for(lambda: in_group(lab) == members, f"group {members}")
        seconds = WARM_S + OUT_S + after + 10
        churn = lab.spawn(
            lab.lan, "udp-rate", "--dst", SERVER4, "--rate", str(rate), "--seconds", str(seconds)
        )
        assert churn.stdout is not None and churn.stdout.readline().strip() == "started"
        time.sleep(WARM_S)
        if scenario == "return":
            lab.carrier_off(3)
            wait_for(lambda: "w3" not in in_group(lab), "w3 out")
        holder = lab.spawn(
            lab.lan, "tcp-hold", "--dst", SERVER4, "--flows", str(hold), "--seconds", str(OUT_S + after + 2)
        )
        assert holder.stdout is not None and holder.stdout.readline().strip() == "started"
        if scenario == "return":
            time.sleep(OUT_S)
            lab.carrier_on(3)
        else:
            time.sleep(1.0)
            lab.link_up(3)
        zero = wait_for(lambda: "w3" in in_group(lab), "w3 back")
        shares: list[tuple[float, float]] = []
        last = lab.churn_packets()
        while time.monotonic() - zero < after:
            time.sleep(SAMPLE_S)
            now = lab.churn_packets()
            moved = {i: now[i] - last[i] for i in now}
            total = sum(moved.values())
            shares.append((time.monotonic() - zero, moved[3] / total if total else 0.0))
            last = now
        fates = json.loads(holder.stdout.readline())
        lost = sum(1 for f in fates if f["error"] is not None or f["max_gap"] >= 1.0)
        churn.wait(30)
        assert churn.stdout is not None
        sent = int(json.loads(churn.stdout.readline())["sent"])
        return Result(shares, lost, len(fates), sent)
    finally:
        for proc in (churn, holder, daemon):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(10)
        lab.ns_exec(lab.router, [*base, "cleanup"], check=False)
        lab.carrier_on(3)
        lab.link_up(3)
        for ns in (lab.router, *lab.isps):
            lab.ns_exec(ns, ["conntrack", "-F"], check=False)


def cell(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f} %"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="20,300,3000", help="new connections a second, comma-separated")
    ap.add_argument("--after", type=float, default=20.0, help="seconds watched after w3 is back")
    ap.add_argument("--hold", type=int, default=60, help="long-lived connections held through the change")
    ap.add_argument("--scenarios", default="return,join")
    args = ap.parse_args()
    rates = [int(r) for r in args.rates.split(",")]
    print(
        f"| new conn/s | scenario | setting | w3 share 0-1 s | 1-5 s | 5-15 s | 15-{args.after:g} s "
        f"| reached 90 % of its share after | held connections lost |"
    )
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    with Lab(3, router_nat=False) as lab, tempfile.TemporaryDirectory() as tmp:
        echo = lab.spawn(lab.internet, "tcp-echo", "--port", "9200", "--seconds", "36000")
        assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
        try:
            for rate in rates:
                for scenario in args.scenarios.split(","):
                    for setting in SETTINGS:
                        r = one_run(lab, tmp, setting, scenario, rate, args.after, args.hold)
                        reached = r.reached()
                        print(
                            f"| {rate} | {scenario} | {setting.name} | {cell(r.share_between(0, 1))} "
                            f"| {cell(r.share_between(1, 5))} | {cell(r.share_between(5, 15))} "
                            f"| {cell(r.share_between(15, args.after))} "
                            f"| {'never' if reached is None else f'{reached:.1f} s'} "
                            f"| {r.lost} of {r.held} |",
                            flush=True,
                        )
        finally:
            echo.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
