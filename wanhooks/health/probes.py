"""Probes bound to the link they test (I/O only; health/machine.py judges).

Every socket a prober opens is bound to its device (SO_BINDTODEVICE) and to
the link's own source address: the probe leaves by that link whatever the
balance route says, uses the link's table through wanhooks' `from <address>`
rule, and keeps working while the link is failed or standby.  A prober sends
the rounds its machine asks for, when it asks (health/machine.py's pace: a
heartbeat to one target, or every target every interval), feeds answers and
the passing time to the machine, and sleeps in between.

Three kinds, one per transport below:
  icmp  an echo request on a raw socket; the matching echo reply answers.
  tcp   a non-blocking connect to target:port; SYN-ACK *or* RST answers
        (either proves the path both ways), then the socket is closed with
        SO_LINGER 0, so a probe leaves no TIME_WAIT or half-open connection.
  dns   a query ("." NS by default) on one UDP socket; any response with the
        query's id answers, whatever its rcode.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import math
import os
import socket
import struct
from collections import deque
from collections.abc import Callable, Mapping
from typing import Protocol

from .. import constants as c
from ..model import IPAddress
from ..observe.log_format import about
from . import machine as health
from .machine import Health, Kind, ProbeKey

log = logging.getLogger("wanhooks.probes")

ICMP4_ECHO_REQUEST, ICMP4_ECHO_REPLY = 8, 0
ICMP6_ECHO_REQUEST, ICMP6_ECHO_REPLY = 128, 129
_ECHO = struct.Struct("!BBHHH")
# Two seconds of replies at 10 probes a second to each of two targets, read every second.
REPLIES_KEPT = 64
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


Reply = Callable[[IPAddress, int], None]  # (target, sequence number) of an answer
RoundTrip = tuple[float, IPAddress, float]  # (when answered, target, round trip seconds)


def _bound_socket(key: ProbeKey, kind: int, proto: int) -> socket.socket:
    family = socket.AF_INET if key.family == 4 else socket.AF_INET6
    sock = socket.socket(family, kind | socket.SOCK_NONBLOCK, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, key.link.encode())
        sock.bind((str(key.source), 0))
    except OSError:
        sock.close()
        raise
    return sock


def _target_of(key: ProbeKey, peer: str) -> IPAddress | None:
    address = peer.split("%")[0]
    return next((t for t in key.params.targets if str(t) == address), None)


class IcmpTransport:
    """One raw ICMP socket; the echo's identifier tells our replies from others'."""

    extra_tx = 0  # packets beyond one per probe (the passive watch counts ours)

    def __init__(self, key: ProbeKey, loop: asyncio.AbstractEventLoop, on_reply: Reply) -> None:
        self._key, self._loop, self._on_reply = key, loop, on_reply
        proto = socket.IPPROTO_ICMP if key.family == 4 else socket.IPPROTO_ICMPV6
        self._sock = _bound_socket(key, socket.SOCK_RAW, proto)
        self._ident = int.from_bytes(os.urandom(2), "big")
        loop.add_reader(self._sock.fileno(), self._readable)

    def send(self, target: IPAddress, seq: int) -> None:
        self._sock.sendto(echo_request(self._key.family, self._ident, seq), (str(target), 0))

    def _readable(self) -> None:
        while True:
            try:
                packet, peer = self._sock.recvfrom(2048)
            except OSError:  # drained (EAGAIN), or an error the next probes will show
                return
            parsed = parse_reply(self._key.family, packet)
            target = _target_of(self._key, peer[0])
            if parsed is not None and parsed[0] == self._ident and target is not None:
                self._on_reply(target, parsed[1])

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


# When the kernel resends an unanswered SYN (seconds after the first, tcp_syn_retries):
# counted as the prober's own packets, so the passive watch does not take them for traffic.
SYN_RESENT_AT = (1.0, 3.0, 7.0, 15.0, 31.0, 63.0)


class TcpTransport:
    """A connection attempt per probe; an answer is SYN-ACK or RST, never a timeout."""

    def __init__(self, key: ProbeKey, loop: asyncio.AbstractEventLoop, on_reply: Reply) -> None:
        self._key, self._loop, self._on_reply = key, loop, on_reply
        self._open: dict[int, tuple[socket.socket, float]] = {}  # fd -> socket, opened at
        self.extra_tx = 0  # packets beyond one per probe: the RST after a SYN-ACK, resent SYNs

    def send(self, target: IPAddress, seq: int) -> None:
        self._reap()
        sock = _bound_socket(self._key, socket.SOCK_STREAM, 0)
        # close() sends RST at once: no FIN exchange, no TIME_WAIT per probe
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        code = sock.connect_ex((str(target), self._key.params.probe_port))
        if code not in (0, errno.EINPROGRESS):
            sock.close()
            raise OSError(code, os.strerror(code))
        fd = sock.fileno()
        self._open[fd] = (sock, self._loop.time())
        self._loop.add_writer(fd, self._connected, fd, target, seq)

    def _connected(self, fd: int, target: IPAddress, seq: int) -> None:
        sock, _opened = self._open.pop(fd)
        self._loop.remove_writer(fd)
        code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        sock.close()
        self.extra_tx += code == 0  # closing a connected socket sends an RST
        if code in (0, errno.ECONNREFUSED):  # SYN-ACK or RST: the target answered
            self._on_reply(target, seq)

    def _reap(self) -> None:
        """Attempts unanswered for long count as lost: close them (the kernel would retry)."""
        now = self._loop.time()
        horizon = now - max(1.0, self._key.params.down_after)
        for fd, (sock, opened) in list(self._open.items()):
            if opened < horizon:
                del self._open[fd]
                self._loop.remove_writer(fd)
                sock.close()
                self.extra_tx += sum(1 for at in SYN_RESENT_AT if at < now - opened)

    def close(self) -> None:
        for fd, (sock, _opened) in self._open.items():
            self._loop.remove_writer(fd)
            sock.close()
        self._open.clear()


_DNS_HEADER = struct.Struct("!HHHHHH")  # id, flags, qdcount, ancount, nscount, arcount
DNS_TYPE_NS, DNS_CLASS_IN = 2, 1


def dns_query(query_id: int, name: str) -> bytes:
    """A recursive query for name's NS records."""
    labels = [label for label in name.strip(".").split(".") if label]
    qname = b"".join(bytes([len(label)]) + label.encode("ascii") for label in labels) + b"\0"
    header = _DNS_HEADER.pack(query_id, 0x0100, 1, 0, 0, 0)  # RD set
    return header + qname + struct.pack("!HH", DNS_TYPE_NS, DNS_CLASS_IN)


def dns_response_id(packet: bytes) -> int | None:
    """The id of a DNS response (QR set), or None for anything else."""
    if len(packet) < _DNS_HEADER.size:
        return None
    query_id, flags, *_counts = _DNS_HEADER.unpack_from(packet)
    return query_id if flags & 0x8000 else None


class DnsTransport:
    """One UDP socket; the query id carries the round's sequence number."""

    extra_tx = 0

    def __init__(self, key: ProbeKey, loop: asyncio.AbstractEventLoop, on_reply: Reply) -> None:
        self._key, self._loop, self._on_reply = key, loop, on_reply
        self._sock = _bound_socket(key, socket.SOCK_DGRAM, 0)
        self._salt = int.from_bytes(os.urandom(2), "big")  # ids are not guessable from outside
        loop.add_reader(self._sock.fileno(), self._readable)

    def send(self, target: IPAddress, seq: int) -> None:
        query = dns_query(seq ^ self._salt, self._key.params.query)
        self._sock.sendto(query, (str(target), self._key.params.probe_port))

    def _readable(self) -> None:
        while True:
            try:
                packet, peer = self._sock.recvfrom(4096)
            except OSError:
                return
            query_id = dns_response_id(packet)
            target = _target_of(self._key, peer[0])
            if query_id is not None and target is not None and peer[1] == self._key.params.probe_port:
                self._on_reply(target, query_id ^ self._salt)

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self._sock.close()


def _wake_up(nap: asyncio.Future[bool]) -> None:
    if not nap.done():
        nap.set_result(False)


class Transport(Protocol):
    """How a prober's echoes leave and its answers come back: a socket, or a test's script."""

    extra_tx: int  # packets beyond one per probe (the passive watch counts ours)

    def send(self, target: IPAddress, seq: int) -> None: ...

    def close(self) -> None: ...


# kind -> the transport for it, made with (key, loop, on_reply)
Transports = Mapping[Kind, Callable[[ProbeKey, asyncio.AbstractEventLoop, Reply], Transport]]
TRANSPORTS: Transports = {
    Kind.ICMP: IcmpTransport,
    Kind.TCP: TcpTransport,
    Kind.DNS: DnsTransport,
}


class LinkProber:
    def __init__(
        self,
        key: ProbeKey,
        on_change: Callable[[LinkProber], None],
        *,
        trusted: bool,
        clock: Callable[[], float],
        transports: Transports = TRANSPORTS,
        on_failure: Callable[[LinkProber, BaseException], None],
    ) -> None:
        self.key = key
        self._transports = transports
        self._on_change = on_change
        self._on_failure = on_failure  # its loop ended by a bug: the link's health would freeze
        self._clock = clock
        self.started = clock()
        self.health: Health = health.start(key.params, self.started, trusted=trusted)
        self._seq = 0
        self._sent_at: dict[tuple[IPAddress, int], float] = {}
        self._sent_ok = 0  # probes that left (for the passive watch: our own packets)
        self.own_rx = 0  # answers received
        # probes lately sent, oldest first: their answers may be counted by the kernel before
        # this prober reads them (in_flight), and must not pass for traffic heard
        self._recent: deque[tuple[float, IPAddress, int]] = deque()
        # the last few replies' (when, target, round trip): weight: auto reads the queueing in them
        self.replies: deque[RoundTrip] = deque(maxlen=REPLIES_KEPT)
        self._transport: Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._nap: asyncio.Future[bool] | None = None  # the loop's wait; a round due earlier ends it
        self._nap_until = math.inf  # when the current wait ends
        self._released: asyncio.Future[None] | None = None  # start(held=True) until release()

    def start(self, loop: asyncio.AbstractEventLoop, *, held: bool = False) -> None:
        """Open the transport and start probing; `held`: the first probe waits for release()
        (the daemon's round that is building this link's table and rule: a probe sent
        before them has no route, and would count as lost)."""
        self._transport = self._transports[self.key.params.kind](self.key, loop, self._replied)
        self._released = loop.create_future()
        if not held:
            self._released.set_result(None)
        self._task = loop.create_task(self._run())
        self._task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        exc = None if task.cancelled() else task.exception()
        if exc is not None:
            self._on_failure(self, exc)

    def release(self) -> None:
        if self._released is not None and not self._released.done():
            self._released.set_result(None)

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    @property
    def own_tx(self) -> int:
        """Packets this prober has sent on its link."""
        return self._sent_ok + (self._transport.extra_tx if self._transport is not None else 0)

    def in_flight(self) -> int:
        """Probes sent within the last answer wait (1 s at least) and not answered yet: their
        answers may be in the kernel's counters already, not yet in own_rx."""
        self._forget_recent(self._clock())
        return sum(1 for _at, target, seq in self._recent if (target, seq) in self._sent_at)

    def _forget_recent(self, now: float) -> None:
        horizon = now - max(1.0, health.answer_wait(self.health))
        while self._recent and self._recent[0][0] < horizon:
            self._recent.popleft()

    def suspect(self) -> None:
        """The passive watch saw this link's traffic go unanswered."""
        self._update(health.suspect(self.health, self._clock()))

    def heard(self) -> None:
        """The passive watch heard traffic from beyond this link: it is alive."""
        self._update(health.heard(self.health, self._clock()))

    async def _run(self) -> None:
        """The rounds the machine asks for, when it asks; in between, a sleep until the
        machine next needs a look (every half fast interval when fast, else the next
        heartbeat or answer due) -- cut short when a round falls due earlier."""
        assert self._released is not None
        await self._released
        while True:
            if self._clock() >= health.next_round(self.health):
                self._send_round()
            await self._sleep(max(0.0, health.next_look(self.health, self._clock()) - self._clock()))
            now = self._clock()
            new = health.evaluate(self.health, now)
            if new.suspected_since is not None and self.health.suspected_since is None:
                log.info(
                    "health: %s IPv%d suspected: a heartbeat went unanswered; probing fast",
                    self.key.link, self.key.family,
                )  # fmt: skip
            self._update(new)

    async def _sleep(self, delay: float) -> None:
        """Sleep for delay, or until a round falls due earlier (_update).  A bare future and
        a timer: this runs every half fast interval for a fast prober, so no task per wait."""
        loop = asyncio.get_running_loop()
        nap: asyncio.Future[bool] = loop.create_future()
        self._nap, self._nap_until = nap, self._clock() + delay
        timer = loop.call_later(delay, _wake_up, nap)
        try:
            await nap
        finally:
            timer.cancel()
            self._nap, self._nap_until = None, math.inf

    def _send_round(self) -> None:
        assert self._transport is not None
        self._seq = (self._seq + 1) & 0xFFFF
        now = self._clock()
        self.health, targets = health.send_round(self.health, now)
        for target in targets:
            try:
                self._transport.send(target, self._seq)
                self._sent_ok += 1
                self._recent.append((now, target, self._seq))
            except OSError as exc:  # unreachable right now: counts as a lost probe
                log.debug("probe %s -> %s: %s", self.key.link, target, exc.strerror)
            self._sent_at[(target, self._seq)] = now
        self._forget_recent(now)  # (whether or not a passive watch asks: a steady prober's too)
        if len(self._sent_at) > 64 * len(self.key.params.targets):  # forget probes long lost
            for old in sorted(self._sent_at, key=lambda k: self._sent_at[k])[: len(self._sent_at) // 2]:
                del self._sent_at[old]

    def _replied(self, target: IPAddress, seq: int) -> None:
        self.own_rx += 1
        sent_at = self._sent_at.pop((target, seq), None)
        if sent_at is None:
            return
        now = self._clock()
        self.replies.append((now, target, now - sent_at))
        self._update(health.replied(self.health, target, now - sent_at, now))

    def _update(self, new: Health) -> None:
        old, self.health = self.health, new
        for target in new.set_aside.keys() - old.set_aside.keys():
            log.info(
                "health: %s IPv%d: target %s set aside for %g s: %d heartbeats unanswered in a row "
                "while others answer (rate-limited?)", self.key.link, self.key.family, target,
                c.PROBE_SET_ASIDE_S, c.PROBE_SET_ASIDE_AFTER, extra=about(self.key.link, self.key.family),
            )  # fmt: skip
        if self._nap is not None and not self._nap.done() and health.next_round(new) < self._nap_until:
            self._nap.set_result(True)  # suspected, or traffic on a failed link: a round now
        if new.state is not old.state:
            self._on_change(self)
