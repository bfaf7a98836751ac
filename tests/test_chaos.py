"""Chaos: a seeded random sequence of faults against the running daemon (root only).

After every event the test waits for the kernel's balance group to hold
exactly the links that *are* healthy (the truth the test keeps: admin up,
carrier, address, a gateway, an ISP that answers), for the daemon to say it
is in sync, and for nothing wanhooks owns to outlive its link.  Meanwhile a
sampler in the router asks the kernel for a route to the internet every
2 ms; it must never find none while some link has been healthy for 2 s.

    WANHOOKS_CHAOS_EVENTS=1000 WANHOOKS_CHAOS_SEED=42 pytest tests/test_chaos.py

replays a long run (CI runs a short one with a fresh seed, printed on failure).
Every ISP drops foreign source addresses, the network manager's default for
w3 is renewed in the background (a DHCP renew every 0.3 s), and the router's
reverse-path filter runs loose and strict.  A third run has 60 more uplinks
(64 links managed; Lab.add_uplinks, no probes on them): the same faults, the
same truth, with every round planning and the kernel mirror following 64.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from conftest import DaemonProc, Router
from conftest import group_members as members

from wanhooks import constants as c
from wanhooks.lab import Lab

pytestmark = [pytest.mark.kernel, pytest.mark.serial]  # timings measured: run alone
Start = Callable[..., DaemonProc]

EVENTS = int(os.environ.get("WANHOOKS_CHAOS_EVENTS", "30"))
SETTLE_S = 8.0  # detection (~0.7 s) + up_after + hold_down, with room for a loaded machine
GRACE_S = 2.0  # a link healthy this long must be usable: no moment without a route then
W3_GATEWAYS = ("100.64.3.1", "100.64.3.254")

CONFIG = """\
links:
  - {interface: w1, gateway: 100.64.1.1}
  - {interface: w2, gateway: 100.64.2.1, weight: WEIGHT}
  - {interface: w3}
  - {interface: w9, gateway: 100.64.9.1}
health:
  targets: [203.0.113.10, 203.0.113.11]
  hold_down: 0.5
"""
MANY = 60  # the 64-link run's added uplinks, u10...: beyond them nothing answers, so unprobed
MANY_ENTRY = "  - {interface: 'u*', health: {enabled: false}}\n"


@pytest.fixture
def lab3() -> Iterator[object]:
    with Lab(3, antispoof=True) as lab:
        yield lab


@dataclass
class Link:
    present: bool = True
    admin: bool = True
    carrier: bool = True
    addr: bool = True
    black: bool = False
    healthy_since: float | None = field(default_factory=time.monotonic)

    @property
    def healthy(self) -> bool:
        return self.present and self.admin and self.carrier and self.addr and not self.black


class World:
    """The lab, changed one event at a time, and the truth about it."""

    def __init__(self, router: Router, rng: random.Random, config: str, static: set[str]) -> None:
        self.router = router
        self.config = config  # with WEIGHT for w2's weight
        self.static = static  # links no event touches: always in the group
        self.lab = router.lab
        self.rng = rng
        self.links = {name: Link() for name in ("w1", "w2", "w3")}
        self.links["w9"] = Link(present=False, healthy_since=None)
        self.w3_gateway = W3_GATEWAYS[0]
        self.weight = 2
        self.lock = threading.RLock()  # one event at a time, and the DHCP renew never in the middle of one
        self.history: list[str] = []
        self.lab.ns_exec(self.lab.isp(3), ["ip", "addr", "add", f"{W3_GATEWAYS[1]}/24", "dev", "c"])
        self.renew_w3()

    # --- the network manager's part -----------------------------------------------------

    def renew_w3(self) -> None:
        with self.lock:
            w3 = self.links["w3"]
            if w3.admin and w3.addr:
                self.lab.set_main_default(3, gateway=self.w3_gateway)

    def _i(self, name: str) -> int:
        return int(name[1:])

    # --- events -------------------------------------------------------------------------

    def candidates(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = [("reload", "")]
        for name, link in self.links.items():
            if name == "w9":
                out.append(("delete" if link.present else "create", name))
                if not link.present:
                    continue
            out += [("admin", name), ("carrier", name), ("addr", name)]
            if name != "w9":
                out.append(("black", name))
        if self.links["w3"].admin and self.links["w3"].addr:
            out.append(("gateway", "w3"))
        return out

    def would_leave_a_healthy_link(self, kind: str, name: str) -> bool:
        """Faults are never allowed to take every link at once (that is another test)."""
        if kind in ("reload", "gateway", "create"):
            return True
        after = {n: link.healthy for n, link in self.links.items()}
        link = self.links[name]
        flips = {"admin": link.admin, "carrier": link.carrier, "addr": link.addr, "black": not link.black}
        if kind == "delete" or flips.get(kind, False):
            after[name] = False
        return any(after.values())

    def step(self) -> str:
        while True:
            kind, name = self.rng.choice(self.candidates())
            if self.would_leave_a_healthy_link(kind, name):
                break
        was = {n: link.healthy for n, link in self.links.items()}
        with self.lock:
            getattr(self, f"_{kind}")(name)
        now = time.monotonic()
        for n, link in self.links.items():
            if link.healthy and not was[n]:
                link.healthy_since = now
            elif not link.healthy:
                link.healthy_since = None
        text = f"{kind} {name}".strip()
        self.history.append(text)
        return text

    def _admin(self, name: str) -> None:
        link = self.links[name]
        link.admin = not link.admin
        self.lab.ip(self.lab.router, "link", "set", name, "up" if link.admin else "down")
        if link.admin and name == "w3":
            self.renew_w3()  # a device going down loses its routes; the manager puts them back

    def _carrier(self, name: str) -> None:
        link = self.links[name]
        link.carrier = not link.carrier
        if name == "w9":
            self.lab.ip(self.lab.isp(1), "link", "set", "x9", "up" if link.carrier else "down")
        elif link.carrier:
            self.lab.carrier_on(self._i(name))
        else:
            self.lab.carrier_off(self._i(name))

    def _addr(self, name: str) -> None:
        link = self.links[name]
        link.addr = not link.addr
        self.lab.ip(
            self.lab.router,
            "addr",
            "add" if link.addr else "del",
            f"100.64.{self._i(name)}.2/24",
            "dev",
            name,
        )
        if link.addr and name == "w3":
            self.renew_w3()

    def _black(self, name: str) -> None:
        link = self.links[name]
        link.black = not link.black
        self.lab.blackhole(self._i(name), link.black)

    def _gateway(self, _name: str) -> None:
        self.w3_gateway = W3_GATEWAYS[1] if self.w3_gateway == W3_GATEWAYS[0] else W3_GATEWAYS[0]
        self.renew_w3()

    def _create(self, _name: str) -> None:
        lab = self.lab
        lab.r(["ip", "link", "add", "w9", "type", "veth", "peer", "name", "x9", "netns", lab.isp(1)])
        lab.r(["ip", "addr", "add", "100.64.9.2/24", "dev", "w9"])
        lab.r(["ip", "link", "set", "w9", "up"])
        lab.ns_exec(lab.isp(1), ["ip", "addr", "add", "100.64.9.1/24", "dev", "x9"])
        lab.ns_exec(lab.isp(1), ["ip", "link", "set", "x9", "up"])
        self.links["w9"] = Link()

    def _delete(self, _name: str) -> None:
        self.lab.r(["ip", "link", "del", "w9"])
        self.links["w9"] = Link(present=False, healthy_since=None)

    def _reload(self, _name: str) -> None:
        self.weight = 3 if self.weight == 2 else 2
        self.router.write_config(self.config.replace("WEIGHT", str(self.weight)))
        self.daemon.signal(signal.SIGHUP)

    daemon: DaemonProc

    # --- checks ---------------------------------------------------------------------------

    def expected(self) -> set[str]:
        return {name for name, link in self.links.items() if link.healthy} | self.static

    def settled(self) -> bool:
        if set(members(self.lab)) != self.expected():
            return False
        status = json.loads(self.router.wanhooks("status", "--json").stdout)
        if not status["in_sync"]:
            return False
        weights: dict[str, int] = {m["link"]: m["weight"] for m in status["balance"]["ipv4"]["members"]}
        return weights.get("w2", self.weight) == self.weight

    def orphans(self) -> list[str]:
        """Rules naming, and tables of wanhooks' routes, for a link that is gone."""
        present = {int(link["ifindex"]) for link in self.lab.ip_json(self.lab.router, "link", "show")}
        rules = self.lab.ip(self.lab.router, "rule", "show")
        routes = self.lab.ip(self.lab.router, "route", "show", "table", "all", "proto", "87")
        words = (rules + " " + routes).split()
        tables = {int(word) for word in words if word.isdigit() and c.is_owned_table(int(word))}
        return [
            f"table {t}"
            for t in tables
            if t not in (c.TABLE_BALANCE,) and t - c.TABLE_BASE not in present and t < c.TABLE_TIER_BASE
        ]


@pytest.mark.parametrize(("rp_filter", "added"), [("loose", 0), ("strict", 0), ("loose", MANY)])
def test_a_random_sequence_of_faults_always_settles_to_the_truth(
    router: Router, daemon_factory: Start, rp_filter: str, added: int
) -> None:
    lab = router.lab
    seed = int(os.environ.get("WANHOOKS_CHAOS_SEED", random.randrange(1 << 32)))
    static = set(lab.add_uplinks(added, first=10, prefix="u"))
    w9 = "  - {interface: w9, gateway: 100.64.9.1}\n"
    config = CONFIG.replace(w9, w9 + MANY_ENTRY) if added else CONFIG
    world = World(router, random.Random(seed), config, static)
    if rp_filter == "strict":
        lab.r(["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"])
    router.write_config(config.replace("WEIGHT", "2"))
    world.daemon = daemon_factory()
    watch = lab.spawn(lab.router, "route-watch", "--dst", "203.0.113.10", "--interval", "0.002")
    assert watch.stdout is not None and watch.stdout.readline().strip() == "ready"
    stop = threading.Event()

    renew_errors: list[str] = []

    def renew() -> None:  # the network manager renewing w3's lease: the same route again
        while not stop.wait(0.3):
            try:
                world.renew_w3()
            except Exception as exc:
                renew_errors.append(str(exc))

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    healthy_log: list[tuple[float, float | None]] = []  # (time, earliest healthy_since) per event
    where = f"seed {seed} (replay: WANHOOKS_CHAOS_SEED={seed} WANHOOKS_CHAOS_EVENTS={EVENTS})"
    try:
        deadline = time.monotonic() + SETTLE_S
        while not world.settled():
            assert time.monotonic() < deadline, f"{where}: never settled at the start"
            time.sleep(0.02)
        for n in range(EVENTS):
            event = world.step()
            since = [link.healthy_since for link in world.links.values() if link.healthy_since is not None]
            healthy_log.append((time.monotonic(), min(since) if since else None))
            deadline = time.monotonic() + SETTLE_S
            while not world.settled():
                if time.monotonic() > deadline:
                    tail = world.daemon.text()[-3000:]
                    pytest.fail(
                        f"{where}: event {n} ({event}) did not settle in {SETTLE_S} s: group "
                        f"{sorted(members(lab))}, truth {sorted(world.expected())}; "
                        f"history {world.history[-8:]}\n{tail}"
                    )
                time.sleep(0.02)
            assert world.orphans() == [], f"{where}: after event {n} ({event})"
    finally:
        stop.set()
        renewer.join(5)
        watch.terminate()
    assert renew_errors == [], renew_errors[:3]
    report = json.loads(watch.communicate(timeout=10)[0].splitlines()[-1])
    kinds = Counter(event.split()[0] for event in world.history)
    print(
        f"\nchaos {rp_filter}, {4 + added} links, {where}: {dict(kinds)}; {report['lookups']} lookups, "
        f"gaps {report['gaps']}"
    )
    assert report["lookups"] > 100
    for start, end in report["gaps"]:
        # the healthy link with the longest record at the last event before the gap
        before = [since for t, since in healthy_log if t <= start]
        longest = before[-1] if before else None
        assert longest is None or start - longest < GRACE_S, (
            f"{where}: no route for {1000 * (end - start):.0f} ms while a link had been healthy "
            f"for {start - longest:.1f} s; history {world.history}"
        )
