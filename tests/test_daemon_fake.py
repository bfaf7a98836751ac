"""A whole daemon, no root: its real loop, restore policy, probers' state machines, control
socket and status document, against the fake kernel, with events fed by a scripted source and
probe answers by a scripted transport (service/surroundings.py).  What the kernel ends up
holding is read from the fake, as the lab tests read the real one."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import re
import shutil
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import lab_kernel

from wanhooks import constants as c
from wanhooks.events import Event, KernelChanged
from wanhooks.health import machine
from wanhooks.health.machine import Kind, ProbeKey
from wanhooks.health.passive_watch import PassiveWatcher
from wanhooks.health.probes import Reply
from wanhooks.kernel.fake import FAKE_PORTID, FakeKernel
from wanhooks.model import Address, IPAddress, NexthopGroup
from wanhooks.service.control import request
from wanhooks.service.daemon import Daemon
from wanhooks.service.surroundings import Post, PublishDevices, Source, Surroundings

CONFIG = """\
links:
  - {interface: w1, gateway: 100.64.1.1}
  - {interface: w2, gateway: 100.64.2.1, weight: 2}
health:
  targets: [203.0.113.10]
  interval: 0.05
  down_after: 0.3
  up_after: 0.1
  hold_down: 0
hooks_dir: /nonexistent/hooks.d
"""
DEADLINE_S = 10.0  # how long a scenario step may take before the test fails (not a target)


class ScriptedSource:
    """Events a test feeds, posted as a source posts them (rtnetlink's, here)."""

    def __init__(self, post: Post) -> None:
        self.post = post
        self.queue: asyncio.Queue[Event] = asyncio.Queue()

    async def run(self) -> None:
        while True:
            self.post(await self.queue.get())


class ScriptedEcho:
    """A probe transport that answers every echo at once unless the test silenced the link."""

    def __init__(
        self, script: Script, key: ProbeKey, loop: asyncio.AbstractEventLoop, on_reply: Reply
    ) -> None:
        self.script, self.key, self.loop, self.on_reply = script, key, loop, on_reply
        self.extra_tx = 0

    def send(self, target: IPAddress, seq: int) -> None:
        self.script.sent[self.key.link] = self.script.sent.get(self.key.link, 0) + 1
        if self.key.link not in self.script.silent:
            self.loop.call_soon(self.on_reply, target, seq)

    def close(self) -> None:
        pass


@dataclasses.dataclass
class Script:
    kernel: FakeKernel
    source: ScriptedSource | None = None
    silent: set[str] = dataclasses.field(default_factory=set)  # links whose probes go unanswered
    sent: dict[str, int] = dataclasses.field(default_factory=dict)  # probes sent, by link
    flushed: list[tuple[IPAddress, ...]] = dataclasses.field(default_factory=list)  # ended connections
    portid: int = 0  # what the daemon told its sources its own writes come from

    def surroundings(self) -> Surroundings:
        def sources(post: Post, _publish: PublishDevices, own_portid: int) -> list[Source]:
            self.source, self.portid = ScriptedSource(post), own_portid
            return [self.source]

        def echo(key: ProbeKey, loop: asyncio.AbstractEventLoop, on_reply: Reply) -> ScriptedEcho:
            return ScriptedEcho(self, key, loop, on_reply)

        def end(addresses: tuple[IPAddress, ...]) -> tuple[int, int]:
            self.flushed.append(addresses)
            return 0, 0

        transports = {Kind.ICMP: echo, Kind.TCP: echo, Kind.DNS: echo}
        return Surroundings(self.kernel, self.kernel, sources, transports, end)

    def feed(self, event: Event) -> None:
        assert self.source is not None, "the daemon has not started its sources"
        self.source.queue.put_nowait(event)


@pytest.fixture
def run_dir() -> Iterator[str]:
    path = tempfile.mkdtemp(prefix="whd")  # short: a Unix socket's path has 108 bytes
    yield path
    shutil.rmtree(path, ignore_errors=True)


def balanced(kernel: FakeKernel) -> set[str]:
    """The links the kernel's IPv4 balance route spreads over."""
    names = {link.index: link.name for link in kernel.links}
    found = [
        r
        for (family, table, *_dst_metric), (r, _p) in kernel.routes.items()
        if family == 4 and table == c.TABLE_BALANCE
    ]
    if not found:
        return set()
    route = found[0]
    if route.nhid is not None:
        group = kernel.nexthops[route.nhid][0]
        assert isinstance(group, NexthopGroup)
        return {names[kernel.nexthops[member][0].oif] for member, _w in group.members}  # type: ignore[union-attr]
    if route.multipath:
        return {names[hop.oif] for hop in route.multipath if hop.oif is not None}
    return {names[route.oif]} if route.oif is not None else set()


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + DEADLINE_S
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {DEADLINE_S} s: {what}")
        await asyncio.sleep(0.01)


def drive(
    run_dir: str,
    script: Script,
    scenario: Callable[[Daemon], Coroutine[Any, Any, None]],
    config_text: str = CONFIG,
) -> Daemon:
    """Start a daemon on script's fake kernel, play scenario, stop it; the daemon for a look after."""
    config = Path(run_dir) / "wanhooks.yaml"
    config.write_text(config_text)
    daemon = Daemon(str(config), run_dir, around=script.surroundings())

    async def main() -> None:
        running = asyncio.create_task(daemon.run())
        try:
            await scenario(daemon)
        finally:
            daemon.stop()
            assert await asyncio.wait_for(running, DEADLINE_S) == 0

    asyncio.run(main())
    return daemon


def run_to_its_end(run_dir: str, around: Surroundings | None = None) -> int:
    """Run a daemon that is meant to stop on its own; its exit code."""
    config = Path(run_dir) / "wanhooks.yaml"
    config.write_text(CONFIG)
    daemon = Daemon(str(config), run_dir, around=around or Script(lab_kernel(2)).surroundings())

    async def main() -> int:
        return await asyncio.wait_for(daemon.run(), DEADLINE_S)

    return asyncio.run(main())


def test_links_leave_and_return_with_their_carrier(run_dir: str) -> None:
    kernel = lab_kernel(2)
    script = Script(kernel)

    async def scenario(daemon: Daemon) -> None:
        await until(lambda: state(daemon, "w1").startswith("active"), "both links balanced at start-up")
        assert balanced(kernel) == {"w1", "w2"}
        assert script.portid == FAKE_PORTID  # the sources tell the daemon's own writes by it
        kernel.link_down(11, carrier_only=True)  # as the kernel does: w1's nexthops and routes go
        script.feed(KernelChanged("link", "new", ifindex=11))
        await until(lambda: not state(daemon, "w1").startswith("active"), "a round that takes w1 out")
        assert balanced(kernel) == {"w2"}
        kernel.link_up(11)
        script.feed(KernelChanged("link", "new", ifindex=11))
        await until(lambda: state(daemon, "w1").startswith("active"), "a round that takes w1 back")
        assert balanced(kernel) == {"w1", "w2"}

    daemon = drive(run_dir, script, scenario)
    assert daemon.rounds >= 3 and daemon.events >= 3


def state(daemon: Daemon, link: str) -> str:
    """The link's state as the daemon's last round planned it ("" before any)."""
    return daemon.link_states.by_link.get(link, ("", 0.0, False))[0]


def test_a_silent_link_fails_its_probes_and_its_connections_end(run_dir: str) -> None:
    kernel = lab_kernel(2)
    script = Script(kernel)

    async def scenario(daemon: Daemon) -> None:
        await until(lambda: balanced(kernel) == {"w1", "w2"}, "both links balanced once they answer")
        script.silent.add("w1")
        await until(lambda: balanced(kernel) == {"w2"}, "w1 out once its probes go unanswered")
        await until(lambda: bool(script.flushed), "w1's connections ended")
        status = await asyncio.to_thread(request, run_dir, {"op": "status"})
        w1 = next(link for link in status["status"]["links"] if link["name"] == "w1")
        assert w1["state"] == "failed" and w1["ipv4"]["reason"].startswith("health: down")
        script.silent.clear()
        await until(lambda: balanced(kernel) == {"w1", "w2"}, "w1 back once it answers again")

    drive(run_dir, script, scenario)
    w1_addresses = {str(a) for a in script.flushed[0]}
    assert "100.64.1.2" in w1_addresses and script.sent["w1"] > 0


def test_what_another_program_deletes_is_restored(run_dir: str) -> None:
    kernel = lab_kernel(2)
    script = Script(kernel)

    async def scenario(daemon: Daemon) -> None:
        await until(lambda: balanced(kernel) == {"w1", "w2"}, "both links balanced")
        owned = kernel.dump_owned()
        rule = sorted(owned.rules, key=lambda r: r.priority)[0]
        del kernel.rules[rule]  # another program (netlink port 999) deleted it
        script.feed(KernelChanged("rule", "del", deleted_by=999))
        await until(lambda: rule in kernel.rules, "the deleted rule restored")

    drive(run_dir, script, scenario)


def test_a_firewall_changed_behind_its_back_is_rewritten(
    run_dir: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(c, "FIREWALL_VERIFY_S", 0.05)
    kernel = lab_kernel(2)
    script = Script(kernel)

    async def scenario(daemon: Daemon) -> None:
        await until(lambda: bool(kernel.firewall), "wanhooks' nftables table written")
        written = kernel.firewall
        kernel.firewall = ""  # `nft flush ruleset`: no event tells
        await until(lambda: kernel.firewall == written, "the table written again")

    drive(run_dir, script, scenario)


def test_a_failed_event_source_stops_the_daemon_rather_than_leave_it_deaf(run_dir: str) -> None:
    class Broken:
        async def run(self) -> None:
            await asyncio.sleep(0.05)
            raise OSError(105, "No buffer space available")  # e.g. a netlink socket gone bad

    around = dataclasses.replace(Script(lab_kernel(2)).surroundings(), sources=lambda *_: [Broken()])
    assert run_to_its_end(run_dir, around) == 1


def test_a_failed_background_loop_stops_the_daemon_rather_than_go_on_without_it(
    run_dir: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The passive watch's loop ended by a bug: without it no link would be suspected under
    traffic again, and nothing would say so."""

    def broken(_watcher: PassiveWatcher, _now: float) -> float:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(PassiveWatcher, "step", broken)
    assert run_to_its_end(run_dir) == 1
    assert "the passive watch failed: a bug; stopping" in caplog.text


def test_a_failed_prober_stops_the_daemon_rather_than_freeze_its_links_health(
    run_dir: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A prober's loop ended by a bug would leave its link judged up forever, dead or not."""

    def broken(_health: machine.Health, _now: float) -> machine.Health:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(machine, "evaluate", broken)
    assert run_to_its_end(run_dir) == 1
    assert re.search(r"the prober of w[12] IPv4 failed: a bug; stopping", caplog.text), caplog.text


def test_a_pairs_shared_address_and_keepalived_s_word_reach_the_balance_and_status(run_dir: str) -> None:
    """w1 NATs to a shared address: out of the balance while the other router holds it, in as
    soon as keepalived moves it here; keepalived's notify is in status (and gets a round)."""
    kernel = lab_kernel(2)
    script = Script(kernel)
    vip = ipaddress.IPv4Address("100.64.1.10")
    config = CONFIG.replace("gateway: 100.64.1.1}", "gateway: 100.64.1.1, nat_address: 100.64.1.10}")

    async def scenario(daemon: Daemon) -> None:
        await until(lambda: balanced(kernel) == {"w2"}, "w2 balanced; w1 waiting for its shared address")
        rounds = daemon.rounds
        answer = await asyncio.to_thread(
            request, run_dir, {"op": "vrrp", "instance": "WAN", "state": "MASTER"}
        )
        assert answer == {"ok": True}
        await until(lambda: daemon.rounds > rounds, "a round at keepalived's word")
        w1 = next(link for link in kernel.links if link.name == "w1")  # keepalived adds the address
        kernel.set_link(
            dataclasses.replace(w1, addresses=(*w1.addresses, Address(4, vip, 24, secondary=True)))
        )
        script.feed(KernelChanged("address", "new", ifindex=w1.index))
        await until(lambda: balanced(kernel) == {"w1", "w2"}, "w1 balanced once the address is here")
        status = (await asyncio.to_thread(request, run_dir, {"op": "status"}))["status"]
        assert [(r["instance"], r["state"]) for r in status["vrrp"]] == [("WAN", "MASTER")]
        refused = await asyncio.to_thread(
            request, run_dir, {"op": "vrrp", "instance": "WAN", "state": "BOSS"}
        )
        assert not refused["ok"] and "unknown state" in refused["error"]

    drive(run_dir, script, scenario, config)
