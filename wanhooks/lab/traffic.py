"""Traffic for the namespace lab, run inside a namespace.

    ip netns exec NS python -m wanhooks.lab.traffic udp --dst 203.0.113.10 --count 3000
    ip netns exec NS python -m wanhooks.lab.traffic ping --dst fe80::1%w2

Why a program of our own rather than ping/iperf: the lab's flow counters
identify a flow by its 5-tuple, so the generator must make flows that are
reproducible (explicit source ports) and cheap (thousands in well under a
second); and the machines this runs on do not always have iputils' ping.
Standard library only, so it runs with whatever interpreter runs the tests.

Exit status: 0 when every datagram was sent (udp) or a reply came back
(ping); 1 otherwise, with one line on stderr saying why; 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Callable, Sequence

from wanhooks.health.probes import checksum

ICMP4_ECHO_REQUEST = 8
ICMP4_ECHO_REPLY = 0
ICMP6_ECHO_REQUEST = 128
ICMP6_ECHO_REPLY = 129


def resolve(dst: str, port: int) -> tuple[socket.AddressFamily, tuple[object, ...]]:
    """Numeric address (with an optional %scope for link-local) -> family and sockaddr."""
    infos = socket.getaddrinfo(dst, port, type=socket.SOCK_DGRAM, flags=socket.AI_NUMERICHOST)
    family, _, _, _, sockaddr = infos[0]
    return family, tuple(sockaddr)


def _prepare(sock: socket.socket, device: str | None, bind: str | None, port: int) -> None:
    """Pin the socket to a device and/or a source address and port before it sends."""
    if device:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, device.encode())
    if bind or port:
        sock.bind((bind or "", port))


# --------------------------------------------------------------------------
# udp: one datagram per flow
# --------------------------------------------------------------------------


def send_udp_flows(
    dst: str,
    count: int,
    dport: int,
    sport_base: int,
    bind: str | None = None,
    device: str | None = None,
    payload: bytes = b"wanhooks-lab",
    dsts: int = 1,
) -> int:
    """Send `count` one-datagram flows from ports sport_base.. ; return how many failed.

    Each flow gets its own socket bound to an explicit port, so the same call
    makes the same 5-tuples every time (remap tests compare runs).
    """
    family, sockaddr = resolve(dst, dport)
    first = ipaddress.ip_address(str(sockaddr[0])) if dsts > 1 else None
    errors = 0
    why: dict[str, int] = {}
    for n in range(count):
        if first is not None:  # flow n goes to dst + n % dsts (the lab's internet answers a whole prefix)
            sockaddr = (str(first + n % dsts), *sockaddr[1:])
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                _prepare(sock, device, bind, sport_base + n)
                sock.sendto(payload, sockaddr)
            except OSError as exc:
                errors += 1
                why[exc.strerror or str(exc)] = why.get(exc.strerror or str(exc), 0) + 1
    if why:
        print("udp: " + ", ".join(f"{n} x {text}" for text, n in why.items()), file=sys.stderr)
    return errors


def udp_rate(
    dst: str, rate: float, seconds: float, dports: tuple[int, int], sockets: int, sport_base: int
) -> int:
    """New one-datagram UDP flows at `rate` a second for `seconds`; prints and returns how many.

    A busy router's stream of new connections (DNS lookups, QUIC, short
    requests).  Every flow is a 5-tuple not used for sockets * (dports span)
    flows, so with 256 sockets and 1000 ports each one is new to conntrack
    (a UDP entry lives 30 s) up to 3,000 flows a second for over a minute.
    Sends in small bursts on a 5 ms clock, so the rate holds within 1 %.
    """
    family, sockaddr = resolve(dst, dports[0])
    span = dports[1] - dports[0] + 1
    socks = []
    try:
        for n in range(sockets):
            sock = socket.socket(family, socket.SOCK_DGRAM)
            socks.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(("", sport_base + n))
        print("started", flush=True)
        sent = errors = 0
        start = time.monotonic()
        while (elapsed := time.monotonic() - start) < seconds:
            due = int(elapsed * rate)
            while sent < due:
                port = dports[0] + (sent // sockets) % span
                try:
                    socks[sent % sockets].sendto(b"wanhooks-lab", (sockaddr[0], port, *sockaddr[2:]))
                except OSError:
                    errors += 1
                sent += 1
            time.sleep(0.005)
        print(json.dumps({"sent": sent, "errors": errors}), flush=True)
        return sent
    finally:
        for sock in socks:
            sock.close()


# --------------------------------------------------------------------------
# ping: ICMP echo over a raw socket (we are root in the lab)
# --------------------------------------------------------------------------


def echo_request(family: socket.AddressFamily, ident: int, seq: int) -> bytes:
    """An echo request; for IPv4 with its checksum filled in."""
    payload = struct.pack("!d", time.time())
    if family == socket.AF_INET6:
        return struct.pack("!BBHHH", ICMP6_ECHO_REQUEST, 0, 0, ident, seq) + payload
    head = struct.pack("!BBHHH", ICMP4_ECHO_REQUEST, 0, 0, ident, seq)
    csum = checksum(head + payload)
    return struct.pack("!BBHHH", ICMP4_ECHO_REQUEST, 0, csum, ident, seq) + payload


def is_reply(family: socket.AddressFamily, packet: bytes, ident: int, seq: int) -> bool:
    """Whether a raw-socket read is the reply to our request (raw ICMP sees everything)."""
    if family == socket.AF_INET:
        packet = packet[(packet[0] & 0x0F) * 4 :]  # IPv4 raw sockets include the IP header
        want = ICMP4_ECHO_REPLY
    else:
        want = ICMP6_ECHO_REPLY
    if len(packet) < 8:
        return False
    kind, _, _, rid, rseq = struct.unpack("!BBHHH", packet[:8])
    return bool(kind == want and rid == ident and rseq == seq)


def _same_host(a: tuple[object, ...], b: tuple[object, ...]) -> bool:
    """Compare the address part of two sockaddrs (ignore port, flow info, scope)."""
    return socket.inet_pton(*_fam(a)) == socket.inet_pton(*_fam(b))


def _fam(sockaddr: tuple[object, ...]) -> tuple[int, str]:
    host = str(sockaddr[0]).split("%", 1)[0]
    return (socket.AF_INET6 if ":" in host else socket.AF_INET), host


def ping(
    dst: str, count: int = 1, timeout: float = 1.0, device: str | None = None, bind: str | None = None
) -> bool:
    """Send `count` echo requests, waiting up to `timeout` for each; True if any came back."""
    family, sockaddr = resolve(dst, 0)
    proto = socket.IPPROTO_ICMPV6 if family == socket.AF_INET6 else socket.IPPROTO_ICMP
    ident = os.getpid() & 0xFFFF
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        _prepare(sock, device, bind, 0)
        for seq in range(1, count + 1):
            try:
                sock.sendto(echo_request(family, ident, seq), sockaddr)
            except OSError:
                time.sleep(min(timeout, 0.2))  # unreachable now; the next try may do better
                continue
            if _await_reply(sock, family, sockaddr, ident, seq, timeout):
                return True
    return False


def _await_reply(
    sock: socket.socket,
    family: socket.AddressFamily,
    sockaddr: tuple[object, ...],
    ident: int,
    seq: int,
    timeout: float,
) -> bool:
    deadline = time.monotonic() + timeout
    while (left := deadline - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            packet, peer = sock.recvfrom(65535)
        except TimeoutError:
            return False
        if is_reply(family, packet, ident, seq) and _same_host(tuple(peer), sockaddr):
            return True
    return False


# --------------------------------------------------------------------------
# tcp: a sink that discards, and N bulk senders (aggregate throughput)
# --------------------------------------------------------------------------


def serve_tcp(port: int, seconds: float, handle: Callable[[socket.socket], None]) -> None:
    """Accept on every address of both families (the lab's internet answers whole
    prefixes), one thread per connection, for a bounded time."""
    import threading

    def accept(srv: socket.socket) -> None:
        while True:
            conn, _ = srv.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    for family, any_addr in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        srv = socket.socket(family, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            srv.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        srv.bind((any_addr, port))
        srv.listen(256)
        threading.Thread(target=accept, args=(srv,), daemon=True).start()
    print("ready", flush=True)
    time.sleep(seconds)  # bounded: the server always ends by itself


def tcp_sink(port: int, seconds: float) -> None:
    """Discard whatever arrives (aggregate throughput)."""
    serve_tcp(port, seconds, _drain)


def tcp_source(port: int, seconds: float) -> None:
    """Send to whoever connects, as fast as the path takes it (their downloads)."""
    block = b"\0" * (1 << 16)

    def pour(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while conn.send(block):
                pass

    serve_tcp(port, seconds, pour)


def _drain(conn: socket.socket) -> None:
    with conn:
        while conn.recv(1 << 16):
            pass


def tcp_flood(dst: str, port: int, flows: int, seconds: float) -> int:
    """`flows` connections each sending as fast as it can for `seconds`; prints bytes sent."""
    import threading

    family, sockaddr = resolve(dst, port)
    sent = [0] * flows
    deadline = time.monotonic() + seconds
    block = b"\0" * (1 << 16)

    def one(n: int) -> None:
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.settimeout(2.0)
                sock.connect(sockaddr)
                while time.monotonic() < deadline:
                    sent[n] += sock.send(block)
        except OSError:
            pass

    threads = [threading.Thread(target=one, args=(n,)) for n in range(flows)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sum(sent))
    return 0 if all(sent) else 1


def tcp_churn(dst: str, port: int, flows: int, seconds: float, life: float, pull: bool = False) -> int:
    """`flows` workers, each sending over one connection after another: a connection lives
    `life` seconds, or less when a send stalls for a second (its link died), and the worker
    opens the next one, so new connections keep being balanced (a busy LAN's traffic).
    `pull`: each connection receives instead (from a tcp-source: downloads).
    Prints the connections opened and the bytes moved."""
    import threading

    family, sockaddr = resolve(dst, port)
    deadline = time.monotonic() + seconds
    block = b"\0" * (1 << 14)
    opened = [0] * flows
    sent = [0] * flows

    def one(n: int) -> None:
        while time.monotonic() < deadline:
            ends = min(deadline, time.monotonic() + life)
            try:
                with socket.socket(family, socket.SOCK_STREAM) as sock:
                    sock.settimeout(1.0)
                    sock.connect(sockaddr)
                    opened[n] += 1
                    while time.monotonic() < ends:
                        moved = len(sock.recv(1 << 16)) if pull else sock.send(block)
                        if not moved:
                            break  # the other end closed
                        sent[n] += moved
            except OSError:
                time.sleep(0.05)  # refused or stalled: the next connection, after a breath

    threads = [threading.Thread(target=one, args=(n,)) for n in range(flows)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(json.dumps({"connections": sum(opened), "bytes": sum(sent)}), flush=True)
    return 0


def dns_answer(addresses: Sequence[str], port: int, seconds: float) -> None:
    """Answer every DNS query with an empty response (QR set): enough for a dns probe."""
    socks = []
    for address in addresses:
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        sock.bind((address, port))
        socks.append(sock)
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select(socks, [], [], left)
        for sock in readable:
            query, peer = sock.recvfrom(512)
            if len(query) >= 12:
                sock.sendto(query[:2] + bytes([query[2] | 0x80, query[3]]) + query[4:], peer)


def tcp_echo(port: int, seconds: float) -> None:
    """Echo every byte back (long-lived connection tests)."""

    def echo(conn: socket.socket) -> None:
        with conn:
            try:
                while data := conn.recv(4096):
                    conn.sendall(data)
            except OSError:
                pass

    serve_tcp(port, seconds, echo)


def tcp_hold(
    dst: str, port: int, flows: int, seconds: float, interval: float, bind: str | None = None
) -> int:
    """`flows` connections, each echoing a few bytes every `interval` for `seconds`.

    Prints one JSON line: per flow its local port, the longest wait for an echo
    (a stall), how many echoes came back, and the error that ended it (or null).
    """

    import threading

    family, sockaddr = resolve(dst, port)
    results: list[dict[str, object]] = [{} for _ in range(flows)]
    ready = threading.Barrier(flows + 1)
    end = [0.0]

    def one(n: int) -> None:
        result: dict[str, object] = {"sport": 0, "max_gap": 0.0, "echoes": 0, "error": None}
        results[n] = result
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.settimeout(3)
            if bind:
                sock.bind((bind, 0))
            sock.connect(sockaddr)
            result["sport"] = sock.getsockname()[1]
        except OSError as exc:
            result["error"] = f"connect: {exc.strerror or exc}"
            ready.wait()
            return
        ready.wait()
        last = time.monotonic()
        with sock:
            sock.settimeout(5)
            try:
                while time.monotonic() < end[0]:
                    sock.sendall(b"ping")
                    got = b""
                    while len(got) < 4:
                        chunk = sock.recv(4 - len(got))
                        if not chunk:
                            raise ConnectionResetError("closed by the peer")
                        got += chunk
                    now = time.monotonic()
                    result["max_gap"] = max(float(result["max_gap"]), now - last)  # type: ignore[arg-type]
                    result["echoes"] = int(result["echoes"]) + 1  # type: ignore[call-overload]
                    last = now
                    time.sleep(interval)
            except OSError as exc:
                result["error"] = exc.strerror or type(exc).__name__

    threads = [threading.Thread(target=one, args=(n,)) for n in range(flows)]
    end[0] = time.monotonic() + seconds + 3.0  # connecting may take a moment; set before anyone looks
    for t in threads:
        t.start()
    ready.wait()
    end[0] = time.monotonic() + seconds
    print("started", flush=True)
    for t in threads:
        t.join()
    print(json.dumps(results), flush=True)
    return 0


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m wanhooks.lab.traffic", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    udp = sub.add_parser("udp", help="N one-datagram UDP flows from consecutive source ports")
    udp.add_argument("--dst", required=True)
    udp.add_argument("--count", type=int, required=True)
    udp.add_argument("--dport", type=int, default=9000)
    udp.add_argument("--bind", help="source address")
    udp.add_argument("--device", help="SO_BINDTODEVICE")
    udp.add_argument("--sport-base", type=int, default=20000)
    udp.add_argument("--dsts", type=int, default=1, help="spread flows over this many addresses from --dst")
    udp.add_argument("--size", type=int, default=0, help="payload bytes (0: a short label)")
    rate = sub.add_parser("udp-rate", help="new one-datagram UDP flows at a steady rate; JSON totals")
    rate.add_argument("--dst", required=True)
    rate.add_argument("--rate", type=float, required=True, help="new flows a second")
    rate.add_argument("--seconds", type=float, default=10.0)
    rate.add_argument("--dports", default="8000-8999", help="destination port range FIRST-LAST")
    rate.add_argument("--sockets", type=int, default=256, help="source ports, from --sport-base")
    rate.add_argument("--sport-base", type=int, default=30000)
    sink = sub.add_parser("tcp-sink", help="accept TCP on a port and discard, for a bounded time")
    sink.add_argument("--port", type=int, default=9100)
    sink.add_argument("--seconds", type=float, default=120.0)
    churn = sub.add_parser("tcp-churn", help="N senders opening connection after connection; JSON totals")
    churn.add_argument("--dst", required=True)
    churn.add_argument("--port", type=int, default=9100)
    churn.add_argument("--flows", type=int, default=16)
    churn.add_argument("--seconds", type=float, default=10.0)
    churn.add_argument("--life", type=float, default=2.0, help="seconds each connection sends")
    churn.add_argument("--pull", action="store_true", help="receive instead (from a tcp-source)")
    source = sub.add_parser("tcp-source", help="send to whoever connects, for a bounded time")
    source.add_argument("--port", type=int, default=9300)
    source.add_argument("--seconds", type=float, default=120.0)
    flood = sub.add_parser("tcp-flood", help="N bulk TCP senders for a while; prints bytes sent")
    flood.add_argument("--dst", required=True)
    flood.add_argument("--port", type=int, default=9100)
    flood.add_argument("--flows", type=int, default=16)
    flood.add_argument("--seconds", type=float, default=5.0)
    echo = sub.add_parser("tcp-echo", help="echo TCP on a port, for a bounded time")
    echo.add_argument("--port", type=int, default=9200)
    echo.add_argument("--seconds", type=float, default=120.0)
    hold = sub.add_parser("tcp-hold", help="long-lived echoing connections; prints their fate as JSON")
    hold.add_argument("--dst", required=True)
    hold.add_argument("--port", type=int, default=9200)
    hold.add_argument("--flows", type=int, default=30)
    hold.add_argument("--seconds", type=float, default=8.0)
    hold.add_argument("--interval", type=float, default=0.05)
    hold.add_argument("--bind", help="source address (a link's own: its connections use its table)")
    dns = sub.add_parser("dns-answer", help="answer DNS queries with empty responses, for a bounded time")
    dns.add_argument("--address", action="append", required=True)
    dns.add_argument("--port", type=int, default=53)
    dns.add_argument("--seconds", type=float, default=30.0)
    watch = sub.add_parser("route-watch", help="record every moment with no route to an address")
    watch.add_argument("--dst", required=True)
    watch.add_argument("--interval", type=float, default=0.002)
    watch.add_argument("--seconds", type=float, default=3600.0)
    relay = sub.add_parser("tun-relay", help="a point-to-point tunnel end over UDP, for a bounded time")
    relay.add_argument("--name", required=True, help="the tun device to create")
    relay.add_argument("--listen", help="server end: address:port")
    relay.add_argument("--peer", help="client end: the server's address:port")
    relay.add_argument("--mark", type=lambda text: int(text, 0), default=0, help="SO_MARK of its datagrams")
    relay.add_argument("--seconds", type=float, default=60.0)
    png = sub.add_parser("ping", help="ICMP echo; exit 0 if any reply")
    png.add_argument("--dst", required=True, help="address, link-local with %%dev")
    png.add_argument("--count", type=int, default=1)
    png.add_argument("--timeout", type=float, default=1.0, help="seconds to wait for each reply")
    png.add_argument("--bind", help="source address")
    png.add_argument("--device", help="SO_BINDTODEVICE")
    return ap


TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
SO_MARK = 36


def tun_relay(name: str, listen: str | None, peer: str | None, mark: int, seconds: float) -> None:
    """A point-to-point tunnel end: packets from tun NAME go in UDP datagrams to the other end.

    The client end (`peer` "host:port") sends from a socket marked `mark`, as WireGuard
    and OpenVPN mark their own encapsulated packets; the server end (`listen`
    "host:port", a fixed address so NAT on the way sees its replies) answers whoever
    last reached it.  The device lives as long as this process.
    """
    import fcntl

    tun = os.open("/dev/net/tun", os.O_RDWR)
    fcntl.ioctl(tun, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TUN | IFF_NO_PI))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if mark:
        sock.setsockopt(socket.SOL_SOCKET, SO_MARK, mark)
    remote: tuple[str, int] | None = None
    if listen is not None:
        host, port = listen.rsplit(":", 1)
        sock.bind((host, int(port)))
    if peer is not None:
        host, port = peer.rsplit(":", 1)
        remote = (host, int(port))
    print("ready", flush=True)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        readable, _, _ = select.select([tun, sock.fileno()], [], [], 0.2)
        if tun in readable:
            packet = os.read(tun, 65535)
            if remote is not None:
                with contextlib.suppress(OSError):  # no route yet, or the peer went away
                    sock.sendto(packet, remote)
        if sock.fileno() in readable:
            packet, sender = sock.recvfrom(65535)
            if listen is not None:
                remote = sender
            with contextlib.suppress(OSError):
                os.write(tun, packet)


def route_watch(dst: str, interval: float, seconds: float) -> None:
    """Every `interval`, ask the kernel for a route to `dst` (a UDP connect: a route lookup,
    nothing sent).  Ends at SIGTERM or after `seconds`; prints one JSON line: the number of
    lookups and every stretch (monotonic start, end) with no route."""

    import signal

    stop = [False]
    signal.signal(signal.SIGTERM, lambda *_: stop.__setitem__(0, True))
    family, sockaddr = resolve(dst, 9)
    gaps: list[list[float]] = []
    lookups = 0
    was_routed = True
    print("ready", flush=True)
    end = time.monotonic() + seconds
    while not stop[0] and time.monotonic() < end:
        now = time.monotonic()
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            try:
                sock.connect(sockaddr)
                routed = True
            except OSError:
                routed = False
        lookups += 1
        if not routed:
            if was_routed:
                gaps.append([now, now])
            else:
                gaps[-1][1] = now  # the same stretch goes on
        was_routed = routed
        time.sleep(interval)
    print(json.dumps({"lookups": lookups, "gaps": gaps}), flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "udp":
        if args.count < 0 or args.sport_base < 1 or args.sport_base + args.count - 1 > 65535:
            print("udp: --count or --sport-base gives source ports outside 1..65535", file=sys.stderr)
            return 2
        errors = send_udp_flows(
            args.dst,
            args.count,
            args.dport,
            args.sport_base,
            args.bind,
            args.device,
            payload=b"\0" * min(args.size, 65000) if args.size > 0 else b"wanhooks-lab",
            dsts=args.dsts,
        )
        if errors:
            print(f"udp: {errors} of {args.count} flows could not be sent", file=sys.stderr)
        return 1 if errors else 0
    if args.cmd == "udp-rate":
        first, _, last = args.dports.partition("-")
        udp_rate(
            args.dst, args.rate, args.seconds, (int(first), int(last or first)), args.sockets, args.sport_base
        )
        return 0
    if args.cmd == "tcp-sink":
        tcp_sink(args.port, args.seconds)
        return 0
    if args.cmd == "tcp-echo":
        tcp_echo(args.port, args.seconds)
        return 0
    if args.cmd == "tcp-hold":
        return tcp_hold(args.dst, args.port, args.flows, args.seconds, args.interval, args.bind)
    if args.cmd == "tcp-churn":
        return tcp_churn(args.dst, args.port, args.flows, args.seconds, args.life, args.pull)
    if args.cmd == "tcp-source":
        tcp_source(args.port, args.seconds)
        return 0
    if args.cmd == "tcp-flood":
        return tcp_flood(args.dst, args.port, args.flows, args.seconds)
    if args.cmd == "dns-answer":
        dns_answer(args.address, args.port, args.seconds)
        return 0
    if args.cmd == "route-watch":
        route_watch(args.dst, args.interval, args.seconds)
        return 0
    if args.cmd == "tun-relay":
        tun_relay(args.name, args.listen, args.peer, args.mark, args.seconds)
        return 0
    if ping(args.dst, args.count, args.timeout, args.device, args.bind):
        return 0
    print(f"ping: no reply from {args.dst}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
