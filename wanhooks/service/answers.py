"""The daemon's answers: its control requests (the socket: control.py; what each request
means: requests.py), its status document and the metrics endpoint's.  The status document
joins what only the event loop may read (probers, overrides, held gateways), copied on
the loop, with what the kernel worker reads (observe/status_doc.py)."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import TYPE_CHECKING, Any

from .. import constants as c
from ..events import describe
from ..observe.log_format import about
from ..observe.status_doc import StatusInputs, build_status
from . import overrides, requests

if TYPE_CHECKING:
    from .daemon import Daemon

log = logging.getLogger("wanhooks")


class Answers:
    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        # a scrape's status document: (when, generation, document); any event or round makes a
        # new generation, so the cache only spares rebuilding what cannot have changed
        self._metrics_cache: tuple[float, int, dict[str, Any]] | None = None

    async def handle(self, request: dict[str, Any]) -> dict[str, Any]:
        op = request.get("op")
        if op == "ping":
            return {"ok": True, "pid": os.getpid()}
        if op == "status":
            return {"ok": True, "status": await self.status_doc()}
        if op == "notify":
            return self._notify(request)
        if op == "link":
            return await self._link_command(request)
        if op == "reload":
            return await self.daemon.reload()
        if op == "vrrp":
            return self._vrrp(request)
        return {"ok": False, "error": f"unknown op {str(op)[:40]!r}"}

    def _notify(self, request: dict[str, Any]) -> dict[str, Any]:
        event = requests.hook_notice(request)
        if isinstance(event, requests.Refused):
            log.warning("%s", event.logged)
            return {"ok": False, "error": event.error}
        log.info("heard: %s", describe(event), extra=about(event.iface) if event.iface else None)
        self.daemon.post(event)
        return {"ok": True}

    def _vrrp(self, request: dict[str, Any]) -> dict[str, Any]:
        event = requests.vrrp_notice(request)
        if isinstance(event, requests.Refused):
            log.warning("%s", event.logged)
            return {"ok": False, "error": event.error}
        was = self.daemon.vrrp.get(event.instance)
        self.daemon.vrrp[event.instance] = (event.state, time.monotonic())
        log.info(
            "keepalived: this router is %s in %s (was %s): a round now",
            event.state, event.instance, was[0] if was else "unknown",
        )  # fmt: skip
        self.daemon.post(event)
        return {"ok": True}

    async def _link_command(self, request: dict[str, Any]) -> dict[str, Any]:
        d = self.daemon
        outcome = requests.link_command(request, d.config, d.overrides)
        if isinstance(outcome, str):
            return {"ok": False, "error": outcome}
        d.overrides, event = outcome
        await d.worker.run(overrides.save, d.run_dir, d.overrides)  # fsync: not on the loop
        log.info("admin: link %s %s", event.action, event.name)
        d.post(event)
        return {"ok": True}

    async def status_doc(self, *, with_counters: bool = False) -> dict[str, Any]:
        """The status document: the loop's own state copied here, the rest read by the worker."""
        d = self.daemon
        return await d.worker.run(build_status, d.kernel, d.traffic, self._status_inputs(), with_counters)

    def _status_inputs(self) -> StatusInputs:
        """On the loop: what only the loop may read (probers, overrides, held gateways)."""
        d = self.daemon
        return StatusInputs(
            config=d.config,
            overrides=d.overrides,
            verdicts=d.probers.verdicts(),
            manager=d.manager,
            held=tuple(gateway for gateway, _until in d.holds.held.values()),
            held_doc=[
                {"ifindex": k[0], "family": k[1], "gateway": str(gateway.gateway)}
                for k, (gateway, _until) in sorted(d.holds.held.items())
            ],
            health=d.probers.status(d.watcher.suspicions),
            link_states=dict(d.link_states.by_link),
            capacities=d.capacity.capacities(),
            weighing={name: d.capacity.status(name, time.monotonic()) for name in d.capacity.links},
            weight_changes=list(d.capacity.changes),
            rounds=d.rounds,
            events=d.events,
            vrrp={name: (state, time.monotonic() - since) for name, (state, since) in d.vrrp.items()},
            tasks=len(asyncio.all_tasks()),
            delegations=d.learned.known,
        )

    def metrics_doc(self, loop: asyncio.AbstractEventLoop) -> dict[str, Any]:
        """For the metrics thread: the status document plus byte counters.  Built by the
        worker, at most once per METRICS_CACHE_S however often scrapers come, unless something
        happened meanwhile."""
        cached, generation = self._metrics_cache, self.daemon.generation
        fresh = cached is not None and time.monotonic() - cached[0] < c.METRICS_CACHE_S
        if cached is not None and fresh and cached[1] == generation:
            return cached[2]
        doc = asyncio.run_coroutine_threadsafe(self.status_doc(with_counters=True), loop).result(timeout=10)
        self._metrics_cache = (time.monotonic(), generation, doc)
        return doc
