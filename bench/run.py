"""Run every benchmark of the project and write one Markdown report.

    python bench/run.py [--quick] [--only NAME[,NAME]] [--out bench/RESULTS.md]

Root (most benchmarks build network namespaces; each deletes its own).  The
benchmarks run one after another, each as its own process with its full-run
arguments (--quick: much smaller ones, a smoke run of a few minutes whose
figures mean little; written to bench/RESULTS-quick.md unless --out says
otherwise, so the committed bench/RESULTS.md keeps the last full run).  The
report has the machine, then one section per
benchmark: the exact command, what it measures and against which baseline,
its tables as it printed them, and its wall time.  A benchmark that fails
does not stop the others: its section says so, with the end of its stderr,
and this command exits 1 at the end.  The report is written atomically
(a temporary file renamed over --out): a failed or interrupted run leaves
the previous report whole.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
STDERR_TAIL = 30  # lines of a failed benchmark's stderr kept in the report


@dataclass(frozen=True)
class Bench:
    name: str  # the script is bench/<name>.py
    title: str
    full: tuple[str, ...]
    quick: tuple[str, ...]
    about: str


BENCHES = (
    Bench(
        "reconcile_scaling",
        "Reconcile time",
        ("--rounds", "20"),
        ("--links", "1,16", "--rounds", "3"),
        "Root; one namespace for the links (each with its default in main, as DHCP leaves it), one for "
        "their peers. First table: a round after one change -- a link's carrier lost, its weight "
        "changed, its gateway moved in main, nothing -- from its start to its last write, by the "
        "daemon's kernel (reads a mirror kept by notifications, kernel/mirrored.py) and, as the "
        "baseline, by a full-dump round (snapshot of links, addresses, main defaults and rules, dump of "
        "all it owns): each kernel in processes of its own, in turn; a carrier change timed from the "
        "kernel's link message, as the daemon's round starts on it. Second table: *initial* (empty "
        "kernel to the full "
        "plan) and *reweight* by full-dump rounds against only the changed operations, one `ip` process "
        "each, as a shell script would, without looking at the kernel first.",
    ),
    Bench(
        "event_latency",
        "Event latency",
        ("--events", "200", "--baseline", "30", "--idle", "20"),
        ("--events", "10", "--baseline", "3", "--idle", "2"),
        "Root; a 4-link lab, `wanhooks run` in its router. Latency from the kernel's notification of "
        "the event to the kernel's notification of the group change that answers it, both seen by one "
        "monitor in the router namespace. Baseline in the same run: the daemon stopped, each event "
        "answered by spawning `wanhooks apply` the moment it is seen (a dispatcher hook with no daemon; "
        "a real NetworkManager adds seconds of its own before its dispatcher runs).",
    ),
    Bench(
        "prefix_latency",
        "Delegated prefixes followed",
        ("--events", "200", "--valid", "3"),
        ("--events", "10", "--valid", "2"),
        "Root; a 2-link lab, `wanhooks run` in its router with `delegated_to: lan0` on w1. Each event "
        "renumbers lan0 as a DHCPv6-PD client does (an address from a new prefix, valid 3 s; the last "
        "one's removed): from the kernel's address notification to the rule's, one monitor in the "
        "router namespace. Baseline in the same run: an address added to w1 itself and its source "
        "rule (the same path: an address event, a round, a rule). Then each prefix that left the LAN: "
        "from the end of its valid lifetime to its rule's deletion. Target: 1 s.",
    ),
    Bench(
        "control_latency",
        "Control socket latency while the daemon works",
        ("--links", "8", "--seconds", "20"),
        ("--links", "4", "--seconds", "3"),
        "Root; an 8-link lab, `wanhooks run` in its router with NAT and metrics. A `ping` over the "
        "control socket every 10 ms, timed from connect to answer. Baseline in the same run: the idle "
        "daemon. Busy: a link's carrier flapping every 100 ms, main's gateways moving, a SIGHUP reload "
        "every 0.5 s alternating NAT on and off (an `nft` rewrite each), `status` requests and "
        "Prometheus scrapes in loops. Target: busy p99 <= 50 ms.",
    ),
    Bench(
        "config_load",
        "Loading a config with thousands of delegated prefixes",
        ("--prefixes", "3000"),
        ("--prefixes", "300", "--runs", "1"),
        "No root. parse_config for 3,000 non-overlapping delegated /64s over 1, 3 and 30 links (the "
        "overlap check was pairwise: 10.8 s at 3,000 before #13). Baseline in the same run: the same "
        "links with no prefixes.",
    ),
    Bench(
        "detection",
        "Detecting a silently dead ISP",
        ("--trials", "200", "--hours", "24", "--lab", "20", "--lab-busy", "20", "--lab-metered", "10"),
        ("--trials", "20", "--hours", "1", "--lab", "2", "--lab-busy", "2", "--lab-metered", "1"),
        "Simulated time: each monitor's documented algorithm at its shipped defaults (see the script's "
        "docstring) -- wanhooks, generic-balancer.sh (2011), mwan3, lsm, dpinger -- against silent "
        "failures, then simulated hours at 10 % loss in each direction (19 % of echoes lost) counting "
        "the failovers that should not happen; RTT 10-60 ms. On a 200-400 ms cellular link every "
        "monitor's detection grows by about one RTT. wanhooks idle: a heartbeat every 2 s to each "
        "target in turn; busy: the link's users send a packet every 20 ms (every 100 ms in the "
        "simulated hours) and no probe is needed while their answers are heard; steady: heartbeat: 0, "
        "the 0.1 release's defaults. The metered row is a steady tier-2 link at the default 5 MB/day "
        "budget. The last lines are wanhooks measured for real in the namespace lab, idle and with 30 "
        "echoing TCP connections from a LAN client over the links; \"with the router's connections on "
        "it\": a tier-2 link, three TCP connections from its address sending every 50 ms.",
    ),
    Bench(
        "remap",
        "Flows remapped when a link leaves and returns",
        ("--flows", "10000"),
        ("--flows", "1000"),
        "Root; a 3-link lab (weights 1:2:1), UDP flows from a LAN client with fixed source ports, "
        "recorded by each ISP. Each link in turn loses carrier (then `wanhooks apply`) and comes back "
        "(`wanhooks apply`, then the same flows after the resilient group's idle timer); for each "
        "group kind the share of flows that changed link. The baseline is the ideal minimum: when a "
        "link leaves only its own flows must move, when it returns only those that land on it; "
        "anything above moves established connections for nothing.",
    ),
    Bench(
        "split_accuracy",
        "Split of new connections vs weights",
        (),
        ("--flows", "1000"),
        "Root; a 3-link lab, weights 1:2:1, per-connection, resilient group, counted at each ISP; "
        "one-datagram UDP flows from the router and from a LAN client, both families. The last "
        "column is what chance alone allows at that count (the largest link's binomial standard "
        "deviation): an error within about three of it is sampling noise, not a skewed hash.",
    ),
    Bench(
        "throughput",
        "Aggregate throughput vs the links' calibrated rates",
        ("--trials", "5"),
        ("--trials", "1", "--seconds", "2", "--warmup", "1", "--hash-rounds", "5"),
        "Root; 3 links shaped with tbf both ways at 20/40/20 Mbit/s, weights 1:2:1; 16 TCP uploads "
        "from a LAN client, slow start then a measured window, rates as each ISP received them. "
        "*Calibrated* (the baseline): wanhooks with that link alone, in the same trial. Target: "
        "balanced >= 98 % of the calibrated sum. Per-connection balancing cannot split one "
        "connection: with 16 connections a link can draw none (about 2 % of rounds by chance alone; "
        "a link with no connection then contributes nothing). Successive trials are not independent: "
        "the kernel picks consecutive ephemeral ports for the same pair of addresses, so neighbouring "
        "trials often repeat a distribution.",
    ),
    Bench(
        "sticky_survival",
        "Forwarded connections through group changes",
        ("--trials", "3"),
        ("--flows", "10", "--cycles", "1", "--trials", "1"),
        "Root; 3 links (weights 1:2:1), every ISP drops foreign sources, wanhooks masquerades. "
        "Long-lived forwarded TCP connections (an echo every 50 ms) while w3 is drained and enabled "
        "several times. Survived: never reset, no echo late by 1 s or more. The baseline is the same "
        "run with sticky connections off: a connection moved to another link is killed by the "
        "kernel's NAT (`nf_nat_oif_changed`) and the server resets the fresh mapping.",
    ),
    Bench(
        "busy_router",
        "A busy router: a returning or joining link's share of new connections",
        ("--after", "35"),
        ("--rates", "300", "--after", "5", "--scenarios", "return", "--hold", "10"),
        "Root; a 3-link lab, every link weight 1, NAT on. A LAN client opens 20, 300 or 3,000 new "
        "one-datagram UDP flows a second; w3 leaves and returns (carrier), or joins for the first "
        "time, while 60 long-lived NATed TCP connections opened while it was out keep echoing. w3's "
        "share of the new flows as the ISPs count them, from the moment it is back in the kernel's "
        "group. Baseline in the same run: the group timers wanhooks had before (idle 5 s, never force). "
        "Target: its weight's share (33 %) within 15 s, no connection lost with sticky on.",
    ),
    Bench(
        "auto_weights",
        "weight: auto on links of 5, 20 and 10 Mbit/s",
        (),
        ("--converge", "30", "--reshaped", "30", "--idle", "5", "--handset", "20"),
        "Root; a 3-link lab shaped both ways with tbf; 12 bulk uploads and 12 bulk downloads (each "
        "connection 5 s, then the next) and 4 workers of short connections. Every link `weight: auto`, "
        "no hint: when the kernel's weight shares settle within 15 % of 5:20:10, then w2 reshaped 20 -> "
        "5 Mbit/s mid-run, then 60 s idle. Baseline in the same run: the same load with hand-set "
        "weights 1:4:2. Targets: settled within 120 s, followed within 60 s, no change more often than "
        "every 60 s, none while idle, throughput >= 95 % of the hand-set run's.",
    ),
    Bench(
        "idle_cost",
        "Memory, CPU and the probes' cost, idle and busy",
        ("--links", "4", "--window", "600", "--cpu-window", "120"),
        ("--links", "2", "--window", "4", "--cpu-window", "2", "--settle", "1"),
        "Root; `wanhooks run` with health probes at the defaults (two targets per link; probes only "
        "where traffic proves nothing: an idle link's heartbeat every 2 s, to each target in turn), "
        "ten minutes idle, then ten minutes with 3 echoing TCP connections per link from a LAN client; "
        "the probes counted at each ISP and extrapolated to a day. Baselines from the same run: the "
        "RSS of a bare interpreter and of one that has only imported wanhooks; the CPU of the same "
        "idle probing done by one `ping -i 2` per link in the same lab; and the probe traffic of "
        "dpinger's and mwan3's defaults, computed from them (neither is run).",
    ),
    Bench(
        "soak",
        "Soak",
        ("--events", "200000"),
        ("--events", "5000"),
        "Root; a 3-link lab, `wanhooks run` with probes on every link; a flapper takes w3 down and "
        "up and moves w1's main default between two metrics as fast as the kernel takes it. The "
        "daemon's own figures from `status --json`, after a 2,000-event warm-up and at each quarter. "
        "The baseline is the daemon's own first sample: RSS, file descriptors and tasks should level "
        "off, not grow with the events.",
    ),
)


@dataclass(frozen=True)
class Outcome:
    bench: Bench
    argv: tuple[str, ...]
    seconds: float
    returncode: int | None  # None: killed at the time limit
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


def display(bench: Bench, args: tuple[str, ...]) -> str:
    return " ".join(["python", f"bench/{bench.name}.py", *args])


def run_one(bench: Bench, args: tuple[str, ...], timeout: float) -> Outcome:
    argv = (sys.executable, str(HERE / f"{bench.name}.py"), *args)
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    )
    start = time.monotonic()
    proc = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        # SIGINT first: the benchmark unwinds and its lab deletes its namespaces; then its whole group.
        proc.send_signal(signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, err = proc.communicate()
        err += f"\n(killed after the time limit of {timeout:g} s)"
        code = None
    return Outcome(bench, args, time.monotonic() - start, code, out, err)


def machine() -> str:
    mem_kib = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kib = int(line.split()[1])
    uname = os.uname()
    commit = git("rev-parse", "--short", "HEAD") or "unknown"
    # the report itself does not count: a run's previous report is often not committed yet
    if git("status", "--porcelain", "--untracked-files=no", "--", ".", ":!bench/RESULTS*.md"):
        commit += " with uncommitted changes"
    return (
        f"{os.cpu_count()} cores, {mem_kib / 2**20:.0f} GiB, {uname.sysname} {uname.release} "
        f"({uname.machine}), Python {platform.python_version()}, git {commit}"
    )


def git(*args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return done.stdout.strip() if done.returncode == 0 else ""


def section(o: Outcome) -> str:
    lines = [f"## {o.bench.title}", "", f"`{display(o.bench, o.argv)}`", "", o.bench.about, ""]
    if o.ok:
        lines += [o.stdout.strip(), ""]
    else:
        why = "timed out" if o.returncode is None else f"exit status {o.returncode}"
        tail = "\n".join(o.stderr.rstrip().splitlines()[-STDERR_TAIL:]) or "(no stderr)"
        lines += [f"**Failed** ({why}). The end of its stderr:", "", "```", tail, "```", ""]
        if o.stdout.strip():
            lines += ["What it printed before:", "", o.stdout.strip(), ""]
    lines += [f"Wall time: {o.seconds:.0f} s.", ""]
    return "\n".join(lines)


def report(outcomes: list[Outcome], quick: bool, started: datetime.datetime, total: float) -> str:
    head = [
        "# Benchmark results",
        "",
        f"Written by `python bench/run.py{' --quick' if quick else ''}` on "
        f"{started:%Y-%m-%d %H:%M} UTC, in {total / 60:.0f} min: {machine()}.",
        "Each figure is shown next to its baseline from the same run. These machines are noisy: "
        "compare figures within one table, not across runs.",
        "",
    ]
    if quick:
        head += ["**Quick smoke run**: tiny samples, the figures mean little.", ""]
    failed = [o.bench.name for o in outcomes if not o.ok]
    if failed:
        head += [f"**Failed**: {', '.join(failed)}.", ""]
    return "\n".join(head + [section(o) for o in outcomes]).rstrip() + "\n"


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main() -> int:
    ap = argparse.ArgumentParser(description="Run every benchmark; write one Markdown report.")
    ap.add_argument("--quick", action="store_true", help="tiny arguments: a smoke run of a few minutes")
    ap.add_argument("--only", help="comma-separated benchmark names: " + ",".join(b.name for b in BENCHES))
    ap.add_argument(
        "--out",
        type=Path,
        help="default: bench/RESULTS.md (--quick: bench/RESULTS-quick.md; --only: bench/RESULTS-partial.md)",
    )
    ap.add_argument("--timeout", type=float, help="seconds per benchmark (default 7200, --quick 900)")
    args = ap.parse_args()
    chosen = list(BENCHES)
    if args.only:
        names = args.only.split(",")
        unknown = sorted(set(names) - {b.name for b in BENCHES})
        if unknown:
            ap.error(f"--only: no benchmark named {', '.join(unknown)}")
        chosen = [b for b in BENCHES if b.name in names]
    if os.geteuid() != 0:
        ap.error("run as root: the benchmarks build network namespaces")
    # only a whole full run replaces the committed report; a smoke run or a subset goes beside it
    default = "RESULTS-quick.md" if args.quick else "RESULTS-partial.md" if args.only else "RESULTS.md"
    out = args.out or HERE / default
    timeout = args.timeout or (900.0 if args.quick else 7200.0)
    started, t0 = datetime.datetime.now(datetime.timezone.utc), time.monotonic()
    outcomes = []
    for n, bench in enumerate(chosen, 1):
        bench_args = bench.quick if args.quick else bench.full
        print(f"[{n}/{len(chosen)}] {display(bench, bench_args)}", file=sys.stderr, flush=True)
        outcome = run_one(bench, bench_args, timeout)
        status = "ok" if outcome.ok else "FAILED"
        print(
            f"[{n}/{len(chosen)}] {bench.name}: {status} in {outcome.seconds:.0f} s",
            file=sys.stderr,
            flush=True,
        )
        outcomes.append(outcome)
    write_atomically(out, report(outcomes, args.quick, started, time.monotonic() - t0))
    print(f"report: {out}", file=sys.stderr)
    return 0 if all(o.ok for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
