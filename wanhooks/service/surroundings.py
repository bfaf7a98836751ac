"""What the daemon talks to, in one place: the kernel, the event sources, the probes'
sockets and the connection flush.  `linux()` is the real host; a test hands the daemon
a fake kernel, scripted sources and scripted probe answers instead, and the daemon's
whole loop runs without root (tests/test_daemon_fake.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from ..events import Event
from ..health.probes import TRANSPORTS, Transports
from ..kernel import Kernel
from ..kernel.linux import LinuxKernel
from ..kernel.mirrored import MirroredKernel
from ..model import IPAddress, ManagedDevice
from ..router.flush import destroy_sockets, flush_connections
from ..sources.networkmanager import NetworkManagerSource
from ..sources.rtnetlink import RtnetlinkSource

Post = Callable[[Event], None]
PublishDevices = Callable[[tuple[ManagedDevice, ...]], None]  # what NetworkManager manages


class Source(Protocol):
    """Posts events until cancelled."""

    def run(self) -> Coroutine[Any, Any, None]: ...


# (post, publish NetworkManager's devices, the kernel writer's netlink port) -> the sources
MakeSources = Callable[[Post, PublishDevices, int], list[Source]]


@dataclass(frozen=True)
class Surroundings:
    kernel: Kernel  # the kernel worker's: every round, dump and write
    counters: Kernel  # the event loop's own, for byte counters alone: never waits behind a round
    sources: MakeSources
    transports: Transports  # how probes are sent and answered
    # end a link's connections and local sockets: (conntrack entries, sockets); blocking
    end_connections: Callable[[tuple[IPAddress, ...]], tuple[int, int]]


def linux() -> Surroundings:
    return Surroundings(
        kernel=MirroredKernel(),  # rounds read what notifications told, not full dumps
        counters=LinuxKernel(),
        sources=_linux_sources,
        transports=TRANSPORTS,
        end_connections=_end_connections,
    )


def _linux_sources(post: Post, publish: PublishDevices, own_portid: int) -> list[Source]:
    return [RtnetlinkSource(post, own_portid), NetworkManagerSource(post, publish)]


def _end_connections(addresses: tuple[IPAddress, ...]) -> tuple[int, int]:
    # a busy router's conntrack table is dumped whole: run in a thread, on a loop of its own
    return asyncio.run(flush_connections(addresses)), destroy_sockets(addresses)
