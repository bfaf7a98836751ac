"""Crashes, restarts and the loss of every link, against the real kernel (root only).

- `kill -9` lands at random points of the daemon's reconciliation: a config
  reload that rebuilds a 24-link group (some 150 writes), the daemon slowed
  to a crawl at its first write (SCHED_IDLE beside a busy loop on one CPU)
  and killed a random moment after it; the kernel keeps routing meanwhile, and a
  restarted daemon converges to the plan with nothing orphaned.
- Stopping and starting the daemon (an upgrade) loses no connection.
- When every managed link is lost, the balance route goes and main's own
  default carries traffic; a returning link rejoins.
"""

from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import pytest
from conftest import DaemonProc, Router, wait_for
from conftest import group_members as members

from wanhooks import constants as c
from wanhooks.lab import SERVER4, Lab
from wanhooks.service.control import ControlError, request

pytestmark = [pytest.mark.kernel, pytest.mark.serial]  # timings measured: run alone
Start = Callable[..., DaemonProc]

TRIALS = int(os.environ.get("WANHOOKS_CRASH_TRIALS", "6"))


def link_lines(links: range | tuple[int, ...], weighted: bool = False) -> str:
    weight = ", weight: {}" if weighted else ""
    return "".join(f"  - {{interface: w{i}, gateway: 100.64.{i}.1{weight.format(i + 1)}}}\n" for i in links)


LINKS = 24  # a wide config's start-up round is some 150 writes: kills land inside it
WIDE = link_lines(range(1, LINKS + 1)) + "group: resilient\n"
NARROW = link_lines(range(1, 4), weighted=True) + "group: hash-threshold\n"
HEALTH = "health:\n  enabled: false\n"


@pytest.fixture
def lab3() -> Iterator[object]:
    with Lab(LINKS) as lab:
        yield lab


def owned_tables(lab: Lab) -> set[int]:
    rules = lab.ip(lab.router, "rule", "show")
    return {int(w) for w in rules.split() if w.isdigit() and c.is_owned_table(int(w))}


def start_raw(router: Router) -> subprocess.Popen[bytes]:
    """A daemon, once it answers on its control socket (its signal handlers are set then: a
    SIGHUP before would end it)."""
    argv = [
        "ip", "netns", "exec", router.lab.router, sys.executable, "-m", "wanhooks",
        "-c", str(router.config), "--run-dir", str(router.run_dir), "run",
    ]  # fmt: skip
    daemon = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def answers() -> bool:
        try:
            return request(str(router.run_dir), {"op": "ping"}, timeout=1).get("ok") is True
        except ControlError:
            return False

    wait_for(answers, 10, "the daemon answering")
    return daemon


def busy_cpu0() -> subprocess.Popen[bytes]:
    """A busy loop of normal priority on CPU 0 (kill it to end it): what crawl() runs beside."""
    return subprocess.Popen(["taskset", "-c", "0", "sh", "-c", "while :; do :; done"])


def crawl(pid: int) -> None:
    """Make process `pid` crawl from now on: pinned to CPU 0 at SCHED_IDLE, beside the busy
    loop there, some 0.3 % of a CPU.  Set with two system calls per thread (microseconds), at
    the round's first write: the round of some 150 writes then takes seconds, not
    milliseconds, so a kill at a random moment lands inside it."""
    for task in os.listdir(f"/proc/{pid}/task"):
        os.sched_setaffinity(int(task), {0})
        os.sched_setscheduler(int(task), os.SCHED_IDLE, os.sched_param(0))


def monitor_ready(lab: Lab, monitor: subprocess.Popen[bytes]) -> None:
    """Return once `ip monitor` hears the router's changes: a route of its own, in a table
    wanhooks does not own, added and deleted until it is heard (it may not listen yet)."""
    assert monitor.stdout is not None
    route = ["unreachable", "192.0.2.99/32", "table", "4242"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lab.ip(lab.router, "route", "add", *route)
        lab.ip(lab.router, "route", "del", *route)
        heard = 0
        while heard < 2:  # (the daemon's own changes may come between)
            ready, _, _ = select.select([monitor.stdout], [], [], 0.2)
            if not ready:
                break
            heard += b"192.0.2.99" in monitor.stdout.readline()
        if heard == 2:
            return
    raise AssertionError("ip monitor heard nothing in 10 s")


def test_kill_9_mid_reconcile_keeps_routing_and_a_restart_converges(router: Router) -> None:
    lab = router.lab
    seed = int(os.environ.get("WANHOOKS_CRASH_SEED", random.randrange(1 << 32)))
    rng = random.Random(seed)
    router.write_config("links:\n" + WIDE + HEALTH)
    router.wanhooks("apply")  # the lab has no default route of its own: watch from here on
    watch = lab.spawn(lab.router, "route-watch", "--dst", SERVER4, "--interval", "0.002")
    assert watch.stdout is not None and watch.stdout.readline().strip() == "ready"
    killed_mid_round = 0
    daemon = start_raw(router)
    try:
        for trial in range(TRIALS):
            wide = trial % 2 == 1
            old = router.write_config("links:\n" + (NARROW if wide else WIDE) + HEALTH, name="old.yaml")
            wait_for(
                lambda: json.loads(router.wanhooks("status", "--json").stdout)["in_sync"],
                10,
                f"trial {trial} (seed {seed}): settled on the old config",
            )
            router.write_config("links:\n" + (WIDE if wide else NARROW) + HEALTH)
            monitor = subprocess.Popen(
                ["ip", "netns", "exec", lab.router,
                 "stdbuf", "-oL", "ip", "-o", "monitor", "nexthop", "route", "rule"],  # a line at a time
                stdout=subprocess.PIPE,
            )  # fmt: skip
            hog = busy_cpu0()
            try:
                monitor_ready(lab, monitor)
                daemon.send_signal(signal.SIGHUP)  # reload: the round that rebuilds everything
                assert monitor.stdout is not None
                # its first write to the kernel, then a random moment of the crawling round
                select.select([monitor.stdout], [], [], 30)
                crawl(daemon.pid)
                time.sleep(rng.uniform(0, 0.3))
                daemon.send_signal(signal.SIGKILL)
                daemon.wait(10)
            finally:
                hog.kill()
                hog.wait(10)
                monitor.terminate()
                monitor.wait(10)
            # no daemon now: status compares the kernel with a plan; mid-change is neither plan
            new_done = json.loads(router.wanhooks("status", "--json").stdout)["in_sync"]
            old_kept = json.loads(router.wanhooks("status", "--json", config=old).stdout)["in_sync"]
            killed_mid_round += not new_done and not old_kept
            # a fresh daemon finishes the job (and is the next trial's victim)
            daemon = start_raw(router)
            want = {f"w{i}" for i in range(1, LINKS + 1 if wide else 4)}
            what = f"trial {trial} (seed {seed}): {sorted(want)}"
            wait_for(lambda want=want: set(members(lab)) == want, 10, what)
            wait_for(
                lambda: json.loads(router.wanhooks("status", "--json").stdout)["in_sync"],
                5,
                f"trial {trial} (seed {seed}) in sync",
            )
            present = {int(link["ifindex"]) for link in lab.ip_json(lab.router, "link", "show")}
            orphans = {
                t for t in owned_tables(lab) if t != c.TABLE_BALANCE and t - c.TABLE_BASE not in present
            }
            assert orphans == set(), f"trial {trial} (seed {seed})"
            group = lab.ip(lab.router, "nexthop", "show", "id", str(c.NH_GROUP_V4))
            assert ("resilient" in group) == wide, group
            assert "2000000002" not in lab.ip(lab.router, "nexthop", "show")  # the spare is gone
    finally:
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(10)
        watch.terminate()
    report = json.loads(watch.communicate(timeout=10)[0].splitlines()[-1])
    print(f"\ncrash seed {seed}: {TRIALS} kills, {killed_mid_round} left the kernel mid-change; {report}")
    assert report["lookups"] > 100 and report["gaps"] == [], f"seed {seed}: moments without a route"
    assert killed_mid_round > 0, (
        f"seed {seed}: no kill landed before the round finished; the test proved nothing"
    )


CONFIG3 = link_lines((1, 2, 3))


def test_a_restart_while_connections_flow_loses_none(router: Router, daemon_factory: Start) -> None:
    lab = router.lab
    router.write_config("links:\n" + CONFIG3)
    daemon = daemon_factory()
    wait_for(lambda: set(members(lab)) == {"w1", "w2", "w3"}, 5, "all three links")
    echo = lab.spawn(lab.internet, "tcp-echo", "--port", "9200", "--seconds", "60")
    assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
    hold = lab.spawn(lab.lan, "tcp-hold", "--dst", SERVER4, "--flows", "30", "--seconds", "6")
    assert hold.stdout is not None and hold.stdout.readline().strip() == "started"
    for _ in range(2):  # stop (the package is replaced) and start again, twice
        time.sleep(1)
        assert daemon.stop() == 0
        assert set(members(lab)) == {"w1", "w2", "w3"}  # stopping leaves the routing in place
        daemon = daemon_factory()
    results = json.loads(hold.stdout.readline())
    echo.terminate()
    broken = [r for r in results if r["error"] is not None or r["max_gap"] >= 1.0]
    assert broken == [] and all(r["echoes"] > 50 for r in results), broken


def test_when_every_link_is_lost_mains_default_carries_on_and_a_link_rejoins(
    router: Router, daemon_factory: Start
) -> None:
    lab = router.lab
    router.write_config(
        "links:\n" + "".join(f"  - {{interface: w{i}, gateway: 100.64.{i}.1}}\n" for i in (1, 2))
    )
    lab.set_main_default(3)  # the network manager's own default, by a link wanhooks does not manage
    daemon = daemon_factory()
    wait_for(lambda: set(members(lab)) == {"w1", "w2"}, 5, "both links")
    assert "dev w1" in lab.ip(lab.router, "route", "get", SERVER4) or "dev w2" in lab.ip(
        lab.router, "route", "get", SERVER4
    )
    lab.carrier_off(1)
    lab.carrier_off(2)
    wait_for(lambda: "dev w3" in lab.ip(lab.router, "route", "get", SERVER4), 3, "main's default in use")
    # (the kernel skips the dead nexthops at once; the daemon's round follows in milliseconds)
    wait_for(
        lambda: f"lookup {c.TABLE_BALANCE}" not in lab.ip(lab.router, "rule", "show"), 3, "no balance rule"
    )
    assert lab.ping(lab.router, SERVER4)
    lab.carrier_on(2)
    wait_for(lambda: set(members(lab)) == {"w2"}, 5, "w2 back in the group")
    rules = lab.ip(lab.router, "rule", "show")
    table = lab.ip(lab.router, "route", "show", "table", "all")
    assert "dev w2" in lab.ip(lab.router, "route", "get", SERVER4), (rules, table, daemon.text()[-3000:])
