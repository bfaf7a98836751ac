"""`wanhooks run`: the event-driven daemon.

Theory of operation
-------------------
Sources (rtnetlink, the control socket fed by dispatcher hooks, NetworkManager
over D-Bus) post small events.  An event carries no truth of its own: it only
marks the state dirty.  One task waits for dirt, debounces for a few
milliseconds (a carrier loss arrives as a burst: link, nexthops, routes),
then runs one round -- a snapshot of the kernel, plan, and a diff against
what wanhooks owns -- the path `wanhooks apply` takes, but read from a mirror
of the kernel kept by its notifications (kernel/mirrored.py), so a round
costs what changed.  Level-triggered: whatever the kernel or another program
deleted (nexthops on carrier loss, rules removed by a manager) comes back on
the next round, and a lost notification (ENOBUFS) costs one full dump.

Two threads.  The event loop only listens (sources, probes, the control
socket) and decides; everything that waits on the kernel or the disk -- the
run lock, netlink dumps and writes, `nft`, sysctls, the status document --
runs in the kernel worker (worker.py), one call at a time.  A round's few
questions for the loop's own state (held gateways, probers, verdicts) are
asked on the loop.  So a control ping is answered at once whatever a round,
an `nft` or a metrics scrape is doing.

The only memory between rounds: gateways held over a DHCP rebind
(plan/holdover.py), the admin's link overrides, and the last decision (to log
changes, not repetitions).  SIGTERM leaves routing in place (a restart must
not drop traffic); SIGHUP, or the control op `reload`, re-reads the config and
keeps the old one if the new one is bad.

The parts, each with one idea: what the daemon talks to (surroundings.py:
the real host, or a fake kernel and scripted sources in a test), what
systemd hears (readiness.py), the restore policy (restore.py), start-up
trust (startup.py), the probers (health/probers.py), the admin's overrides
(overrides.py), what control requests mean (requests.py), the round's log
lines (round_log.py), its answers on the control socket and to metrics
(answers.py), what no event tells (periodic.py), and the kernel worker
(worker.py).  The daemon itself is the loop that joins them.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import time
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from .. import constants as c
from ..config.load import ConfigError, load_config
from ..events import (
    Event,
    HealthChanged,
    HookNotified,
    KernelChanged,
    LinkCommand,
    Resync,
    VrrpChanged,
    describe,
)
from ..health.capacity_watch import CapacityWatch
from ..health.passive_watch import PassiveWatcher
from ..health.probers import Probers
from ..health.probes import LinkProber
from ..kernel.mirrored import MirroredKernel
from ..model import Config, Desired, IPAddress, ManagedDevice, Observed, RunMode
from ..observe import metrics
from ..observe.link_states import LinkStates
from ..observe.log_format import about, link_context
from ..observe.log_format import handler as log_handler
from ..observe.traffic_share import TrafficWindow
from ..plan.holdover import Holds, hold_gateways
from ..plan.planner import connections_to_end, managed_links, plan
from ..plan.verdicts import Exclusion
from ..reconcile.diff import cleanup, diff
from ..reconcile.round import Round, converge, would_change
from ..sources.prefix_delegation import LearnedPrefixes
from ..sources.rtnetlink import who
from . import kept_prefixes, overrides, periodic, requests, round_log, surroundings
from .answers import Answers
from .control import ControlServer, daemon_running
from .lock import RunDirError, hold_daemon_lock, run_lock
from .readiness import Readiness
from .restore import Restore, RestorePolicy
from .sd_notify import Notifier, status_text
from .startup import group_members
from .surroundings import Surroundings
from .tasks import Background
from .transition_hooks import HookRunner
from .worker import KernelWorker

log = logging.getLogger("wanhooks")


class Daemon:
    def __init__(
        self,
        config_path: str,
        run_dir: str,
        *,
        cleanup_on_exit: bool = False,
        debounce_s: float = c.DEBOUNCE_S,
        dry_run: bool = False,
        notifier: Notifier | None = None,
        around: Surroundings | None = None,
    ) -> None:
        self.config_path, self.run_dir = config_path, run_dir
        self.cleanup_on_exit, self.debounce_s, self.dry_run = cleanup_on_exit, debounce_s, dry_run
        self.config: Config = _daemon_config(load_config(config_path))  # a bad one stops us before anything
        self.around = around if around is not None else surroundings.linux()
        self.kernel = self.around.kernel  # the kernel worker's alone (see the theory of operation)
        self.worker = KernelWorker()
        self.systemd = Readiness(notifier if notifier is not None else Notifier(None))
        # events in, rounds out
        self.events = self.rounds = 0  # since start (status: leaks show against them)
        self._pending: list[Event] = []
        self._dirty, self._stop = asyncio.Event(), asyncio.Event()
        self._round_waiters: list[asyncio.Future[None]] = []  # resolved when the next round is done
        self._tasks = Background(self._task_failed)  # connection flushes, restorer lookups, reloads
        # the daemon's own memory between rounds
        self.overrides = overrides.load(run_dir)
        # keepalived's word (wanhooks vrrp notify): VRRP instance -> (this router's state, since)
        self.vrrp: dict[str, tuple[str, float]] = {}
        self.holds = Holds()
        self.manager: tuple[ManagedDevice, ...] = ()
        # the ISPs' delegated prefixes, from the LAN's addresses; those kept for their hosts
        # survive a restart in the run dir
        self.learned = LearnedPrefixes(
            persist=None if dry_run else (lambda found: kept_prefixes.save(run_dir, found))
        )
        self._expiry_timer: asyncio.TimerHandle | None = None  # a held gateway's, a kept prefix's
        self._last_desired: Desired | None = None
        self._last_would: list[str] | None = None  # --dry-run: what the last round would have done
        self._round_log = round_log.RoundLog()  # what the last round said: changes are logged, not repeats
        # others deleting wanhooks' objects: restore, don't fight (restore.py)
        self._restore = RestorePolicy()
        self._main_has_default = True  # as the last round saw main
        self._restore_timer: asyncio.TimerHandle | None = None
        self._firewall_retry = False  # a retry of a failed nftables write is scheduled
        self._failed = False  # a source, a loop or a prober failed: stop, exit 1
        # health and weights, on the loop
        self.probers = Probers(
            self._health_changed,
            lambda prober, exc: self._fail(f"the prober of {prober.key.link} IPv{prober.key.family}", exc),
            self.around.transports,
        )
        self.watcher = PassiveWatcher(
            lambda: self.probers.by_key, self.around.counters.link_counters, self.around.counters.evidence
        )
        self.capacity = CapacityWatch()  # weight: auto
        self.hooks = HookRunner(self.config.hooks_dir)  # coalesced per link and family, capped
        # observability: status, metrics
        self.traffic = TrafficWindow(c.TRAFFIC_WINDOW_S, c.TRAFFIC_SAMPLE_S)  # the worker's
        self.link_states = LinkStates()
        self.figures = metrics.Figures()
        self.generation = 0  # any event or round makes a new one (the metrics' cache)
        self.answers = Answers(self)  # control requests, status, metrics

    # --- events --------------------------------------------------------------

    def post(self, event: Event) -> None:
        self.events += 1
        self.generation += 1
        source = _source_of(event)
        self.figures.events[source] = self.figures.events.get(source, 0) + 1
        if isinstance(event, HealthChanged):
            key = (event.iface, event.family)
            self.figures.transitions[key] = self.figures.transitions.get(key, 0) + 1
        self._pending.append(event)
        if self._fighting(event):
            return  # restored by the scheduled round, not at once: restore, don't fight
        self._dirty.set()

    def _fighting(self, event: Event) -> bool:
        """Whether a deletion of wanhooks' objects by another program waits for a delayed
        restore instead of the next round (restore.py decides)."""
        if not isinstance(event, KernelChanged) or not event.deleted_by:
            return False  # not a deletion of wanhooks' objects, or the kernel's (a link went)
        decision = self._restore.deleted(
            time.monotonic(),
            event.deleted_by,
            scheduled=self._restore_timer is not None,
            round_pending=self._dirty.is_set(),
            main_has_default=self._main_has_default,
        )
        if decision.name_deleter:
            self._name_deleter(event.deleted_by)
        if decision.restore is not Restore.LATER:
            return decision.restore is Restore.SCHEDULED
        log.warning(
            "netlink port %d keeps deleting wanhooks' routing: restoring in %.0f s, not at once "
            "(for systemd-networkd, `wanhooks install` adds ManageForeignRoutingPolicyRules=no)",
            event.deleted_by, decision.delay_s,
        )  # fmt: skip

        def restore() -> None:
            self._restore_timer = None
            self.post(Resync("restore after repeated deletions by another program"))

        self._restore_timer = asyncio.get_running_loop().call_later(decision.delay_s, restore)
        return True

    def _name_deleter(self, portid: int) -> None:
        """Log which process deleted wanhooks' routing.  Finding it walks /proc: in a
        thread, off the event loop."""

        async def name() -> None:
            log.warning("wanhooks' routing deleted by %s: restoring it", await asyncio.to_thread(who, portid))

        self._spawn(name())

    # --- life cycle ------------------------------------------------------------

    async def run(self) -> int:
        try:
            lock = hold_daemon_lock(self.run_dir)
        except RunDirError as err:
            log.error("wanhooks: %s", err)
            return 1
        if lock is None or daemon_running(self.run_dir):  # (an older one has no lock)
            log.error("another wanhooks daemon runs on %s: not starting a second one", self.run_dir)
            if lock is not None:
                os.close(lock)
            return 1
        try:
            return await self._run()
        finally:
            os.close(lock)

    async def _run(self) -> int:
        """Under the daemon lock: what the last daemon learned is this one's now."""
        self.learned.restore(kept_prefixes.load(self.run_dir))
        loop = asyncio.get_running_loop()
        for sig, handler in ((signal.SIGTERM, self.stop), (signal.SIGINT, self.stop)):
            loop.add_signal_handler(sig, handler)
        loop.add_signal_handler(signal.SIGHUP, lambda: self._spawn(self._reload_quietly()))
        sources = self.around.sources(self.post, self._manager_view, self.kernel.portid)
        tasks = [asyncio.create_task(source.run()) for source in sources]
        for task in tasks:
            task.add_done_callback(self._must_not_fail("an event source"))
        await asyncio.sleep(0)  # the sources listen before the first round looks
        if self._failed:
            return await self._shut_down(tasks, None)
        server = ControlServer(self.run_dir, self.answers.handle)
        await server.start()
        log.info(
            "started: config %s, %d link entries, run dir %s, pid %d",
            self.config.path, len(self.config.links), self.run_dir, os.getpid(),
        )  # fmt: skip
        if self.config.metrics is not None:
            metrics.serve(self.config.metrics, lambda: self.answers.metrics_doc(loop), self.figures)
        self.probers.trusted = await self.worker.run(self._kernel_group_members)
        self.post(Resync("start-up: sweep what a previous instance left, build the plan"))
        loops: list[tuple[str, Coroutine[Any, Any, None]]] = [
            ("the reconciler", self._reconciler()),
            ("the passive watch", self.watcher.run()),
            ("the traffic sampler", periodic.sample_traffic(self.worker, self.kernel, self.traffic)),
            ("the weigher", periodic.weigh_links(
                lambda: self.config, self.around.counters, self.capacity, self.probers, self.post
            )),
            # (a dry run too: its rounds trust the table as last read, like the real ones)
            ("the firewall check", periodic.verify_firewall(self.kernel, self.post)),
        ]  # fmt: skip
        if isinstance(self.kernel, MirroredKernel):
            loops.append(("the mirror's check", periodic.confirm_mirror(self.worker, self.kernel, self.post)))
        interval = self.systemd.notifier.watchdog_interval
        if interval is not None:
            loops.append(("the watchdog feeder", self.systemd.feed_watchdog(interval)))
        for what, each in loops:
            tasks.append(asyncio.create_task(each))
            tasks[-1].add_done_callback(self._must_not_fail(what))
        ready_deadline = loop.call_later(c.READY_DEADLINE_S, self.systemd.anyway)
        await self._stop.wait()
        ready_deadline.cancel()
        return await self._shut_down(tasks, server)

    def _must_not_fail(self, what: str) -> Callable[[asyncio.Task[None]], None]:
        """A source or a loop ends only when cancelled (so does a prober: Probers).  One that
        failed leaves the daemon deaf to what it reported, or without what it kept doing (the
        passive watch, the mirror's check, a link's health...) -- and nobody would know: the
        daemon stops (exit 1: systemd restarts it) rather than run so."""

        def ended(task: asyncio.Task[None]) -> None:
            exc = None if task.cancelled() else task.exception()
            if exc is not None:
                self._fail(what, exc)

        return ended

    def _fail(self, what: str, exc: BaseException) -> None:
        log.error("%s failed: %s; stopping", what, exc, exc_info=exc)
        self._failed = True
        self.stop()

    async def _shut_down(self, tasks: list[asyncio.Task[None]], server: ControlServer | None) -> int:
        """End everything started; the exit code."""
        for task in tasks:
            task.cancel()
        # a round in the worker finishes (a half-made round is what kill -9 is for)
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.worker.run(lambda: None)  # whatever the worker had in hand is done
        self.probers.stop()
        if server is not None:
            await server.stop()
        await self.hooks.close()
        if self.cleanup_on_exit:
            report = await self.worker.run(self._cleanup)
            log.info(
                "stopped: removed wanhooks' routing (%d changes)", len(report.done) + len(report.sysctls)
            )
        else:
            log.info("stopped: routing left in place (wanhooks cleanup removes it)")
        await self.worker.run(self.kernel.close)
        self.worker.close()
        self.around.counters.close()
        return 1 if self._failed else 0

    def stop(self) -> None:
        """SIGTERM: stop after the round in hand; routing stays."""
        if not self._stop.is_set():
            self.systemd.stopping()
        self._stop.set()

    def _cleanup(self) -> Any:
        with run_lock(self.run_dir):
            return cleanup(self.kernel, self.run_dir)

    def _kernel_group_members(self) -> set[tuple[str, int]]:
        """In the worker: the links trusted at start-up (startup.py)."""
        return group_members(self.kernel.observe(), self.kernel.dump_owned())

    # --- reload ------------------------------------------------------------------

    async def _reload_quietly(self) -> None:  # SIGHUP: the answer is in the log
        await self.reload()

    async def reload(self) -> dict[str, Any]:
        """SIGHUP and the control op `reload`: re-read the config, and answer once the first
        round with it has run (or RELOAD_ROUND_WAIT_S passed).  A bad config is refused and the
        running one stays."""
        async with self.systemd.reloading():
            try:  # parsing a large config is not the loop's work
                config = _daemon_config(await asyncio.to_thread(load_config, self.config_path))
            except ConfigError as err:
                log.error("reload refused, keeping the running config: %s", err)
                self.systemd.refused(str(err))
                return {"ok": False, "error": str(err), "refused": True}
            self.config = config
            self.hooks.directory = config.hooks_dir
            log.info("reloaded %s: %d link entries", config.path, len(config.links))
            await self._round_done(Resync("config reloaded"), c.RELOAD_ROUND_WAIT_S)
            return {"ok": True, "config": config.path, "links": len(config.links)}

    async def _round_done(self, event: Event, timeout: float) -> bool:
        """Post event and wait for the round that takes it in; False when none ended in time."""
        done = asyncio.get_running_loop().create_future()
        self._round_waiters.append(done)
        self.post(event)
        try:
            await asyncio.wait_for(done, timeout)
        except asyncio.TimeoutError:
            log.warning("no round finished within %g s of %s", timeout, describe(event))
            return False
        return True

    # --- the one task that changes the kernel ----------------------------------

    async def _reconciler(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(self.debounce_s)
            self._dirty.clear()
            triggers, self._pending = self._pending, []
            waiters, self._round_waiters = self._round_waiters, []
            try:
                await self._round(triggers)
            except (OSError, RunDirError) as exc:  # netlink trouble: log, look again shortly
                log.error("round failed: %s; retrying", exc)
                self._retry(f"round failed: {exc}", 0.5)
            except Exception as exc:  # a bug must not end the only task that changes the kernel
                log.exception("round failed; retrying in 2 s")
                self._retry(f"round failed: {type(exc).__name__}", 2.0)
            finally:
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)

    def _retry(self, problem: str, delay: float) -> None:
        self.systemd.round_failed(problem)
        asyncio.get_running_loop().call_later(delay, self.post, Resync("retry after an error"))

    async def _round(self, triggers: list[Event]) -> None:
        try:
            if self.dry_run:
                await self.worker.run(self._dry_round, triggers)
                self.systemd.dry_run(len(self._last_would or []))
                self._schedule_expiry()
                return
            result, elapsed_ms = await self.worker.run(self._converge)
        finally:
            self.probers.release()
        self.rounds += 1
        self.figures.rounds += 1
        self.figures.round_seconds += elapsed_ms / 1000
        self._main_has_default = any(d.live for d in result.observed.main_defaults)
        for link, family, why in connections_to_end(self._last_desired, result.desired, self.config):
            self._spawn(self._end_connections(link.name, family, link.addresses[family], why))
        self._last_desired = result.desired
        self._schedule_expiry()
        report = result.report
        self._round_log.after(self.rounds, triggers, result, elapsed_ms)
        if report.firewall_errors:
            self._retry_firewall()
        self._log_state_changes(result.desired, refused=bool(report.failed))
        pending = 0
        if report.ok and not self.systemd.ready:  # the first time: check that the kernel holds the plan
            pending = len(await self.worker.run(lambda: diff(result.desired, self.kernel.dump_owned())))
        self.systemd.round_ended(
            round_log.status_line(result.desired), round_log.sync_problem(report, pending)
        )

    def _converge(self) -> tuple[Round, float]:
        """One round, in the worker: the run lock, the kernel, nft, sysctls."""
        self.generation += 1  # before its first write: a scrape that sees one sees a new document
        started = time.perf_counter()
        config = self.config  # one config for the whole round, should a reload come meanwhile
        with run_lock(self.run_dir):
            result = converge(
                config,
                self.kernel,
                self.run_dir,
                overrides=self.overrides,
                adjust=lambda observed: self._observe(observed, config),
                verdicts=self.worker.on_loop(self.probers.verdicts),
                capacities=self.worker.on_loop(self.capacity.capacities)(),
            )
        elapsed_ms = (time.perf_counter() - started) * 1000
        self.learned.save()  # after the round's writes: a renumbering's rule never waits on the disk
        return result, elapsed_ms

    def _dry_round(self, triggers: list[Event]) -> None:
        """--dry-run: everything a round decides, logged as what it would do; nothing written
        (no routes, rules, nexthops, sysctls, nftables; no connection ended).  In the worker."""
        config = self.config
        observed = self._observe(self.kernel.observe(), config)
        desired = plan(
            config,
            observed,
            self.overrides,
            self.worker.on_loop(self.probers.verdicts)(),
            capacities=self.worker.on_loop(self.capacity.capacities)(),
        )
        would = would_change(desired, observed, self.kernel)
        self.rounds += 1
        if would != self._last_would:
            log.info("trigger: %s", round_log.summarize(triggers))
            log.info("decision: %s", round_log.decision(desired))
            for line in would:
                log.info("dry run, would: %s", line)
            log.info("round %d: dry run, would make %d changes, made none", self.rounds, len(would))
            self._last_would = would

    def _observe(self, observed: Observed, config: Config) -> Observed:
        """In the worker: the snapshot as the daemon sees it (_adjust, on the loop), then the
        ISPs' delegated prefixes -- here, since they read networkd's files and the loop never
        waits on the disk.  The book is replaced whole, never changed in place: the loop
        reads it for status."""
        return self.learned.observe(config, self.worker.on_loop(self._adjust)(observed, config))

    def _manager_view(self, devices: tuple[ManagedDevice, ...]) -> None:
        self.manager = devices

    def _adjust(self, observed: Observed, config: Config) -> Observed:
        """The kernel's view plus what only the daemon knows: NetworkManager's, held gateways.

        Also the moment to start and stop probers: before planning, so a new
        link's prober exists (and keeps it out until it answers) from its first round.
        """
        observed = replace(observed, manager=self.manager)
        self.probers.sync(config, observed)
        managed = {link.index for link, _entry in managed_links(config, observed)}
        before = self.holds
        adjusted, self.holds = hold_gateways(
            observed, self.holds, managed, time.monotonic(), config.gateway_hold
        )
        round_log.log_gateways(observed, before, self.holds, config.gateway_hold)
        return adjusted

    def _retry_firewall(self) -> None:
        """nft failed: nothing in the kernel will change to wake us, so try again on our own."""
        if self._firewall_retry:
            return

        def retry() -> None:
            self._firewall_retry = False
            self.post(Resync("retry nftables"))

        self._firewall_retry = True
        asyncio.get_running_loop().call_later(c.FIREWALL_RETRY_S, retry)

    def _schedule_expiry(self) -> None:
        """No event comes when a held gateway's time runs out, nor when a delegated prefix kept
        for its hosts expires (their addresses are the LAN's): one round is set for the first."""
        if self._expiry_timer is not None:
            self._expiry_timer.cancel()
            self._expiry_timer = None
        due = [
            (deadline, why)
            for deadline, why in (
                (self.holds.deadline, "a held gateway's time ran out"),
                (self.learned.next_expiry(), "a delegated prefix's valid lifetime ended"),
            )
            if deadline is not None
        ]
        if due:
            deadline, why = min(due)
            delay = max(0.0, deadline - time.monotonic()) + 0.01
            self._expiry_timer = asyncio.get_running_loop().call_later(delay, self.post, Resync(why))

    def _log_state_changes(self, desired: Desired, refused: bool) -> None:
        """Each link whose state changed, after the round's own lines (its cause)."""
        for change in self.link_states.update(desired, time.monotonic()):
            log.info(
                "link %s: %s -> %s%s%s", change.link, change.old, change.new,
                f" ({change.why})" if change.why else "",
                " -- wanted; the kernel refused part of the change" if refused else "",
                extra=about(change.link),
            )  # fmt: skip

    async def _end_connections(
        self, name: str, family: int, addresses: tuple[IPAddress, ...], why: Exclusion
    ) -> None:
        ended, aborted = await asyncio.to_thread(self.around.end_connections, addresses)
        log.info(
            "flush: ended %d connection(s) and %d local socket(s) of %s IPv%d (%s)",
            ended, aborted, name, family, why, extra=about(name, family),
        )  # fmt: skip

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.spawn(coro)

    @staticmethod
    def _task_failed(exc: BaseException) -> None:
        log.error("a background task failed: %s", exc, exc_info=exc)

    # --- health, weights, and what no event tells ---------------------------------

    def _health_changed(self, prober: LinkProber) -> None:
        last = prober.health.last
        reason = last.reason if last else ""
        old = last.old.value if last else "?"
        event = HealthChanged(prober.key.link, prober.key.family, old, prober.health.state.value, reason)
        log.info("%s", describe(event), extra=about(event.iface, event.family))
        self.post(event)
        with link_context(event.iface, event.family):  # the hooks' own log lines say whose they are
            self.hooks.health_changed(event)


def _mode_line(path: str) -> int:
    """The line of a YAML config's top-level `mode:` key (0 when not found)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for number, text in enumerate(f, 1):
                if re.match(r"mode\s*:", text):
                    return number
    except OSError:
        pass
    return 0


def _daemon_config(config: Config) -> Config:
    """config, if the daemon may run with it: `mode: hooks-only` says no daemon runs."""
    if config.mode is RunMode.HOOKS_ONLY:
        raise ConfigError(
            config.path, _mode_line(config.path), "mode",
            "hooks-only: this config wants no daemon (each hook applies the change itself), so "
            "`wanhooks run` does not start; set `mode: daemon`, or disable the service "
            "(systemctl disable --now wanhooks)",
        )  # fmt: skip
    return config


def _source_of(event: Event) -> str:
    if isinstance(event, KernelChanged):
        return "rtnetlink"
    if isinstance(event, HookNotified):  # counted by name only for the sources we ship
        return event.source if event.source in requests.KNOWN_SOURCES else "other-hook"
    if isinstance(event, HealthChanged):
        return "health"
    if isinstance(event, LinkCommand):
        return "control"
    if isinstance(event, VrrpChanged):
        return "vrrp"
    if isinstance(event, Resync):
        return "resync"
    return "networkmanager"


def run_daemon(
    config_path: str,
    run_dir: str,
    *,
    cleanup_on_exit: bool,
    debounce_ms: float,
    dry_run: bool = False,
    log_format: str = "text",
) -> int:
    # the journal's own protocol when stderr is systemd's journal stream, else lines on stderr
    logging.basicConfig(level=logging.INFO, handlers=[log_handler(log_format)])
    notifier = Notifier.from_environment()  # read, and kept from every child process
    if dry_run:
        log.info("dry run: wanhooks decides and logs, and changes nothing in the kernel")
    try:
        daemon = Daemon(
            config_path,
            run_dir,
            cleanup_on_exit=cleanup_on_exit and not dry_run,
            debounce_s=debounce_ms / 1000,
            dry_run=dry_run,
            notifier=notifier,
        )
    except ConfigError as err:
        log.error("wanhooks: %s", err)
        notifier.notify(f"STATUS={status_text(f'config refused: {err}')}")
        return 2
    return asyncio.run(daemon.run())
