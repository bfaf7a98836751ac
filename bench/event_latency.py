"""From a kernel event to the balance group updated in the kernel: the daemon vs a hook's one-shot apply.

    python bench/event_latency.py [--events 200] [--baseline 30] [--idle 20] [--links 4]

Root; builds a 4-link lab (namespaces, deleted afterwards) and runs
`wanhooks run` in its router.  `--links N` adds N - 4 more uplinks to the
router (veth pairs to a namespace of their own, each with an address and a
default route in main, as DHCP leaves them): the daemon manages all N, the
events are the same.  A monitor inside the router namespace listens
to rtnetlink and timestamps, for each event, the kernel's notification of
the event itself (t0) and the notification of the group change that answers
it (t1): the latency is t1 - t0, measured by one clock.

  carrier up   an ISP-side veth comes back: wanhooks must re-create the
               nexthop (the kernel deleted it on carrier loss) and put it
               back into the group.  (Carrier *loss* needs no wanhooks: the
               kernel drops the member itself, at once.)
  gateway      the main table's default for w1 is replaced with another
               gateway, as a DHCP client does on renew.
Baseline, same run: the daemon stopped, each event answered by spawning
`wanhooks apply` the moment the event is seen (what a dispatcher hook does
when no daemon runs; a real NetworkManager adds its own delays on top).
Also: the idle daemon's RSS and CPU with 4 links.  Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import os
import select
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HDR = struct.Struct("=IHHII")
IFINFO = struct.Struct("=BxHiII")
RTM_NEWLINK, RTM_NEWROUTE, RTM_NEWNEXTHOP = 16, 24, 104
IFF_LOWER_UP = 0x10000
RTNLGRP_NEXTHOP = 32


# --------------------------------------------------------------------------
# inside the router namespace
# --------------------------------------------------------------------------


def monitor_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
    sock.setsockopt(socket.SOL_SOCKET, 33, 8 << 20)  # SO_RCVBUFFORCE
    sock.bind((0, (1 << 0) | (1 << 6)))  # RTNLGRP_LINK (1), RTNLGRP_IPV4_ROUTE (7)
    sock.setsockopt(270, 1, RTNLGRP_NEXTHOP)  # SOL_NETLINK, NETLINK_ADD_MEMBERSHIP
    return sock


def messages(sock: socket.socket, timeout: float) -> list[tuple[float, bytes]]:
    out: list[tuple[float, bytes]] = []
    ready, _, _ = select.select([sock], [], [], timeout)
    if not ready:
        return out
    data = sock.recv(1 << 20)
    now = time.monotonic()
    offset = 0
    while offset + HDR.size <= len(data):
        length = HDR.unpack_from(data, offset)[0]
        if length < HDR.size:
            break
        out.append((now, data[offset : offset + length]))
        offset += (length + 3) & ~3
    return out


def wait(sock: socket.socket, match, timeout: float = 5.0) -> float | None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for stamp, raw in messages(sock, max(0.0, deadline - time.monotonic())):
            if match(raw):
                return stamp
    return None


def is_carrier_up(ifindex: int):  # type: ignore[no-untyped-def]
    def match(raw: bytes) -> bool:
        _l, kind, _f, _s, _p = HDR.unpack_from(raw)
        if kind != RTM_NEWLINK:
            return False
        _fam, _type, index, flags, _change = IFINFO.unpack_from(raw, HDR.size)
        return bool(index == ifindex and flags & IFF_LOWER_UP)

    return match


def is_main_default(raw: bytes) -> bool:
    _l, kind, _f, _s, _p = HDR.unpack_from(raw)
    if kind != RTM_NEWROUTE:
        return False
    _fam, dst_len, _sl, _tos, table, _proto, _scope, _type, _flags = struct.unpack_from(
        "=BBBBBBBBI", raw, HDR.size
    )
    return dst_len == 0 and table == 254


def nexthop_with(nhid: int, member: int | None = None):  # type: ignore[no-untyped-def]
    """A NEWNEXTHOP for object nhid (and, for a group, one that lists member)."""

    def match(raw: bytes) -> bool:
        _l, kind, _f, _s, _p = HDR.unpack_from(raw)
        if kind != RTM_NEWNEXTHOP:
            return False
        offset = HDR.size + 8
        found_id, members = None, b""
        while offset + 4 <= len(raw):
            length, attr = struct.unpack_from("=HH", raw, offset)
            if length < 4:
                break
            if attr == 1:
                found_id = struct.unpack_from("=I", raw, offset + 4)[0]
            elif attr == 2:
                members = raw[offset + 4 : offset + length]
            offset += (length + 3) & ~3
        if found_id != nhid:
            return False
        return member is None or any(i == member for i, *_ in struct.iter_unpack("=IBBH", members))

    return match


def inner(args: argparse.Namespace) -> None:
    """Runs in the router namespace: make events, time the answers, print JSON."""
    from wanhooks import constants as c

    w2 = int(args.w2_index)
    w1 = int(args.w1_index)
    sock = monitor_socket()
    apply_cmd = json.loads(args.apply) if args.apply else None
    carrier: list[float] = []
    gateway: list[float] = []
    missed = 0
    for n in range(args.events):
        # carrier up
        subprocess.run(["ip", "-n", args.isp2, "link", "set", "c", "down"], check=True)
        time.sleep(0.1)  # the kernel drops the member itself (it may not even say so)
        if apply_cmd:
            subprocess.run(apply_cmd, capture_output=True)  # settle before the next event
        time.sleep(0.02)
        subprocess.run(["ip", "-n", args.isp2, "link", "set", "c", "up"], check=True)
        t0 = wait(sock, is_carrier_up(w2))
        if apply_cmd and t0 is not None:
            subprocess.Popen(apply_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t1 = wait(sock, nexthop_with(c.NH_GROUP_V4, c.link_nexthop_id(4, w2)), 10)
        if t0 is None or t1 is None:
            missed += 1
        else:
            carrier.append(t1 - t0)
        # gateway replaced in main
        via = "100.64.1.254" if n % 2 == 0 else "100.64.1.1"
        time.sleep(0.02)
        subprocess.run(
            ["ip", "route", "replace", "default", "via", via, "dev", "w1", "metric", "101"], check=True
        )
        t0 = wait(sock, is_main_default)
        if apply_cmd and t0 is not None:
            subprocess.Popen(apply_cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        t1 = wait(sock, nexthop_with(c.link_nexthop_id(4, w1)), 10)
        if t0 is None or t1 is None:
            missed += 1
        else:
            gateway.append(t1 - t0)
        time.sleep(0.02)
    print(json.dumps({"carrier": carrier, "gateway": gateway, "missed": missed}))


# --------------------------------------------------------------------------
# outside: the lab, the daemon, the report
# --------------------------------------------------------------------------


def idle_usage(pid: int, seconds: float) -> tuple[float, float]:
    """(RSS MiB, CPU % of one core) of pid over `seconds` of doing nothing."""
    tick = os.sysconf("SC_CLK_TCK")

    def cpu() -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    before, start = cpu(), time.monotonic()
    time.sleep(seconds)
    used, elapsed = cpu() - before, time.monotonic() - start
    rss_kb = next(
        int(line.split()[1])
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("VmRSS:")
    )
    return rss_kb / 1024, 100 * used / elapsed


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def row(name: str, values: list[float]) -> str:
    ms = [v * 1000 for v in values]
    return f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {pct(ms, 0.99):.1f} | {max(ms):.1f} |"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--events", type=int, default=200)
    ap.add_argument("--baseline", type=int, default=30)
    ap.add_argument("--idle", type=float, default=20.0)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--links", type=int, default=4, help="uplinks on the router (4 or more)")
    for hidden in ("--isp2", "--w1-index", "--w2-index", "--apply"):
        ap.add_argument(hidden, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.inner:
        inner(args)
        return 0
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from wanhooks.lab import Lab

    with Lab(4) as lab, tempfile.TemporaryDirectory() as tmp:
        cfg = Path(tmp) / "wanhooks.yaml"
        cfg.write_text("links:\n  - interface: 'w*'\n")
        run_dir = Path(tmp) / "run"
        for i in (1, 2, 3, 4):
            lab.set_main_default(i, 4)
        lab.add_uplinks(args.links - 4)  # w5...: in a namespace of the lab's, deleted with it
        lab.ns_exec(lab.isp(1), ["ip", "addr", "add", "100.64.1.254/24", "dev", "c"])
        wanhooks = [sys.executable, "-m", "wanhooks", "-c", str(cfg), "--run-dir", str(run_dir)]
        index = {n: lab.ip_json(lab.router, "link", "show", n)[0]["ifindex"] for n in ("w1", "w2")}
        inner_argv = [
            sys.executable, __file__, "--inner", "--isp2", lab.isp(2),
            "--w1-index", str(index["w1"]), "--w2-index", str(index["w2"]),
        ]  # fmt: skip
        daemon = subprocess.Popen(
            ["ip", "netns", "exec", lab.router, *wanhooks, "run"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            time.sleep(1.5)
            rss, cpu = idle_usage(daemon.pid, args.idle)
            out = lab.ns_exec(
                lab.router, [*inner_argv, "--events", str(args.events)], timeout=args.events * 5 + 60
            ).stdout
            ours = json.loads(out)
        finally:
            daemon.terminate()
            daemon.wait(10)
        out = lab.ns_exec(
            lab.router,
            [*inner_argv, "--events", str(args.baseline), "--apply", json.dumps([*wanhooks, "apply"])],
            timeout=args.baseline * 10 + 60,
        ).stdout
        base = json.loads(out)
    print("| path | events | median ms | p99 ms | max ms |")
    print("|---|---:|---:|---:|---:|")
    print(row("daemon: carrier up -> member back in the group", ours["carrier"]))
    print(row("daemon: gateway replaced in main -> nexthop follows", ours["gateway"]))
    print(row("hook + one-shot apply: carrier up", base["carrier"]))
    print(row("hook + one-shot apply: gateway replaced", base["gateway"]))
    ratio = statistics.median(base["carrier"]) / statistics.median(ours["carrier"])
    print()
    print(
        f"Daemon vs one-shot apply (carrier up, medians): {ratio:.0f}x faster. "
        f"Missed events: daemon {ours['missed']}, one-shot {base['missed']}."
    )
    print(
        f"Idle daemon with {args.links} links over {args.idle:g} s: RSS {rss:.1f} MiB, "
        f"CPU {cpu:.2f} % of one core."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
