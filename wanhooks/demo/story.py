"""The demo's story, told on a simulated host (network namespaces made for the run).

A router with three uplinks shaped to 10/20/10 Mbit/s runs `wanhooks run`
as its service would, every link `weight: auto`.  A LAN client keeps opening
bulk uploads, and the weights set themselves from what the links carry.
Then: one ISP goes silent (its modem stays up: no carrier change), it
comes back, a 3G stick is plugged in, and the fibre slows down to 5 Mbit/s.
The live view shows each link's traffic and weight; the summary gives the
measured failover, rejoin and join times, how soon the weights settled and
followed, and each phase's throughput; the chart draws it all.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TextIO

from .. import constants as c
from ..lab import SERVER4, Lab
from . import chart
from .view import View
from .watch import Recorder, Timeline

SPEEDS = {"w1": 10.0, "w2": 20.0, "w3": 10.0, "w4": 5.0}  # Mbit/s each line is shaped to
LABELS = {"w1": "ADSL", "w2": "fibre", "w3": "cable", "w4": "3G"}
SLOWED = 5.0  # Mbit/s the fibre drops to late in the story
TOLERANCE = 0.15  # weight shares within this (relative) of the speeds' count as settled
FLOWS = 24  # the LAN's uploads running at once; each connection sends for CONNECTION_S
CONNECTION_S = 2.0
# a returning or joining link has its share of new connections this long after it is back:
# the resilient group forces buckets over after unbalanced_timer (sticky connections on)
REBALANCE_S = c.RES_TIMERS_STICKY.unbalanced_s + 1.0

CONFIG = """\
# four uplinks, each weighed by the capacity wanhooks measures (no speed typed in)
weight: auto
links:
  - interface: w1          # 10 Mbit/s ADSL
    gateway: [100.64.1.1, "fe80::1"]
  - interface: w2          # 20 Mbit/s fibre
    gateway: [100.64.2.1, "fe80::1"]
  - interface: w3          # 10 Mbit/s cable
    gateway: [100.64.3.1, "fe80::1"]
  - interface: w4          # 5 Mbit/s 3G stick, plugged in later: its gateway comes from DHCP
balance: per-connection
nat: masquerade
health:                    # two addresses per family beyond the ISPs, probed where traffic is not heard
  targets: [203.0.113.10, 203.0.113.11, "fd00:ffff::10", "fd00:ffff::11"]
  hold_down: HOLD          # seconds a recovered link must keep answering before it carries traffic
"""


@dataclass(frozen=True)
class Pace:
    dwell: float  # seconds each phase runs once its change is done
    hold_down: float

    @staticmethod
    def of(short: bool) -> Pace:
        return Pace(dwell=4.0, hold_down=2.0) if short else Pace(dwell=10.0, hold_down=5.0)


@dataclass
class Phase:
    label: str
    start: float  # timeline seconds: once its change has taken effect
    end: float = 0.0
    in_use: tuple[str, ...] = ()  # the links that should carry its traffic
    capacity: float = 0.0  # their lines' Mbit/s, summed


class Story:
    def __init__(self, lab: Lab, workdir: Path, pace: Pace, out: TextIO) -> None:
        self.lab = lab
        self.pace = pace
        self.config = workdir / "wanhooks.yaml"
        self.config.write_text(CONFIG.replace("HOLD", f"{pace.hold_down:g}"))
        self.run_dir = workdir / "run"
        self.log_path = workdir / "daemon.log"
        self.speeds = dict(SPEEDS)  # each line's Mbit/s now (the fibre slows down late on)
        self.timeline = Timeline(tuple(SPEEDS))
        self.watch = Recorder(lab, self.timeline)
        self.view = View(self.timeline, self.speeds, LABELS, self.log_tail, out)
        self.phases: list[Phase] = []
        self.figures: dict[str, float | None] = {}
        self.processes: list[subprocess.Popen[str]] = []
        self._log: TextIO | None = None

    # --- helpers ------------------------------------------------------------------------

    def wanhooks(self, *args: str) -> str:
        argv = [sys.executable, "-m", "wanhooks", "-c", str(self.config), "--run-dir", str(self.run_dir)]
        return self.lab.ns_exec(self.lab.router, [*argv, *args]).stdout

    def say(self, text: str = "") -> None:
        self.view.say(text)

    def step(self, text: str) -> None:
        self.timeline.phase = text
        self.say("")
        self.say(f"== {text}")

    def log_tail(self, n: int) -> list[str]:
        if n <= 0:
            return []
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []
        shown = [line for line in lines if not line.startswith(("kernel:", "trigger:", "round "))]
        return [line[:150] for line in shown[-n:]]

    def background(self, proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
        self.processes.append(proc)
        return proc

    def stop_processes(self) -> None:
        """SIGTERM what the story started, in reverse order (the lab's own clean-up follows)."""
        for proc in reversed(self.processes):
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._log is not None:
            self._log.close()

    def end_phase(self) -> None:
        """The running phase ends now, before the next change is made: its mean is steady state."""
        if self.phases and not self.phases[-1].end:
            self.phases[-1].end = self.timeline.now()

    def begin_phase(self, label: str, start: float, in_use: Sequence[str]) -> None:
        capacity = sum(self.speeds[n] for n in in_use)
        self.phases.append(Phase(label, start, in_use=tuple(in_use), capacity=capacity))

    def settled(self, in_use: Sequence[str]) -> bool:
        """Whether the group's weight shares are within TOLERANCE of the lines' speeds."""
        shares = self.timeline.shares()
        total = sum(self.speeds[n] for n in in_use)
        return set(shares) == set(in_use) and all(
            abs(shares[n] / (self.speeds[n] / total) - 1) <= TOLERANCE for n in in_use
        )

    def wait_settled(self, in_use: Sequence[str], since: float, timeout: float) -> float | None:
        """Seconds from `since` (timeline time) until the weights settle on the speeds; None if not
        within `timeout`."""
        while self.timeline.now() < since + timeout:
            if self.settled(in_use):
                return self.timeline.now() - since
            time.sleep(0.1)
        return None

    def say_shares(self, in_use: Sequence[str]) -> None:
        shares = self.timeline.shares()
        total = sum(self.speeds[n] for n in in_use)
        cells = ", ".join(
            f"{n} {100 * shares.get(n, 0):.0f} % (line {100 * self.speeds[n] / total:.0f} %)" for n in in_use
        )
        self.say(f"    weights now: {cells}")

    # --- the story ------------------------------------------------------------------------

    def unplug_3g(self) -> None:
        """The 3G stick is not there yet: its device down, without addresses (as before a modem dials)."""
        self.lab.ip(self.lab.router, "link", "set", "w4", "down")
        self.lab.ip(self.lab.router, "addr", "flush", "dev", "w4")
        self.view.plugged.discard("w4")

    def plug_3g(self) -> None:
        """What ModemManager and a DHCP client do when the stick connects: up, an address, a default."""
        link = self.lab.link(4)
        self.lab.ip(self.lab.router, "link", "set", "w4", "up")
        self.lab.ip(self.lab.router, "addr", "add", f"{link.router4}/24", "dev", "w4")
        self.lab.ip(
            self.lab.router, "route", "add", "default", "via", link.gateway4, "dev", "w4",
            "metric", "700", "proto", "dhcp",
        )  # fmt: skip
        self.view.plugged.add("w4")

    def start_daemon(self) -> None:
        argv = [
            sys.executable, "-m", "wanhooks", "-c", str(self.config), "--run-dir", str(self.run_dir), "run",
        ]  # fmt: skip
        self._log = open(self.log_path, "w")  # noqa: SIM115 - closed in stop_processes()
        log = self._log
        self.background(
            self.lab.popen(self.lab.router, argv, session=True, stdout=log, stderr=subprocess.STDOUT)
        )

    def start_traffic(self) -> None:
        sink = self.background(
            self.lab.spawn(self.lab.internet, "tcp-sink", "--seconds", "900", session=True)
        )
        assert sink.stdout is not None
        sink.stdout.readline()  # "ready"
        churn = ["tcp-churn", "--dst", SERVER4, "--flows", str(FLOWS), "--seconds", "900"]
        self.background(self.lab.spawn(self.lab.lan, *churn, "--life", str(CONNECTION_S), session=True))

    def split(self, count: int = 3000) -> None:
        """`count` new connections from the LAN, one datagram each: where did each leave?"""
        self.lab.reset_flows()
        self.lab.send_udp_flows(self.lab.lan, SERVER4, count)
        counts = self.lab.flows_per_link(4)
        total = sum(counts.values()) or 1
        shares = self.timeline.shares()
        self.say("    link  asks for  got")
        for i, name in enumerate(("w1", "w2", "w3"), 1):
            self.say(
                f"    {name}    {100 * shares.get(name, 0):7.1f}%  "
                f"{100 * counts[i] / total:5.1f}%  ({counts[i]} connections)"
            )

    def run(self) -> None:
        lab, pace = self.lab, self.pace
        self.step("A host with three uplinks of 10/20/10 Mbit/s (and a 3G stick in a drawer)")
        self.say(f"    namespaces {lab.prefix}-*: a router, an ISP per link, an internet, a LAN client")
        self.say("    wanhooks.yaml:")
        for line in self.config.read_text().splitlines():
            self.say("      " + line)
        self.unplug_3g()

        self.step("wanhooks starts as its service would (`wanhooks run`): routing, NAT, probes")
        self.start_daemon()
        self.watch.start()
        if self.watch.wait_for(["w1", "w2", "w3"], True, 0.0, 20) is None:
            raise RuntimeError(
                f"the daemon did not balance w1, w2 and w3 within 20 s; its log:\n{self.tail()}"
            )
        self.say("    the kernel now holds (ip nexthop show):")
        for line in lab.ip(lab.router, "nexthop", "show").splitlines():
            self.say("      " + line)

        self.step("3000 new connections from the LAN: split by weight (nothing measured yet: alike)")
        self.split()

        self.step(f"The LAN uploads: {FLOWS} at a time, each connection {CONNECTION_S:g} s")
        self.start_traffic()
        self.view.start()
        loaded = self.timeline.mark("uploads start")

        self.step("The weights set themselves: each link's capacity, measured as the uploads fill it")
        three = ("w1", "w2", "w3")
        took = self.wait_settled(three, loaded, 60)
        self.figures["weights_settle_s"] = took
        if took is not None:
            self.timeline.mark(f"weights settled ({took:.0f} s)")
            self.say(
                f"    the weights came within 15 % of the lines' speeds {took:.1f} s after the uploads began"
            )
        self.say_shares(three)
        self.begin_phase("three links", self.timeline.now() + 1.0, three)
        time.sleep(pace.dwell)

        self.step("w2's ISP goes silent (the modem stays up: no carrier change; replies stop)")
        self.end_phase()
        lab.blackhole(2, True)
        silent = self.timeline.mark("w2's ISP silent")
        out = self.watch.wait_for(["w2"], False, silent, 10)
        self.figures["failover_s"] = None if out is None else out - silent
        if out is not None:
            self.timeline.mark(f"w2 out ({out - silent:.2f} s)")
            self.say(f"    w2 left the balance {out - silent:.2f} s after its ISP went silent")
        self.begin_phase("w2's ISP silent", (out or silent) + 1.0, ("w1", "w3"))
        time.sleep(pace.dwell)

        self.step(f"w2's ISP answers again: w2 returns after its hold-down ({pace.hold_down:g} s)")
        self.end_phase()
        lab.blackhole(2, False)
        answered = self.timeline.mark("w2's ISP answers")
        back = self.watch.wait_for(["w2"], True, answered, pace.hold_down + 15)
        self.figures["rejoin_s"] = None if back is None else back - answered
        if back is not None:
            self.timeline.mark(f"w2 back ({back - answered:.1f} s)")
            self.say(
                f"    w2 is back {back - answered:.1f} s after its ISP answered; running connections "
                "stay where they are (sticky), and new ones reach w2 again within "
                f"{c.RES_TIMERS_STICKY.unbalanced_s} s"
            )
        self.begin_phase("w2 back", (back or answered) + REBALANCE_S, ("w1", "w2", "w3"))
        time.sleep(max(pace.dwell, REBALANCE_S + 2.0))

        self.step("A 3G stick is plugged in: w4 comes up with an address and a DHCP default route")
        self.end_phase()
        self.plug_3g()
        plugged = self.timeline.mark("3G plugged in")
        joined = self.watch.wait_for(["w4"], True, plugged, 15)
        self.figures["join_s"] = None if joined is None else joined - plugged
        if joined is not None:
            self.timeline.mark(f"w4 joins ({joined - plugged:.1f} s)")
            self.say(
                f"    w4 joined the balance {joined - plugged:.1f} s after it came up, with no command run"
            )
        self.begin_phase("3G joined", (joined or plugged) + REBALANCE_S, tuple(SPEEDS))
        time.sleep(max(pace.dwell, REBALANCE_S + 2.0))

        self.step(f"The fibre slows down: w2 from {SPEEDS['w2']:g} to {SLOWED:g} Mbit/s (tc, mid-run)")
        self.end_phase()
        lab.shape(2, SLOWED)
        self.speeds["w2"] = SLOWED
        slowed = self.timeline.mark(f"w2 slowed to {SLOWED:g} Mbit/s")
        took = self.wait_settled(tuple(SPEEDS), slowed, 75)
        self.figures["weights_follow_s"] = took
        if took is not None:
            self.timeline.mark(f"weights followed ({took:.0f} s)")
            self.say(f"    the weights followed {took:.1f} s after the line slowed (no more than every 30 s)")
        self.say_shares(tuple(SPEEDS))
        self.begin_phase("w2 slowed", self.timeline.now() + 1.0, tuple(SPEEDS))
        time.sleep(pace.dwell)
        self.end_phase()
        self.view.stop()

        self.step("`wanhooks status` now (from the daemon: the last minute's traffic share per link)")
        for line in self.wanhooks("status").splitlines():
            self.say("    " + line)

    def tail(self) -> str:
        return "\n".join(self.log_tail(20))

    # --- the summary ---------------------------------------------------------------------

    def summary(self) -> list[str]:
        f = self.figures
        lines = ["", "== Summary"]

        def took(key: str, text: str) -> str:
            value = f.get(key)
            return text.format(f"{value:.2f} s") if value is not None else text.format("(did not happen)")

        lines.append(took("failover_s", "    failover: w2 out of the balance {} after its ISP went silent"))
        lines.append(
            took(
                "rejoin_s",
                f"    recovery: w2 back {{}} after its ISP answered (hold-down {self.pace.hold_down:g} s)",
            )
        )
        lines.append(took("join_s", "    new link: w4 (3G) in the balance {} after it came up"))
        lines.append(
            took("weights_settle_s", "    weight: auto: within 15 % of the speeds {} after the uploads began")
        )
        lines.append(
            took("weights_follow_s", f"    w2 slowed to {SLOWED:g} Mbit/s: the weights followed in {{}}")
        )
        names = list(SPEEDS)
        lines.append(
            "    mean Mbit/s sent     " + "".join(f"{n:>7}" for n in names) + "   total  of the lines in use"
        )
        for phase in self.phases:
            mean = self.timeline.mean(phase.start, phase.end)
            if not mean:
                continue
            capacity = phase.capacity
            total = sum(mean.values())
            cells = "".join(f"{mean[n]:7.1f}" if mean[n] >= 0.05 else f"{'-':>7}" for n in names)
            lines.append(
                f"    {phase.label:20} {cells} {total:7.1f}  {capacity:g} ({100 * total / capacity:.0f}%)"
            )
        lines.append(
            f"    active now: {', '.join(sorted(self.timeline.members()))}; "
            f"cleaning up: deleting namespaces {self.lab.prefix}-*"
        )
        return lines


def run(pace: Pace, png: Path | None, out: TextIO) -> int:
    if png is not None and not chart.available():
        print("(no chart: matplotlib is not installed -- pip install 'wanhooks[demo]')", file=out)
        png = None
    with (
        Lab(4, shape_mbit=list(SPEEDS.values()), router_nat=False) as lab,
        tempfile.TemporaryDirectory(prefix="wanhooks-demo-") as tmp,
    ):
        story = Story(lab, Path(tmp), pace, out)
        try:
            story.run()
        finally:  # each step whatever the others do; the lab's own clean-up comes after them all
            interrupted: BaseException | None = None
            for stop in (story.view.stop, story.watch.stop, story.stop_processes):
                try:
                    stop()
                except KeyboardInterrupt as exc:  # Ctrl-C during the clean-up: finish it, then stop
                    interrupted = exc
                except Exception as exc:  # report it, and go on cleaning up
                    print(f"demo: clean-up step {stop.__name__} failed: {exc!r}", file=sys.stderr)
            if interrupted is not None:
                raise interrupted
        for line in story.summary():
            print(line, file=out, flush=True)
    if png is not None:
        chart.draw(story.timeline, SPEEDS, LABELS, png)
        print(f"    chart: {png}", file=out)
    figures = {k: round(v, 3) if v is not None else None for k, v in story.figures.items()}
    print("    " + json.dumps(figures), file=out, flush=True)
    return 0


def _interrupt_once(signum: int, _frame: FrameType | None) -> None:
    """The first Ctrl-C, SIGTERM or hang-up (the terminal closed, ssh dropped) ends the story;
    the clean-up that follows is not interrupted by another."""
    for sig in HANDLED:
        signal.signal(sig, signal.SIG_IGN)
    raise KeyboardInterrupt


# the signals that end the demo in order; SIGHUP too: the daemon and the traffic run in
# sessions of their own, so a closed terminal would leave them running without this
HANDLED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wanhooks.demo", description=__doc__.split("\n")[0])
    ap.add_argument("--short", action="store_true", help="a quick run (CI): 4 s phases, a 2 s hold-down")
    ap.add_argument("--png", type=Path, default=Path("wanhooks-demo.png"), help="where to draw the chart")
    ap.add_argument("--no-png", action="store_true", help="draw no chart")
    args = ap.parse_args(argv)
    for sig in HANDLED:
        signal.signal(sig, _interrupt_once)
    try:
        return run(Pace.of(args.short), None if args.no_png else args.png, sys.stdout)
    except KeyboardInterrupt:
        _reap()
        print("\ninterrupted: the lab's namespaces, processes and files are gone", file=sys.stderr)
        return 130


def _reap() -> None:
    """Collect children that ended but were never waited for: a Ctrl-C inside subprocess.run()
    kills its child and waits only a moment for it.  (All are dead by now: the lab's clean-up
    killed whatever ran in its namespaces.)"""
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-1, os.WNOHANG) != (0, 0):
            pass
