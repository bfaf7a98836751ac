"""ICMP echo probes bound to the link they test (I/O only; health.py judges).

Each prober owns one raw ICMP socket bound to its device (SO_BINDTODEVICE)
and to the link's own source address: the echo leaves by that link whatever
the balance route says, uses the link's table through wanhooks' `from
<address>` rule, and keeps working while the link is failed or standby.  It
sends one echo to every target each interval and feeds replies and the
passing time to the link's health machine.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import struct
from collections.abc import Callable

from . import health
from .health import Health, ProbeKey
from .model import IPAddress

log = logging.getLogger("wanhooks.probes")

ICMP4_ECHO_REQUEST, ICMP4_ECHO_REPLY = 8, 0
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129
_ECHO = struct.Struct("!BBHHH")
_PAYLOAD = b"wanhooks"  # small: probes are 36 bytes on the wire (IPv4), 56 (IPv6)


def checksum(data: bytes) -> int:
    """RFC 1071 internet checksum (IPv4 ICMP; the kernel fills ICMPv6's)."""
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def echo_request(family: int, ident: int, seq: int) -> bytes:
    if family == 6:
        return _ECHO.pack(ICMP6_ECHO_REQUEST, 0, 0, ident, seq) + _PAYLOAD
    head = _ECHO.pack(ICMP4_ECHO_REQUEST, 0, 0, ident, seq)
    return _ECHO.pack(ICMP4_ECHO_REQUEST, 0, checksum(head + _PAYLOAD), ident, seq) + _PAYLOAD


def parse_reply(family: int, packet: bytes) -> tuple[int, int] | None:
    """(ident, seq) of an echo reply, or None for anything else a raw socket hears."""
    if family == 4:
        if len(packet) < 20:
            return None
        packet = packet[(packet[0] & 0x0F) * 4 :]  # IPv4 raw sockets include the IP header
    if len(packet) < _ECHO.size:
        return None
    kind, _code, _sum, ident, seq = _ECHO.unpack_from(packet)
    if kind != (ICMP4_ECHO_REPLY if family == 4 else ICMP6_ECHO_REPLY):
        return None
    return ident, seq


class LinkProber:
    def __init__(
        self,
        key: ProbeKey,
        on_change: Callable[[LinkProber], None],
        *,
        trusted: bool,
        clock: Callable[[], float],
    ) -> None:
        self.key = key
        self._on_change = on_change
        self._clock = clock
        self.health: Health = health.start(key.params, clock(), trusted=trusted)
        self._ident = int.from_bytes(os.urandom(2), "big")
        self._seq = 0
        self._sent_at: dict[tuple[IPAddress, int], float] = {}
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        family = socket.AF_INET if self.key.family == 4 else socket.AF_INET6
        proto = socket.IPPROTO_ICMP if self.key.family == 4 else socket.IPPROTO_ICMPV6
        sock = socket.socket(family, socket.SOCK_RAW | socket.SOCK_NONBLOCK, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, self.key.link.encode())
            sock.bind((str(self.key.source), 0))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        loop.add_reader(sock.fileno(), self._readable)
        self._task = loop.create_task(self._run())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._sock is not None:
            asyncio.get_event_loop().remove_reader(self._sock.fileno())
            self._sock.close()
            self._sock = None

    async def _run(self) -> None:
        step = self.key.params.interval
        next_at = self._clock()
        while True:
            self._send_round()
            await asyncio.sleep(step / 2)
            self._update(health.evaluate(self.health, self._clock()))
            next_at += step
            await asyncio.sleep(max(0.0, next_at - self._clock()))
            self._update(health.evaluate(self.health, self._clock()))

    def _send_round(self) -> None:
        assert self._sock is not None
        self._seq = (self._seq + 1) & 0xFFFF
        now = self._clock()
        for target in self.key.params.targets:
            try:
                self._sock.sendto(echo_request(self.key.family, self._ident, self._seq), (str(target), 0))
            except OSError as exc:  # unreachable right now: counts as a lost echo
                log.debug("probe %s -> %s: %s", self.key.link, target, exc.strerror)
            self._sent_at[(target, self._seq)] = now
            self.health = health.sent(self.health, now)
        if len(self._sent_at) > 64 * len(self.key.params.targets):  # forget echoes long lost
            for old in sorted(self._sent_at, key=lambda k: self._sent_at[k])[: len(self._sent_at) // 2]:
                del self._sent_at[old]

    def _readable(self) -> None:
        assert self._sock is not None
        while True:
            try:
                packet, peer = self._sock.recvfrom(2048)
            except BlockingIOError:
                return
            except OSError:
                return
            parsed = parse_reply(self.key.family, packet)
            if parsed is None or parsed[0] != self._ident:
                continue
            try:
                target = next(t for t in self.key.params.targets if str(t) == peer[0].split("%")[0])
            except StopIteration:
                continue
            sent_at = self._sent_at.pop((target, parsed[1]), None)
            if sent_at is None:
                continue
            now = self._clock()
            self._update(health.replied(self.health, target, now - sent_at, now))

    def _update(self, new: Health) -> None:
        changed = new.state is not self.health.state
        self.health = new
        if changed:
            self._on_change(self)
