"""What systemd hears from the daemon (Type=notify, sd_notify.py): READY=1 once a round
has made the kernel match the plan (or READY_DEADLINE_S after start-up anyway, saying what
failed), a one-line STATUS= whenever it changes, WATCHDOG=1 from the event loop itself,
RELOADING=1 ... READY=1 around a reload, STOPPING=1 on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator

from .. import constants as c
from .sd_notify import Notifier, status_text

log = logging.getLogger("wanhooks")


class Readiness:
    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self.ready = False  # READY=1 sent
        self.status = ""  # the last STATUS= sent
        self.problem = "no round has finished yet"  # why the kernel does not match the plan
        self._reload_lock = asyncio.Lock()  # one reload at a time: RELOADING=1 ... READY=1 pairs

    def round_ended(self, line: str, problem: str) -> None:
        """After a round: problem is why the kernel does not match the plan ("" when it does).
        READY=1 the first time it matches; STATUS= when the line changed."""
        self.problem = problem
        if problem:
            line += f" -- not in sync: {problem}; retrying"
        self._tell(status_text(line), in_sync=not problem)

    def round_failed(self, problem: str) -> None:
        self.problem = problem
        self._tell(status_text(f"{problem}; retrying"), in_sync=False)

    def dry_run(self, changes: int) -> None:
        self._tell(f"dry run, changing nothing: the plan needs {changes} changes", in_sync=True)

    def _tell(self, status: str, in_sync: bool) -> None:
        lines = []
        if in_sync and not self.ready:
            self.ready = True
            lines.append("READY=1")
            log.info("ready: the kernel matches the plan (%s)", status)
        if status != self.status:
            self.status = status
            lines.append(f"STATUS={status}")
        if lines:
            self.notifier.notify(*lines)

    def anyway(self) -> None:
        """READY_DEADLINE_S after start-up and still not in sync: ready all the same (the
        daemon keeps retrying, answers and follows the links), saying what failed."""
        if self.ready:
            return
        log.warning(
            "not in sync with the plan %g s after start-up: %s; telling systemd the service is up "
            "anyway, rounds keep retrying", c.READY_DEADLINE_S, self.problem,
        )  # fmt: skip
        self.ready = True
        self.status = status_text(f"up, not in sync: {self.problem}; retrying")
        self.notifier.notify("READY=1", f"STATUS={self.status}")

    @contextlib.asynccontextmanager
    async def reloading(self) -> AsyncIterator[None]:
        """RELOADING=1 before, READY=1 after; one reload at a time.  Before READY=1 systemd
        has no running service to reload, and hears nothing."""
        async with self._reload_lock:
            ready = self.ready
            if ready:
                now_usec = time.monotonic_ns() // 1000  # systemd >= 253 wants it with RELOADING=1
                self.notifier.notify("RELOADING=1", f"MONOTONIC_USEC={now_usec}", "STATUS=reloading")
            try:
                yield
            finally:
                if ready:
                    self.notifier.notify("READY=1", f"STATUS={self.status}")

    def refused(self, why: str) -> None:
        """The next STATUS= (sent with READY=1 after the reload) says a reload was refused."""
        self.status = status_text(f"reload refused, the running config stays: {why}")

    def stopping(self) -> None:
        self.notifier.notify("STOPPING=1", "STATUS=stopping")

    async def feed_watchdog(self, interval: float) -> None:
        """WATCHDOG=1 every interval, sent by the event loop itself: a loop that is stuck (or a
        process that is stopped) sends none, and systemd restarts the service."""
        while True:
            self.notifier.notify("WATCHDOG=1")
            await asyncio.sleep(interval)
