"""The kernel mirror against the real kernel (root only): after every kind of change the
kernel makes -- told or silent -- the mirror a round plans from is what a full dump
shows, before the round and after its writes; a corrupted mirror is caught by the next
confirming dump."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from wanhooks.lab import Lab

pytestmark = pytest.mark.kernel
DRIVER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "mirror_driver.py")


class Driver:
    def __init__(self, lab: Lab, run_dir: Path) -> None:
        root = os.path.dirname(os.path.dirname(DRIVER))
        env = {**os.environ, "PYTHONPATH": root}
        argv = ["ip", "netns", "exec", lab.router, sys.executable, DRIVER, str(run_dir)]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
        assert self.ask(None) == "ready"

    def ask(self, command: str | None) -> Any:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        if command is not None:
            self.proc.stdin.write(command + "\n")
            self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        assert line, f"the driver ended (rc {self.proc.poll()})"
        return json.loads(line)

    def agrees(self, after: str) -> None:
        """The mirror equals a full dump now, and again after a round's writes; the round
        read the mirror (one full dump, at start-up, in all)."""
        assert self.ask("check") == [], f"mirror vs kernel after {after}"
        report = self.ask("converge")
        assert report["failed"] == [] and report["full_dumps"] == 1, (after, report)
        assert self.ask("check") == [], f"mirror vs kernel after the round that followed {after}"

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


@pytest.fixture
def driver(lab3: Lab, tmp_path: Path) -> Iterator[Driver]:
    d = Driver(lab3, tmp_path)
    try:
        yield d
    finally:
        d.close()


def test_the_mirror_follows_every_change_the_kernel_makes(lab3: Lab, driver: Driver) -> None:
    lab = lab3
    driver.agrees("start-up")  # the first round writes everything
    nexthops = lab.ip_json(lab.router, "nexthop", "show")
    assert len(nexthops) == 3 * 2 + 2, nexthops  # a nexthop per link and family, and 2 groups

    def router(*args: str) -> None:
        lab.ip(lab.router, *args)

    steps = [
        ("carrier lost on w1", lambda: lab.carrier_off(1)),
        ("carrier back on w1", lambda: lab.carrier_on(1)),
        ("w2 set admin down", lambda: router("link", "set", "w2", "down")),
        ("w2 set admin up", lambda: router("link", "set", "w2", "up")),
        ("w3's IPv4 address removed", lambda: router("addr", "del", "100.64.3.2/24", "dev", "w3")),
        ("w3's IPv4 address back", lambda: router("addr", "add", "100.64.3.2/24", "dev", "w3")),
        ("a default added to main",
         lambda: router("route", "add", "default", "via", "100.64.1.1", "metric", "500")),
        ("main's default replaced",
         lambda: router("route", "replace", "default", "via", "100.64.2.1", "metric", "500")),
        ("main's default deleted", lambda: router("route", "del", "default", "metric", "500")),
        ("a full tunnel's table and rule", lambda: (
            router("route", "add", "default", "dev", "w1", "table", "51820"),
            router("rule", "add", "pref", "900", "lookup", "51820"),
        )),
        ("the tunnel's default deleted", lambda: router("route", "del", "default", "table", "51820")),
        ("the tunnel's rule deleted", lambda: router("rule", "del", "pref", "900")),
        ("an owned rule deleted by another program", lambda: _delete_owned(lab, "rule")),
        ("an owned route deleted by another program", lambda: _delete_owned(lab, "route")),
        ("an owned nexthop deleted by another program", lambda: _delete_owned(lab, "nexthop")),
        ("a managed link created (w9, a veth pair)", lambda: (
            router("link", "add", "w9", "type", "veth", "peer", "name", "w9p"),
            router("addr", "add", "100.64.9.2/24", "dev", "w9"),
            router("link", "set", "w9p", "up"),
            router("link", "set", "w9", "up"),
        )),
        ("the managed link deleted with all it held", lambda: router("link", "del", "w9")),
    ]  # fmt: skip
    for what, act in steps:
        act()
        driver.agrees(what)


def _delete_owned(lab: Lab, what: str) -> None:
    if what == "rule":
        rules = [
            r for r in lab.ip_json(lab.router, "rule", "show") if str(r.get("protocol")) in ("87", "wanhooks")
        ]
        lab.ip(lab.router, "rule", "del", "pref", str(rules[0]["priority"]))
    elif what == "route":
        routes = lab.ip_json(lab.router, "route", "show", "table", "all", "proto", "87")
        route = next(r for r in routes if r.get("dst") == "default")
        lab.ip(lab.router, "route", "del", "default", "table", str(route["table"]))
    else:
        nexthops = [n for n in lab.ip_json(lab.router, "nexthop", "show") if "group" not in n]
        lab.ip(lab.router, "nexthop", "del", "id", str(nexthops[0]["id"]))


def test_a_corrupted_mirror_is_caught_by_the_next_confirming_dump(driver: Driver) -> None:
    driver.agrees("start-up")
    dropped = driver.ask("corrupt")
    assert driver.ask("check") != []  # the mirror is wrong now ...
    found = driver.ask("confirm")  # ... and the confirming dump says how, and mends it
    assert found == [f"rule: kernel only {dropped}"], found
    assert driver.ask("check") == []


def test_a_knob_another_program_changed_is_set_again_once_the_mirror_is_confirmed(
    lab3: Lab, driver: Driver
) -> None:
    """No notification tells of a sysctl: the daemon's kernel remembers what it last read or
    wrote, and reads every knob again at each confirming dump (every 60 s)."""
    lab = lab3
    path = "/proc/sys/net/ipv4/conf/w1/rp_filter"

    def knob() -> str:
        return lab.ns_exec(lab.router, ["cat", path]).stdout.strip()

    driver.agrees("start-up")
    assert knob() == "2"  # loose: replies may come back by another link
    lab.ns_exec(lab.router, ["sh", "-c", f"echo 1 > {path}"])
    assert driver.ask("confirm") == []  # the mirror holds no knobs: nothing differs ...
    assert driver.ask("converge")["failed"] == []
    assert knob() == "2"  # ... but the round after it read the knob again, and set it back
