"""How fast the daemon answers its control socket while it works.

    python bench/control_latency.py [--links 8] [--seconds 20] [--compare REV]

Root; builds an N-link lab (namespaces, deleted afterwards) and runs
`wanhooks run` in its router with NAT and the metrics endpoint on.  A client
sends `ping` over the control socket every 10 ms and times each answer
(connect to reply).  Two windows in the same run:

  idle   the daemon with nothing to do (the baseline);
  busy   at once: a link's carrier flapping every 100 ms and main's default
         gateways moved (rounds, each a netlink dump and writes), SIGHUP
         reloads every 0.5 s alternating two configs that differ in NAT (each
         an `nft` rewrite and a config parse), `status` requests in a loop
         (a whole status document each), and Prometheus scrapes in a loop
         from inside the router namespace.

A ping that gets no answer within 5 s counts as 5 s.  `--compare REV` runs
the same two windows against the code at git revision REV (a worktree made
and removed here) -- e.g. the code before the event loop stopped doing
rounds itself.  Prints Markdown.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wanhooks.lab import Lab  # noqa: E402
from wanhooks.service import control  # noqa: E402

PING_TIMEOUT_S = 5.0
PING_EVERY_S = 0.01
METRICS_PORT = 9737

SCRAPER = """\
import sys, time, urllib.request
end = time.monotonic() + float(sys.argv[1])
n = 0
while time.monotonic() < end:
    try:
        urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[2], timeout=5).read()
        n += 1
    except OSError:
        time.sleep(0.05)
print(n)
"""


def config_text(links: int, nat: bool) -> str:
    lines = ["links:"] + [f"  - {{interface: w{i}, gateway: 100.64.{i}.1}}" for i in range(1, links + 1)]
    lines += [f"nat: {'masquerade' if nat else 'none'}", f"metrics: 127.0.0.1:{METRICS_PORT}"]
    return "\n".join(lines) + "\n"


def ping_once(run_dir: str) -> float:
    """Seconds from connect to answer; PING_TIMEOUT_S for none."""
    started = time.perf_counter()
    try:
        if not control.request(run_dir, {"op": "ping"}, timeout=PING_TIMEOUT_S).get("ok"):
            return PING_TIMEOUT_S
    except control.ControlError:
        return PING_TIMEOUT_S
    return time.perf_counter() - started


def pings(run_dir: str, seconds: float) -> list[float]:
    out = []
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        out.append(ping_once(run_dir))
        time.sleep(PING_EVERY_S)
    return out


class Load:
    """Everything that keeps the daemon busy, each in a thread, until stop()."""

    def __init__(self, lab: Lab, links: int, daemon: subprocess.Popen[bytes], cfg: Path, run: Path) -> None:
        self.lab, self.links, self.daemon, self.cfg, self.run = lab, links, daemon, cfg, run
        self.stopping = threading.Event()
        self.counts = {"flaps": 0, "gateway moves": 0, "reloads": 0, "status requests": 0}
        self.threads = [threading.Thread(target=t) for t in (self._flap, self._reload, self._status)]

    def start(self) -> None:
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stopping.set()
        for t in self.threads:
            t.join()

    def _flap(self) -> None:
        k = 0
        while not self.stopping.wait(0.1):
            (self.lab.carrier_off if k % 2 == 0 else self.lab.carrier_on)(2)
            self.counts["flaps"] += 1
            i = 3 + k % max(1, self.links - 2)
            gateway = f"100.64.{i}.{1 if k % 4 < 2 else 3}"
            self.lab.set_main_default(i, 4, gateway=gateway)
            self.counts["gateway moves"] += 1
            k += 1
        self.lab.carrier_on(2)

    def _reload(self) -> None:
        nat = False
        while not self.stopping.wait(0.5):
            self.cfg.write_text(config_text(self.links, nat))
            nat = not nat
            self.daemon.send_signal(signal.SIGHUP)
            self.counts["reloads"] += 1

    def _status(self) -> None:
        while not self.stopping.is_set():
            try:
                control.request(str(self.run), {"op": "status"}, timeout=30)
                self.counts["status requests"] += 1
            except control.ControlError:
                time.sleep(0.05)


def measure(lab: Lab, links: int, seconds: float, pythonpath: str | None) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="wh-ctl-") as tmp:
        cfg, run = Path(tmp) / "wanhooks.yaml", Path(tmp) / "run"
        cfg.write_text(config_text(links, True))
        env = {**os.environ, **({"PYTHONPATH": pythonpath} if pythonpath else {})}
        argv = ["ip", "netns", "exec", lab.router, sys.executable, "-m", "wanhooks"]
        argv += ["-c", str(cfg), "--run-dir", str(run), "run"]
        log = open(Path(tmp) / "daemon.log", "w")  # noqa: SIM115 - closed below
        daemon = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, cwd="/", env=env)
        try:
            deadline = time.monotonic() + 20
            while ping_once(str(run)) >= PING_TIMEOUT_S or "round 1:" not in Path(log.name).read_text():
                if time.monotonic() > deadline:
                    raise SystemExit("the daemon did not start:\n" + Path(log.name).read_text()[-2000:])
                time.sleep(0.1)
            idle = pings(str(run), seconds)
            scrape = [sys.executable, "-c", SCRAPER, str(seconds + 1), str(METRICS_PORT)]
            scraper = subprocess.Popen(
                ["ip", "netns", "exec", lab.router, *scrape], stdout=subprocess.PIPE, text=True
            )
            load = Load(lab, links, daemon, cfg, run)
            load.start()
            try:
                busy = pings(str(run), seconds)
            finally:
                load.stop()
                scraped = int((scraper.communicate(timeout=60)[0] or "0").strip() or 0)
            rounds = Path(log.name).read_text().count(" changes in ")
        finally:
            daemon.terminate()
            daemon.wait(timeout=20)
            log.close()
    return {"idle": idle, "busy": busy, "load": {**load.counts, "scrapes": scraped, "rounds logged": rounds}}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    timeouts = sum(1 for v in values if v >= PING_TIMEOUT_S)
    figures = f"{statistics.median(ms):.2f} | {pct(ms, 0.99):.2f} | {max(ms):.1f}"
    return f"| {name} | {len(ms)} | {figures} | {timeouts} |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--links", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=20.0, help="each window")
    parser.add_argument("--compare", metavar="REV", help="also measure the code at this git revision")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/control_latency.py: run as root (it builds network namespaces)", file=sys.stderr)
        return 1
    results: list[tuple[str, dict[str, object]]] = []
    with Lab(args.links) as lab:
        for i in range(1, args.links + 1):
            lab.set_main_default(i, 4)
        results.append(("this tree", measure(lab, args.links, args.seconds, None)))
        if args.compare:
            tree = tempfile.mkdtemp(prefix="wh-rev-")
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "add", "--detach", tree, args.compare], check=True
            )
            try:
                results.append((f"at {args.compare}", measure(lab, args.links, args.seconds, tree)))
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", tree], check=True)
    print(f"Control ping latency, {args.links} links, {args.seconds:g} s windows, a ping every 10 ms\n")
    print("| code, window | pings | p50 ms | p99 ms | max ms | unanswered in 5 s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, result in results:
        for window in ("idle", "busy"):
            values = result[window]
            assert isinstance(values, list)
            print(row(f"{name}, {window}", values))
    print()
    for name, result in results:
        load = result["load"]
        assert isinstance(load, dict)
        print(f"Load in the busy window ({name}): " + ", ".join(f"{v} {k}" for k, v in load.items()))
    base = results[0][1]
    idle, busy = base["idle"], base["busy"]
    assert isinstance(idle, list) and isinstance(busy, list)
    print(
        f"\nBusy p99 / idle p99 (this tree): {pct(busy, 0.99) / max(pct(idle, 0.99), 1e-9):.1f}x; "
        f"target p99 <= 50 ms: {'met' if pct(busy, 0.99) <= 0.05 else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
