"""From a delegated prefix appearing on the LAN to its rule in the kernel; and its expiry.

    python bench/prefix_latency.py [--events 200] [--valid 3]

Root; builds a 2-link lab (namespaces, deleted afterwards) and runs `wanhooks
run` in its router with `delegated_to: lan0` on w1.  A monitor in the router
namespace listens to rtnetlink and timestamps, by one clock, the kernel's
notification of each address (t0) and of the rule that answers it (t1).

  renumbered   the router's LAN interface gets an address from a new prefix
               (dynamic: valid --valid s) and loses the last one, as a DHCPv6-PD
               client leaves it at a renumbering: t0 the new address, t1 the
               rule `from <its /64> lookup <w1's table>`.
  expired      each prefix that left the LAN keeps its rule until its valid
               lifetime ends: from that moment to the rule's deletion.
Baseline, same run: an address added to the WAN link w1 itself, answered by
its source rule `from <address> lookup <w1's table>` -- the same path through
the daemon (an address event, a round, a rule) without learning anything.
The target is 1 s from the manager knowing (its address) to the rule.
Prints Markdown.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from event_latency import pct, row  # the same table as the other latency bench

HDR = struct.Struct("=IHHII")
RTM_NEWADDR, RTM_NEWRULE, RTM_DELRULE = 20, 32, 33
RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV6_RULE = 9, 19
FRA_SRC = 2


def monitor_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
    sock.bind((0, 0))
    for group in (RTNLGRP_IPV6_IFADDR, RTNLGRP_IPV6_RULE):
        sock.setsockopt(270, 1, group)  # SOL_NETLINK, NETLINK_ADD_MEMBERSHIP
    return sock


def _attrs(raw: bytes, offset: int) -> dict[int, bytes]:
    found = {}
    while offset + 4 <= len(raw):
        length, kind = struct.unpack_from("=HH", raw, offset)
        if length < 4:
            break
        found[kind & 0x3FFF] = raw[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


def events(sock: socket.socket, timeout: float) -> list[tuple[float, str, str]]:
    """(when, "addr" | "rule+" | "rule-", address or prefix) of each message in one read."""
    out: list[tuple[float, str, str]] = []
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return out
    data = sock.recv(1 << 20)
    now = time.monotonic()
    offset = 0
    while offset + HDR.size <= len(data):
        length, kind = HDR.unpack_from(data, offset)[:2]
        if length < HDR.size:
            break
        raw = data[offset : offset + length]
        offset += (length + 3) & ~3
        if kind == RTM_NEWADDR:
            attrs = _attrs(raw, HDR.size + 8)
            value = attrs.get(1)  # IFA_ADDRESS
            if value is not None and len(value) == 16:
                out.append((now, "addr", str(ipaddress.IPv6Address(value))))
        elif kind in (RTM_NEWRULE, RTM_DELRULE):
            src_len = raw[HDR.size + 2]
            src = _attrs(raw, HDR.size + 12).get(FRA_SRC)
            if src is not None and len(src) == 16:
                prefix = ipaddress.IPv6Network((ipaddress.IPv6Address(src), src_len))
                out.append((now, "rule+" if kind == RTM_NEWRULE else "rule-", str(prefix)))
    return out


def wait_for(sock: socket.socket, kind: str, what: str, seen: list[tuple[float, str, str]],
             timeout: float = 5.0) -> float | None:  # fmt: skip
    """When the message (kind, what) came: from those already seen, or the next ones."""
    deadline = time.monotonic() + timeout
    while True:
        for stamp, k, value in seen:
            if k == kind and value == what:
                return stamp
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        seen.extend(events(sock, left))


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def inner(args: argparse.Namespace) -> None:
    """In the router namespace: make the events, time the answers, print JSON."""
    sock = monitor_socket()
    seen: list[tuple[float, str, str]] = []
    learned, baseline, expired, missed = [], [], [], 0
    gone_at: dict[str, float] = {}  # prefix -> when its valid lifetime ends
    previous = None
    for i in range(1, args.events + 1):
        prefix = f"fd00:1:100:{i:x}::/64"
        address = f"fd00:1:100:{i:x}::1"
        seen.clear()
        ip("addr", "add", f"{address}/64", "dev", "lan0", "nodad", "valid_lft", str(args.valid),
           "preferred_lft", str(max(1, args.valid - 1)))  # fmt: skip
        ends = time.monotonic() + args.valid
        t0 = wait_for(sock, "addr", address, seen)
        t1 = wait_for(sock, "rule+", prefix, seen)
        if t0 is None or t1 is None:
            missed += 1
        else:
            learned.append(t1 - t0)
        if previous is not None:
            ip("addr", "del", previous[0], "dev", "lan0")
            gone_at[previous[1]] = previous[2]
        previous = (f"{address}/64", prefix, ends)
        # the baseline: an address on the WAN link itself, and its source rule
        wan = f"fd00:1::{0x1000 + i:x}"
        ip("addr", "add", f"{wan}/64", "dev", "w1", "nodad")
        t0 = wait_for(sock, "addr", wan, seen)
        t1 = wait_for(sock, "rule+", f"{wan}/128", seen)
        if t0 is None or t1 is None:
            missed += 1
        else:
            baseline.append(t1 - t0)
        ip("addr", "del", f"{wan}/64", "dev", "w1")
        time.sleep(args.gap)
        for stamp, kind, value in seen:
            if kind == "rule-" and value in gone_at:
                expired.append(stamp - gone_at.pop(value))
    deadline = time.monotonic() + args.valid + 3
    while gone_at and time.monotonic() < deadline:
        for stamp, kind, value in events(sock, 0.5):
            if kind == "rule-" and value in gone_at:
                expired.append(stamp - gone_at.pop(value))
    print(json.dumps({"learned": learned, "baseline": baseline, "expired": expired,
                      "missed": missed, "never_expired": len(gone_at)}))  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--valid", type=int, default=3, help="each prefix's valid lifetime, seconds")
    ap.add_argument("--gap", type=float, default=0.05, help="seconds between events")
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        inner(args)
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from wanhooks.lab import Lab

    with Lab(2) as lab, tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "wanhooks.yaml"
        cfg.write_text(
            "links:\n  - {interface: w1, gateway: [100.64.1.1, 'fe80::1'], delegated_to: lan0}\n"
            "  - {interface: w2, gateway: [100.64.2.1, 'fe80::1']}\n"
        )
        run_dir = Path(tmp) / "run"
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", lab.router, sys.executable, "-m", "wanhooks", "-c", str(cfg),
             "--run-dir", str(run_dir), "run"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        try:
            time.sleep(1.5)
            argv = [sys.executable, __file__, "--inner", "--events", str(args.events),
                    "--valid", str(args.valid), "--gap", str(args.gap)]  # fmt: skip
            out = lab.ns_exec(lab.router, argv, timeout=args.events * 5 + 60).stdout
            result = json.loads(out)
        finally:
            daemon.terminate()
            daemon.wait(10)
    print("| path | events | median ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    print(row("a new delegated prefix on the LAN -> its rule", result["learned"]))
    print(row("baseline: an address on the WAN -> its source rule", result["baseline"]))
    print(row("a prefix's valid lifetime ends -> its rule deleted", result["expired"]))
    ratio = statistics.median(result["learned"]) / statistics.median(result["baseline"])
    print()
    print(
        f"Learned vs the WAN address's rule (medians): {ratio:.2f}x. Target 1 s from the address: "
        f"{'met' if pct(result['learned'], 0.99) < 1.0 else 'missed'} (p99). Missed events: "
        f"{result['missed']}; rules never expired: {result['never_expired']}."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
