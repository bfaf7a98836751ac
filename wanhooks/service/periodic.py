"""What no event tells the daemon, looked at on a timer: each link's byte counters (status'
traffic shares), its capacity (weight: auto), wanhooks' nftables table (another program
may flush it without a word), and the kernel mirror against a full dump.  Each runs until
cancelled."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable

from .. import constants as c
from ..events import Event, Resync
from ..health import capacity_watch
from ..health.capacity_watch import CapacityWatch
from ..health.probers import Probers
from ..kernel import Kernel
from ..kernel.mirrored import MirroredKernel
from ..model import Config
from ..observe.traffic_share import CounterSnapshot, TrafficWindow
from ..router.nft import NftError
from .worker import KernelWorker

log = logging.getLogger("wanhooks")


async def sample_traffic(worker: KernelWorker, kernel: Kernel, traffic: TrafficWindow) -> None:
    """Every link's byte counters, every TRAFFIC_SAMPLE_S, for the last minute's shares
    (the window is the worker's: status reads it there)."""

    def sample() -> None:
        traffic.add(CounterSnapshot(time.monotonic(), kernel.link_counters()))

    while True:
        try:
            await worker.run(sample)
        except OSError as exc:  # a netlink hiccup costs one sample, not the window
            log.debug("traffic sample: %s", exc)
        await asyncio.sleep(c.TRAFFIC_SAMPLE_S)


async def weigh_links(
    config: Callable[[], Config],
    counters: Kernel,
    capacity: CapacityWatch,
    probers: Probers,
    post: Callable[[Event], None],
) -> None:
    """weight: auto: every link's counters and probe round trips once a second into its
    capacity estimate (health/capacity_watch.py); a change of the applied weights gets a round.
    counters is the loop's own kernel: one link dump, ~0.1 ms, never behind a round."""
    while True:
        await asyncio.sleep(capacity_watch.SAMPLE_S)
        if not any(entry.auto_weight for entry in config().links):
            continue
        try:
            sample = counters.link_counters()
        except OSError as exc:
            log.debug("capacity sample: %s", exc)
            continue
        decision = capacity.tick(time.monotonic(), config(), sample, probers.replies, probers.carries_traffic)
        if decision is not None:
            log.info("weights: %s", decision.reason)
            post(Resync(f"weights measured: {decision.reason}"))


async def confirm_mirror(worker: KernelWorker, kernel: MirroredKernel, post: Callable[[Event], None]) -> None:
    """Take the mirror's pending notifications every MIRROR_DRAIN_S; every MIRROR_CONFIRM_S
    compare it with a full dump (kernel/mirrored.py logs what differed).  A disagreement
    gets a round: it was planned from a wrong picture."""
    every = float(os.environ.get("WANHOOKS_MIRROR_CONFIRM_S") or c.MIRROR_CONFIRM_S)
    last = time.monotonic()
    while True:
        await asyncio.sleep(min(c.MIRROR_DRAIN_S, every))
        try:
            if time.monotonic() - last < every:
                await worker.run(kernel.drain)
                continue
            last = time.monotonic()
            kernel.request_confirm("the periodic check", agree=True)
            differed = await worker.run(kernel.confirm)
        except OSError as exc:  # a netlink hiccup: the next check, or the next round, reads again
            log.debug("kernel mirror: %s", exc)
            continue
        if differed:
            post(Resync("the kernel mirror disagreed with a full dump"))


async def verify_firewall(kernel: Kernel, post: Callable[[Event], None]) -> None:
    """Re-read wanhooks' nftables table every FIREWALL_VERIFY_S: rounds trust what was last
    read or written (the daemon's mirrored kernel until this reads it again), and no event
    comes when another program (a firewall reload, `nft flush ruleset`) changes or removes
    it.  Such a change gets a round, which restores it."""
    while True:
        await asyncio.sleep(c.FIREWALL_VERIFY_S)
        try:
            # a thread of its own, not the worker: `nft` takes 50 ms with 256 links, and a
            # round waiting behind it would add them to an event's latency
            same = await asyncio.to_thread(kernel.verify_firewall)
        except NftError as exc:
            log.debug("nftables: cannot re-read the table: %s", exc)
            continue
        if not same:
            log.warning("nftables: table %s %s was changed by another program", c.NFT_FAMILY, c.NFT_TABLE)
            post(Resync("wanhooks' nftables table changed behind its back"))
