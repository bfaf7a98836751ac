"""Detection of a silently dead ISP, and false failovers under loss: wanhooks vs the field.

    python bench/detection.py [--trials 200] [--hours 24] [--lab 20] [--lab-metered 10]

Simulated time (seconds of CPU for days of probing), one model per
monitor, each following its documented algorithm at its shipped defaults:

  wanhooks   this project's health machine itself (wanhooks/health/machine.py), fed by
             a simulated prober: 2 targets, an echo to each every 0.1 s
  seed       generic-balancer.sh (2011): every 30 s one ping per target,
             `ping -W 3`; down when every target fails
  mwan3      OpenWrt mwan3track: every 10 s, targets pinged one after
             another (timeout 4 s each), down after 5 failed checks
  lsm        Debian's lsm sample config: a ping every 1 s (timeout 1 s);
             down at 7 successive losses or 15 of the last 100
  dpinger    pfSense: a probe every 0.5 s, loss over a 60 s window, alarm at 20 %
  metered    wanhooks on a metered / tier-2 link at the default 5 MB a day:
             a heartbeat round every 3.1 s, a burst at 0.1 s when one is missed

Failure: at a uniformly random moment the ISP drops everything.  Loss:
each echo lost with p = 0.19 (10 % each way); RTT 10-60 ms (--rtt).  No
monitor can tell an echo is lost before about one RTT has passed, so on a
200-400 ms cellular link every detection time grows by about that much.  With
--lab N, wanhooks is also measured for real in the namespace lab (N
silent failures).  Prints Markdown.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import statistics
import subprocess
import sys
from collections import deque
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wanhooks.health import machine as health

T = [ipaddress.ip_address("203.0.113.10"), ipaddress.ip_address("203.0.113.11")]
ECHO_LOSS = 1 - 0.9**2
RTT = [0.01, 0.06]  # seconds, uniform: a wired broadband link (--rtt to change)

# A monitor: (rng, dead_at or None, horizon seconds) -> times it declared the link down.
Monitor = Callable[[random.Random, float | None, float], list[float]]


def answered(rng: random.Random, t: float, dead_at: float | None, loss: float) -> float | None:
    """RTT of an echo sent at t, or None when it is lost."""
    if dead_at is not None and t >= dead_at:
        return None
    if rng.random() < loss:
        return None
    return rng.uniform(*RTT)


def wanhooks_monitor(
    rng: random.Random,
    dead_at: float | None,
    horizon: float,
    loss: float = 0.0,
    params: health.Params | None = None,
    spent: list[int] | None = None,
) -> list[float]:
    """The health machine fed as the prober feeds it: a round every interval (the fast
    one while suspected), evaluated every half fast interval."""
    params = params or health.Params(targets=tuple(T))
    h = health.start(params, 0.0, trusted=True)
    downs: list[float] = []
    replies: list[tuple[float, int, float]] = []
    t = 0.0
    tick = params.burst_interval / 2
    while t < horizon:
        step = params.burst_interval if h.suspected_since is not None else params.interval
        for i, _target in enumerate(T):
            h = health.sent(h, t)
            rtt = answered(rng, t, dead_at, loss)
            if rtt is not None:
                replies.append((t + rtt, i, rtt))
        replies.sort()
        now = t
        while now < t + step - 1e-9:
            now += tick
            while replies and replies[0][0] < now:
                at, i, rtt = replies.pop(0)
                h = health.replied(h, T[i], rtt, at)
            before = h.state
            h = health.evaluate(h, now)
            if h.state is health.State.DOWN and before is not health.State.DOWN:
                downs.append(now)
            if h.suspected_since is not None and step > params.burst_interval:
                break  # suspected mid-round: a fast round at once
        if downs and dead_at is not None:
            break
        t = now
    if spent is not None:
        spent.append(h.sent)
    return downs


def metered_monitor(
    rng: random.Random, dead_at: float | None, horizon: float, loss: float = 0.0
) -> list[float]:
    """wanhooks on a metered / tier-2 link, idle: the default 5 MB a day budget."""
    params = health.within_budget(health.Params(targets=tuple(T)), 4, 5.0)
    return wanhooks_monitor(rng, dead_at, horizon, loss, params)


def seed_monitor(rng: random.Random, dead_at: float | None, horizon: float, loss: float = 0.0) -> list[float]:
    downs, t = [], rng.uniform(0, 30)
    while t < horizon:
        ok = False
        for _target in T:  # one after another, -W 3
            rtt = answered(rng, t, dead_at, loss)
            if rtt is not None:
                ok = True
                t += rtt
                break
            t += 3.0
        if not ok:
            downs.append(t)
            if dead_at is not None:
                return downs
        t += 30.0
    return downs


def mwan3_monitor(
    rng: random.Random, dead_at: float | None, horizon: float, loss: float = 0.0
) -> list[float]:
    downs, t, failed = [], rng.uniform(0, 10), 0
    while t < horizon:
        ok = False
        for _target in T:
            rtt = answered(rng, t, dead_at, loss)
            if rtt is not None:
                ok = True
                t += rtt
                break
            t += 4.0
        failed = 0 if ok else failed + 1
        if failed == 5:
            downs.append(t)
            failed = 0
            if dead_at is not None:
                return downs
        t += 10.0
    return downs


def lsm_monitor(rng: random.Random, dead_at: float | None, horizon: float, loss: float = 0.0) -> list[float]:
    downs: list[float] = []
    t, run = rng.uniform(0, 1), 0
    window: deque[bool] = deque(maxlen=100)
    up = True
    while t < horizon:
        lost = answered(rng, t, dead_at, loss) is None
        window.append(lost)
        run = run + 1 if lost else 0
        if up and (run >= 7 or sum(window) >= 15):
            downs.append(t + 1.0)
            up = False
            if dead_at is not None:
                return downs
        elif not up and run == 0 and sum(list(window)[-10:]) == 0:
            up = True
        t += 1.0
    return downs


def dpinger_monitor(
    rng: random.Random, dead_at: float | None, horizon: float, loss: float = 0.0
) -> list[float]:
    downs: list[float] = []
    t = rng.uniform(0, 0.5)
    window: deque[tuple[float, bool]] = deque()
    up = True
    while t < horizon:
        window.append((t, answered(rng, t, dead_at, loss) is None))
        while window and window[0][0] < t - 60:
            window.popleft()
        # a probe counts as lost once its 2 s loss interval has passed
        settled = [lost for at, lost in window if at <= t - 2.0]
        share = sum(settled) / len(settled) if settled else 0.0
        if up and share >= 0.2:
            downs.append(t)
            up = False
            if dead_at is not None:
                return downs
        elif not up and share < 0.1:
            up = True
        t += 0.5
    return downs


MONITORS: dict[str, tuple[Monitor, float]] = {
    # name: (model, bytes per second of probing on the wire, echo + reply, IPv4)
    "wanhooks (defaults)": (wanhooks_monitor, 2 * 10 * 2 * 36),
    # steady rounds only; the bursts at 10 % loss are measured and printed below the table
    "wanhooks (metered / tier 2, idle)": (
        metered_monitor,
        2 * 2 * 36 / health.within_budget(health.Params(targets=tuple(T)), 4, 5.0).interval,
    ),
    "generic-balancer.sh (2011)": (seed_monitor, 1 / 30 * 2 * 84),
    "mwan3 (OpenWrt)": (mwan3_monitor, 1 / 10 * 2 * 84),
    "lsm (Debian)": (lsm_monitor, 1 * 2 * 84),
    "dpinger (pfSense)": (dpinger_monitor, 2 * 2 * 84),
}


def detection(model: Monitor, trials: int) -> list[float]:
    out = []
    for n in range(trials):
        rng = random.Random(n)
        dead_at = 300.0 + rng.uniform(0, 30)
        downs = model(rng, dead_at, dead_at + 600)
        out.append(downs[0] - dead_at if downs else float("inf"))
    return out


def false_failovers(model: Monitor, hours: float) -> int:
    return len(model(random.Random(99), None, hours * 3600, ECHO_LOSS))  # type: ignore[call-arg]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


LAB_LINKS = "".join(f"  - {{interface: w{i}, gateway: 100.64.{i}.1}}\n" for i in (1, 2, 3))
LAB_HEALTH = "health:\n  targets: [203.0.113.10, 203.0.113.11]\n  hold_down: 1\n"


def start_daemon(lab: object, tmp: str, config: str) -> tuple[subprocess.Popen[bytes], str]:
    """`wanhooks run` in the lab's router with this config; (process, run dir)."""
    from wanhooks.lab import Lab

    assert isinstance(lab, Lab)
    cfg = Path(tmp) / "wanhooks.yaml"
    cfg.write_text(config)
    run_dir = f"{tmp}/run"
    argv = [sys.executable, "-m", "wanhooks", "-c", str(cfg), "--run-dir", run_dir, "run"]
    daemon = subprocess.Popen(["ip", "netns", "exec", lab.router, *argv], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)  # fmt: skip
    return daemon, run_dir


def lab_detection(trials: int) -> list[float]:
    import tempfile
    import time

    from wanhooks import constants as c
    from wanhooks.lab import Lab

    def members(lab: Lab) -> set[str]:
        nexthops = {n["id"]: n for n in lab.ip_json(lab.router, "nexthop", "show")}
        group = nexthops.get(c.NH_GROUP_V4)
        return {nexthops[m["id"]]["dev"] for m in group["group"]} if group else set()

    out = []
    with Lab(3) as lab, tempfile.TemporaryDirectory() as tmp:
        daemon, _run_dir = start_daemon(lab, tmp, "links:\n" + LAB_LINKS + LAB_HEALTH)
        try:
            while members(lab) != {"w1", "w2", "w3"}:
                time.sleep(0.05)
            for n in range(trials):
                link = 1 + n % 3
                lab.blackhole(link, True)
                t0 = time.monotonic()
                while f"w{link}" in members(lab):
                    time.sleep(0.005)
                out.append(time.monotonic() - t0)
                lab.blackhole(link, False)
                while f"w{link}" not in members(lab):
                    time.sleep(0.05)
        finally:
            daemon.terminate()
            daemon.wait(10)
    return out


def lab_metered(trials: int) -> tuple[list[float], list[float]]:
    """A tier-2 (budgeted) link in the lab: how long from its ISP going silent to the
    daemon judging it down, with the router's own connections on it, and idle."""
    import tempfile
    import time

    from wanhooks.lab import Lab
    from wanhooks.service import control

    def state(run_dir: str) -> str:
        doc = control.request(run_dir, {"op": "status"})["status"]
        w3 = next(link for link in doc["links"] if link["name"] == "w3")
        return str((w3["ipv4"]["health"] or {}).get("state"))

    def judged(run_dir: str, want: str, limit: float) -> float:
        t0 = time.monotonic()
        while state(run_dir) != want:
            if time.monotonic() - t0 > limit:
                raise RuntimeError(f"w3 not {want} after {limit} s")
            time.sleep(0.005)
        return time.monotonic() - t0

    busy, idle = [], []
    with Lab(3) as lab, tempfile.TemporaryDirectory() as tmp:
        tiered = LAB_LINKS.replace("gateway: 100.64.3.1}", "gateway: 100.64.3.1, tier: 2}")
        daemon, run_dir = start_daemon(lab, tmp, "links:\n" + tiered + LAB_HEALTH)
        echo = lab.spawn(lab.internet, "tcp-echo", "--port", "9201", "--seconds", str(30 * trials + 60))
        try:
            assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
            time.sleep(0.5)
            judged(run_dir, "up", 15)
            for n in range(2 * trials):
                traffic = n % 2 == 0
                hold = None
                if traffic:
                    hold = lab.spawn(lab.router, "tcp-hold", "--dst", "203.0.113.10", "--port", "9201",
                                     "--flows", "3", "--seconds", "4", "--bind", "100.64.3.2")  # fmt: skip
                    assert hold.stdout is not None and hold.stdout.readline().strip() == "started"
                    time.sleep(1.0 + (n % 7) / 7)  # a random-ish moment within the heartbeat
                else:
                    time.sleep(3.0 + (n % 7) / 2)
                lab.blackhole(3, True)
                (busy if traffic else idle).append(judged(run_dir, "down", 15))
                if hold is not None:
                    hold.wait(20)
                lab.blackhole(3, False)
                judged(run_dir, "up", 15)
        finally:
            echo.terminate()
            daemon.terminate()
            daemon.wait(10)
    return busy, idle


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--lab", type=int, default=0, help="also measure wanhooks in the lab (root)")
    ap.add_argument("--rtt", default="0.01,0.06", help="RTT range, seconds: low,high")
    ap.add_argument("--lab-metered", type=int, default=0, help="metered-link trials in the lab (root)")
    args = ap.parse_args()
    RTT[:] = [float(x) for x in args.rtt.split(",")]
    rows = {}
    for name, (model, rate) in MONITORS.items():
        times = detection(model, args.trials)
        rows[name] = (times, false_failovers(model, args.hours), rate)
    ours = statistics.median(rows["wanhooks (defaults)"][0])
    print(f"| monitor | detection median s | p95 s | vs wanhooks | false failovers in {args.hours:g} h "
          "at 10 % loss each way | probe bytes/day (2 targets, IPv4) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for name, (times, false, rate) in rows.items():
        med = statistics.median(times)
        print(f"| {name} | {med:.2f} | {pct(times, 0.95):.2f} | {med / ours:.0f}x | {false} | "
              f"{rate * 86400 / 1e6:.1f} MB |")  # fmt: skip
    spent: list[int] = []
    budgeted = health.within_budget(health.Params(targets=tuple(T)), 4, 5.0)
    wanhooks_monitor(random.Random(98), None, args.hours * 3600, ECHO_LOSS, budgeted, spent)
    per_day = spent[0] * 2 * 36 * 24 / args.hours  # an echo and its reply, 36 bytes each
    print()
    print(f"wanhooks metered: {spent[0]} echoes in {args.hours:g} h at 10 % loss each way, bursts included: "
          f"{per_day / 1e6:.2f} MB/day of the 5 MB budget.")  # fmt: skip
    if args.lab:
        real = lab_detection(args.lab)
        print()
        med, p95 = statistics.median(real), pct(real, 0.95)
        print(f"wanhooks measured in the lab ({args.lab} silent ISP failures, 3 links, defaults): "
              f"median {med:.3f} s, p95 {p95:.3f} s, max {max(real):.3f} s.")  # fmt: skip
    if args.lab_metered:
        busy, idle = lab_metered(args.lab_metered)
        print()
        print(f"wanhooks metered (tier 2, 5 MB/day) in the lab, {args.lab_metered} failures each: "
              f"with the router's connections on it judged down in median {statistics.median(busy):.3f} s "
              f"(max {max(busy):.3f} s); idle median {statistics.median(idle):.3f} s "
              f"(max {max(idle):.3f} s).")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
