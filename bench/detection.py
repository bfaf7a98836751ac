"""Detection of a silently dead ISP, and false failovers under loss: wanhooks vs the field.

    python bench/detection.py [--trials 200] [--hours 24] [--lab 20] [--lab-busy 20] [--lab-metered 10]

Simulated time (seconds of CPU for days of probing), one model per
monitor, each following its documented algorithm at its shipped defaults:

  wanhooks   this project's health machine itself (wanhooks/health/machine.py), fed by
             its simulated prober and passive watch (wanhooks/health/simulation.py):
             2 targets; idle: a heartbeat every 2 s to each in turn; busy: the link's
             users send a packet every 20 ms, answered like an echo, and no probe is
             needed while answers are heard; steady (heartbeat: 0, the 0.1 release's
             defaults): an echo to each target every 0.1 s
  seed       generic-balancer.sh (2011): every 30 s one ping per target,
             `ping -W 3`; down when every target fails
  mwan3      OpenWrt mwan3track: every 10 s, targets pinged one after
             another (timeout 4 s each), down after 5 failed checks
  lsm        Debian's lsm sample config: a ping every 1 s (timeout 1 s);
             down at 7 successive losses or 15 of the last 100
  dpinger    pfSense: a probe every 0.5 s, loss over a 60 s window, alarm at 20 %
  metered    wanhooks on a metered / tier-2 link at the default 5 MB a day, steady
             (heartbeat: 0): a round every 3.1 s, a burst at 0.1 s when one is missed

Failure: at a uniformly random moment the ISP drops everything.  Loss:
each echo lost with p = 0.19 (10 % each way); RTT 10-60 ms (--rtt).  No
monitor can tell an echo is lost before about one RTT has passed, so on a
200-400 ms cellular link every detection time grows by about that much.  With
--lab N and --lab-busy N, wanhooks is also measured for real in the namespace
lab (N silent failures, idle and under LAN traffic).  Prints Markdown.
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
from wanhooks.health.simulation import simulate
from wanhooks.plan.verdicts import HealthState

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
    spent: list[float] | None = None,
    traffic: float | None = None,
) -> list[float]:
    """The health machine fed as the prober and the passive watch feed it (simulation.py).
    A failure is simulated from 20-24 s before it (the machine's state is the same by then)."""
    params = params or health.Params(targets=tuple(T))
    # (from a moment drawn over two heartbeats before, so the failure falls anywhere in one)
    beat = max(params.heartbeat, params.interval)
    start = 0.0 if dead_at is None else max(0.0, dead_at - 20.0 - rng.uniform(0, 2 * beat))
    end = horizon if dead_at is None else min(horizon, dead_at + 20.0)
    h = health.start(params, start, trusted=True)
    h, transitions = simulate(
        h, start, end - start, loss=loss, dead_after=dead_at, rtt=(RTT[0], RTT[1]),
        seed=rng.randrange(1 << 30), traffic=traffic,
    )  # fmt: skip
    if spent is not None:  # bytes a day on the wire: echoes and answers
        spent.append((h.sent + h.received) * health.ECHO_BYTES[4] / 2 * 86400 / (end - start))
    return [t.at for t in transitions if t.new is HealthState.DOWN]


def busy_monitor(rng: random.Random, dead_at: float | None, horizon: float, loss: float = 0.0) -> list[float]:
    """wanhooks at the defaults on a link whose users send a packet every 20 ms."""
    return wanhooks_monitor(rng, dead_at, horizon, loss, traffic=0.02)


def steady_monitor(
    rng: random.Random, dead_at: float | None, horizon: float, loss: float = 0.0
) -> list[float]:
    """wanhooks with heartbeat: 0: every target every 0.1 s, whatever the traffic."""
    return wanhooks_monitor(rng, dead_at, horizon, loss, health.Params(targets=tuple(T), heartbeat=0))


def metered_monitor(
    rng: random.Random, dead_at: float | None, horizon: float, loss: float = 0.0
) -> list[float]:
    """wanhooks on a metered / tier-2 link, idle, steady: the default 5 MB a day budget."""
    params = health.within_budget(health.Params(targets=tuple(T), heartbeat=0), 4, 5.0)
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


MONITORS: dict[str, tuple[Monitor, float | None]] = {
    # name: (model, bytes per second of probing on the wire, echo + reply, IPv4; None:
    # wanhooks' own, measured in the simulated hours at 10 % loss, bursts included)
    "wanhooks (defaults, idle)": (wanhooks_monitor, None),
    "wanhooks (defaults, busy)": (busy_monitor, None),
    "wanhooks (heartbeat: 0, steady)": (steady_monitor, None),
    "wanhooks (metered / tier 2, steady, idle)": (metered_monitor, None),
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


def false_failovers(model: Monitor, hours: float) -> tuple[int, float | None]:
    """Failovers in `hours` of 10 % loss each way, and (wanhooks) the probe bytes a day spent."""
    spent: list[float] = []
    if model in (wanhooks_monitor, busy_monitor, steady_monitor, metered_monitor):
        params = {
            wanhooks_monitor: None,
            busy_monitor: None,
            steady_monitor: health.Params(targets=tuple(T), heartbeat=0),
            metered_monitor: health.within_budget(health.Params(targets=tuple(T), heartbeat=0), 4, 5.0),
        }[model]
        traffic = 0.1 if model is busy_monitor else None  # a packet every 0.1 s: days in a minute
        downs = wanhooks_monitor(random.Random(99), None, hours * 3600, ECHO_LOSS, params, spent, traffic)
        return len(downs), spent[0]
    return len(model(random.Random(99), None, hours * 3600, ECHO_LOSS)), None  # type: ignore[call-arg]


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


def lab_detection(trials: int, *, busy: bool = False) -> list[float]:
    """Silent ISP failures in the lab, each link in turn, at a moment spread over the
    heartbeat; busy: the LAN holds 30 echoing TCP connections over the links meanwhile."""
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
        echo = lab.spawn(lab.internet, "tcp-echo", "--port", "9202", "--seconds", str(20 * trials + 60))
        try:
            assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
            while members(lab) != {"w1", "w2", "w3"}:
                time.sleep(0.05)
            for n in range(trials):
                link = 1 + n % 3
                hold = None
                if busy:
                    hold = lab.spawn(lab.lan, "tcp-hold", "--dst", "203.0.113.10", "--port", "9202",
                                     "--flows", "30", "--seconds", "4")  # fmt: skip
                    assert hold.stdout is not None and hold.stdout.readline().strip() == "started"
                time.sleep(1.0 + 2.0 * ((n * 7) % 10) / 10)  # a moment spread over the heartbeat
                lab.blackhole(link, True)
                t0 = time.monotonic()
                while f"w{link}" in members(lab):
                    time.sleep(0.005)
                out.append(time.monotonic() - t0)
                if hold is not None:
                    hold.wait(20)
                lab.blackhole(link, False)
                while f"w{link}" not in members(lab):
                    time.sleep(0.05)
        finally:
            echo.terminate()
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
    ap.add_argument("--lab", type=int, default=0, help="idle silent failures measured in the lab (root)")
    ap.add_argument("--lab-busy", type=int, default=0, help="the same under LAN traffic (root)")
    ap.add_argument("--rtt", default="0.01,0.06", help="RTT range, seconds: low,high")
    ap.add_argument("--lab-metered", type=int, default=0, help="metered-link trials in the lab (root)")
    args = ap.parse_args()
    RTT[:] = [float(x) for x in args.rtt.split(",")]
    rows = {}
    for name, (model, rate) in MONITORS.items():
        times = detection(model, args.trials)
        false, spent = false_failovers(model, args.hours)
        per_day = spent if rate is None else rate * 86400
        assert per_day is not None
        rows[name] = (times, false, per_day)
    ours = statistics.median(rows["wanhooks (defaults, idle)"][0])
    print(f"| monitor | detection median s | p95 s | vs wanhooks idle | false failovers in {args.hours:g} h "
          "at 10 % loss each way | probe bytes/day (2 targets, IPv4) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|")
    for name, (times, false, per_day) in rows.items():
        med = statistics.median(times)
        print(f"| {name} | {med:.2f} | {pct(times, 0.95):.2f} | {med / ours:.1f}x | {false} | "
              f"{per_day / 1e6:.2f} MB |")  # fmt: skip
    print()
    print(
        "wanhooks' bytes a day are measured in the simulated hours at 10 % loss each way, bursts "
        "included (busy: a packet every 0.1 s there); the others' are computed from their defaults."
    )
    for busy, trials in ((False, args.lab), (True, args.lab_busy)):
        if trials:
            real = lab_detection(trials, busy=busy)
            print()
            med, p95 = statistics.median(real), pct(real, 0.95)
            how = "under LAN traffic (30 TCP flows echoing every 50 ms)" if busy else "idle"
            print(f"wanhooks measured in the lab ({trials} silent ISP failures, 3 links, defaults, {how}): "
                  f"median {med:.3f} s, p95 {p95:.3f} s, max {max(real):.3f} s.")  # fmt: skip
    if args.lab_metered:
        busy_times, idle = lab_metered(args.lab_metered)
        print()
        print(f"wanhooks metered (tier 2, 5 MB/day) in the lab, {args.lab_metered} failures each: "
              f"with the router's connections on it judged down in median "
              f"{statistics.median(busy_times):.3f} s (max {max(busy_times):.3f} s); idle median "
              f"{statistics.median(idle):.3f} s (max {max(idle):.3f} s).")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
