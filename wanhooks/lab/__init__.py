"""A multi-WAN network built from network namespaces, for wanhooks' tests and benchmarks.

Theory of operation
-------------------
    <p>-lan eth0 ── lan0 <p>-r w1 ── c <p>-isp1 u ── i1 <p>-net
    (LAN clients)        (router w2 ── c <p>-isp2 u ── i2 ("internet": 203.0.113.0/24
                          under   ..                        and fd00:ffff::/64 are local)
                          test)   wN ── c <p>-ispN u ── iN

The router is the machine under test.  It gets its WAN addresses but NO
default route and no per-link tables: what wanhooks finds on a laptop before
anyone acted.  `set_main_default()` plays the network manager.  Every ISP
records, in nft dynamic sets, each flow (5-tuple) to ports 9000-9999 that
reaches it from the router, so a test can ask which link carried which flow.
The internet answers pings and silently eats UDP to ports 9000-9099, so flows
cost nothing on the way back.

Addressing (i = 1..N, x = hex(i)); see `link_addrs()` and `lan_addr()`:
    WAN i     router w<i> 100.64.i.2/24 fd00:x::2/64 <-> ISP i c 100.64.i.1/24 fd00:x::1/64 + fe80::1/64
    uplink i  ISP i u 198.51.100.(4i-3)/30 fd00:99:x::1/64 <-> net i<i> 198.51.100.(4i-2)/30 fd00:99:x::2/64
    LAN       router lan0 100.64.100.1/24 fd00:aa::1/64 <-> lan eth0 100.64.100.(1+k)/24 fd00:aa::(1+k)/64
    PD i      ISP i delegates fd00:x:100::/56 (routed to the router); `delegate(i)` numbers the LAN from it
    servers   SERVER4 203.0.113.10, SERVER6 fd00:ffff::10; the whole /24 and /64 answer (AnyIP on lo)
Return path: each ISP masquerades IPv4 out of `u` (CGN-like); IPv6 is routed
(the internet has fd00:x::/64 via ISP i).  With router_nat the router
masquerades both families out of every w<i>, so LAN traffic comes back too.

LAN clients: the k clients share the LAN namespace.  Client k is the address
`lan_addr(k)` on eth0, and traffic for client k binds to it, e.g.
`send_udp_flows(lab.lan, None, 10, bind=lab.lan_addr(k))`.  Client 1's
address is the primary one, so unbound traffic is client 1's.

Safety: every command names one of this lab's own namespaces (`_guard`); the
root namespace is never configured.  Set-up is batched, one `ip -batch` and
one `nft -f` per namespace, run in parallel, so 64 links take about a second.
`down()` works from any state (a half-built lab included), and an atexit hook
calls it if the caller never did.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, NamedTuple, TypeVar

SERVER4 = "203.0.113.10"
SERVER6 = "fd00:ffff::10"
MAX_LINKS = 64  # 198.51.100.0/24 holds 64 uplink /30s
MAX_LAN_CLIENTS = 200
FLOW_PORTS = (9000, 9999)  # flows to these ports are recorded by every ISP
CHURN_PORTS = (8000, 8999)  # UDP to these ports is only counted (udp-rate: thousands of flows a second)
SILENT_UDP_PORTS = (9000, 9099)  # the internet drops these without an ICMP error
ISP_GATEWAY_LL = "fe80::1"  # every ISP's link-local, as a real router's RA would announce
LAN_ROUTER4 = "100.64.100.1"
LAN_ROUTER6 = "fd00:aa::1"
TRAFFIC_MODULE = "wanhooks.lab.traffic"

_PARALLEL = 8  # processes at once during set-up; they are short and mostly wait on the kernel
_PREFIX_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.]{0,15}")  # becomes a file name and a batch word
_T = TypeVar("_T", bound="Lab")
_R = TypeVar("_R")


class LabError(RuntimeError):
    """A lab command failed; the message carries the command and its stderr."""


@dataclass(frozen=True)
class LinkAddrs:
    """The addresses of WAN link i and of ISP i's uplink (see the module docstring)."""

    index: int
    router4: str
    gateway4: str
    prefix4: str
    router6: str
    gateway6: str
    prefix6: str
    isp_up4: str
    net_up4: str
    isp_up6: str
    net_up6: str

    @property
    def ifname(self) -> str:
        """The router's device for this link."""
        return f"w{self.index}"

    def router(self, family: int) -> str:
        return self.router4 if family == 4 else self.router6

    @property
    def delegated6(self) -> str:
        """The prefix ISP i delegates to the router (DHCPv6-PD), routed to it by the ISP."""
        return f"fd00:{self.index:x}:100::/56"

    def pd_addr(self, host: int) -> str:
        """An address in the LAN /64 taken from ISP i's delegated prefix (1: the router's)."""
        return f"fd00:{self.index:x}:100::{host:x}"

    def gateway(self, family: int) -> str:
        """The gateway a network manager would configure (v6: the link-local, as from an RA)."""
        return self.gateway4 if family == 4 else ISP_GATEWAY_LL


def link_addrs(i: int) -> LinkAddrs:
    """Addressing of link i (1..MAX_LINKS)."""
    if not 1 <= i <= MAX_LINKS:
        raise ValueError(f"link index {i} outside 1..{MAX_LINKS}")
    x = f"{i:x}"
    return LinkAddrs(
        index=i,
        router4=f"100.64.{i}.2",
        gateway4=f"100.64.{i}.1",
        prefix4=f"100.64.{i}.0/24",
        router6=f"fd00:{x}::2",
        gateway6=f"fd00:{x}::1",
        prefix6=f"fd00:{x}::/64",
        isp_up4=f"198.51.100.{4 * i - 3}",
        net_up4=f"198.51.100.{4 * i - 2}",
        isp_up6=f"fd00:99:{x}::1",
        net_up6=f"fd00:99:{x}::2",
    )


def lan_addr(k: int = 1, family: int = 4) -> str:
    """Address of LAN client k (1..MAX_LAN_CLIENTS): 100.64.100.(1+k) / fd00:aa::(1+k)."""
    if not 1 <= k <= MAX_LAN_CLIENTS:
        raise ValueError(f"LAN client {k} outside 1..{MAX_LAN_CLIENTS}")
    return str(ipaddress.ip_address(LAN_ROUTER4 if family == 4 else LAN_ROUTER6) + k)


class FlowKey(NamedTuple):
    """One flow as an ISP saw it arrive from the router (so after the router's NAT)."""

    proto: str
    saddr: str
    sport: int
    daddr: str
    dport: int


# --------------------------------------------------------------------------
# Configuration text, from pure functions: one `ip -batch` / `nft -f` per namespace
# --------------------------------------------------------------------------

_COMMON_SYSCTLS = (
    "net.ipv6.conf.all.accept_dad=0",
    "net.ipv6.conf.default.accept_dad=0",
    "net.ipv6.conf.all.keep_addr_on_down=1",
    "net.ipv6.conf.default.keep_addr_on_down=1",
)
_FORWARDING = ("net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1")
# rp_filter 0 where the lab's own asymmetric paths would trip it; the router
# gets loose mode (2), what systemd-based distributions ship.
_NO_RP_FILTER = ("net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.default.rp_filter=0")
_LOOSE_RP_FILTER = ("net.ipv4.conf.all.rp_filter=2", "net.ipv4.conf.default.rp_filter=2")
ROLE_SYSCTLS: dict[str, tuple[str, ...]] = {
    "router": _COMMON_SYSCTLS + _FORWARDING + _LOOSE_RP_FILTER,
    "isp": _COMMON_SYSCTLS + _FORWARDING + _NO_RP_FILTER,
    "net": _COMMON_SYSCTLS + _NO_RP_FILTER,
    "lan": _COMMON_SYSCTLS,
}


def router_batch(isps: Sequence[str], lan_ns: str) -> str:
    """`ip -batch` for the router: creates every veth pair, each peer straight in its namespace."""
    lines = ["link set lo up"]
    for i, isp in enumerate(isps, 1):
        a = link_addrs(i)
        lines += [
            f"link add w{i} type veth peer name c netns {isp}",
            f"addr add {a.router4}/24 dev w{i}",
            f"addr add {a.router6}/64 dev w{i} nodad",
            f"link set w{i} up",
        ]
    lines += [
        f"link add lan0 type veth peer name eth0 netns {lan_ns}",
        f"addr add {LAN_ROUTER4}/24 dev lan0",
        f"addr add {LAN_ROUTER6}/64 dev lan0 nodad",
        "link set lan0 up",
    ]
    return _text(lines)


def isp_batch(i: int, net_ns: str) -> str:
    """`ip -batch` for ISP i: customer side `c`, uplink `u` (peer i<i> into the internet), defaults."""
    a = link_addrs(i)
    return _text(
        [
            "link set lo up",
            f"addr add {a.gateway4}/24 dev c",
            f"addr add {a.gateway6}/64 dev c nodad",
            f"addr add {ISP_GATEWAY_LL}/64 dev c nodad",
            "link set c up",
            f"link add u type veth peer name i{i} netns {net_ns}",
            f"addr add {a.isp_up4}/30 dev u",
            f"addr add {a.isp_up6}/64 dev u nodad",
            "link set u up",
            f"route add default via {a.net_up4}",
            f"route add ::/0 via {a.net_up6}",
            f"route add {a.delegated6} via {a.router6} dev c",
        ]
    )


def net_batch(links: int) -> str:
    """`ip -batch` for the internet: AnyIP server ranges on lo, uplinks, IPv6 routes back to each ISP."""
    lines = [
        "link set lo up",
        f"addr add {SERVER4}/32 dev lo",
        "route add local 203.0.113.0/24 dev lo",
        f"addr add {SERVER6}/128 dev lo nodad",
        "route add local fd00:ffff::/64 dev lo",
    ]
    for i in range(1, links + 1):
        a = link_addrs(i)
        lines += [
            f"addr add {a.net_up4}/30 dev i{i}",
            f"addr add {a.net_up6}/64 dev i{i} nodad",
            f"link set i{i} up",
            f"route add {a.prefix6} via {a.isp_up6} dev i{i}",
            f"route add {a.delegated6} via {a.isp_up6} dev i{i}",
        ]
    return _text(lines)


def lan_batch(clients: int) -> str:
    """`ip -batch` for the LAN namespace: one address per client on eth0, defaults via the router."""
    lines = ["link set lo up"]
    for k in range(1, clients + 1):
        lines += [f"addr add {lan_addr(k, 4)}/24 dev eth0", f"addr add {lan_addr(k, 6)}/64 dev eth0 nodad"]
    lines += ["link set eth0 up", f"route add default via {LAN_ROUTER4}", f"route add ::/0 via {LAN_ROUTER6}"]
    return _text(lines)


ROUTER_NAT_NFT = """\
table inet labnat {
  chain post {
    type nat hook postrouting priority srcnat; policy accept;
    oifname "w*" masquerade
  }
}
"""

NET_NFT = f"""\
table inet labnet {{
  chain input {{
    type filter hook input priority 0; policy accept;
    udp dport {SILENT_UDP_PORTS[0]}-{SILENT_UDP_PORTS[1]} counter drop
    udp dport {CHURN_PORTS[0]}-{CHURN_PORTS[1]} drop
  }}
}}
"""

_FLOW_SET = "type inet_proto . {addr} . inet_service . {addr} . inet_service; flags dynamic; size 1048576;"


def isp_nft(i: int, antispoof: bool) -> str:
    """ISP i: CGN masquerade, the BCP38 chain, and the flow-recording sets.

    The flow sets hook in at raw priority (-300), before the blackhole and
    antispoof drops (-250), so they record every flow that *reached* the ISP.
    """
    spoof = "".join(f"    {rule}\n" for rule in antispoof_rules(i)) if antispoof else ""
    return f"""\
table inet labisp {{
  counter spoofed4 {{}}
  counter spoofed6 {{}}
  chain post {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname "u" meta nfproto ipv4 masquerade
  }}
  chain antispoof {{
    type filter hook prerouting priority -250; policy accept;
{spoof}  }}
}}
table inet labcount {{
  counter churn {{}}
  set flows4 {{ {_FLOW_SET.format(addr="ipv4_addr")} }}
  set flows6 {{ {_FLOW_SET.format(addr="ipv6_addr")} }}
  chain pre {{
    type filter hook prerouting priority -300; policy accept;
    iifname != "c" return
    udp dport {CHURN_PORTS[0]}-{CHURN_PORTS[1]} counter name churn return
    meta l4proto != {{ tcp, udp }} return
    th dport != {FLOW_PORTS[0]}-{FLOW_PORTS[1]} return
    meta nfproto ipv4 add @flows4 {{ meta l4proto . ip saddr . th sport . ip daddr . th dport }}
    meta nfproto ipv6 add @flows6 {{ meta l4proto . ip6 saddr . th sport . ip6 daddr . th dport }}
  }}
}}
"""


def antispoof_rules(i: int) -> list[str]:
    """BCP38: drop (and count) what arrives on `c` from outside the customer's prefixes.

    Link-local and the unspecified address stay allowed: neighbour discovery needs them.
    """
    a = link_addrs(i)
    return [
        f'iifname "c" meta nfproto ipv4 ip saddr != {a.prefix4} counter name spoofed4 drop',
        f'iifname "c" meta nfproto ipv6 ip6 saddr != {{ {a.prefix6}, {a.delegated6}, fe80::/10, ::/128 }}'
        " counter name spoofed6 drop",
    ]


# An ISP dead beyond its modem: nothing from the router goes on, nothing comes back to it
# (the far ends' retransmissions neither); neighbour discovery still works.
BLACKHOLE_NFT = """\
table inet labblackhole {
  counter dropped {}
  chain pre {
    type filter hook prerouting priority -250; policy accept;
    iifname "c" icmpv6 type { nd-router-solicit, nd-neighbor-solicit, nd-neighbor-advert } accept
    iifname "c" counter name dropped drop
  }
  chain post {
    type filter hook postrouting priority 250; policy accept;
    oifname "c" icmpv6 type { nd-router-advert, nd-neighbor-solicit, nd-neighbor-advert } accept
    oifname "c" drop
  }
}
"""
# nft 1.0.6 has no `destroy`: adding first makes the delete safe when the table is absent.
_BLACKHOLE_CLEAR = "add table inet labblackhole\ndelete table inet labblackhole\n"


def tbf_args(dev: str, mbit: float) -> list[str]:
    """tc arguments shaping `dev`'s egress to `mbit` (burst: 10 ms at that rate, at least 10 packets)."""
    if not mbit > 0:
        raise ValueError(f"rate must be positive, not {mbit}")
    burst = max(int(mbit * 1250), 15000)
    return f"qdisc replace dev {dev} root tbf rate {mbit:g}mbit burst {burst} latency 50ms".split()


def parse_flow_set(data: Any) -> set[FlowKey]:
    """Flows out of `nft -j list set` (elements are bare concats, or wrapped with expiry data)."""
    keys: set[FlowKey] = set()
    for item in data.get("nftables", []):
        for elem in item.get("set", {}).get("elem", []):
            value = elem["elem"]["val"] if "elem" in elem else elem
            proto, saddr, sport, daddr, dport = value["concat"]
            keys.add(FlowKey(_proto_name(proto), str(saddr), int(sport), str(daddr), int(dport)))
    return keys


def parse_counter(data: Any) -> int:
    """Packets of the named counter in `nft -j list counter ...`."""
    return sum(int(item["counter"]["packets"]) for item in data.get("nftables", []) if "counter" in item)


def _proto_name(proto: str | int) -> str:
    return {6: "tcp", 17: "udp"}.get(proto, str(proto)) if isinstance(proto, int) else proto


def _text(lines: Iterable[str]) -> str:
    return "".join(line + "\n" for line in lines)


def _json_documents(text: str) -> list[Any]:
    """Every JSON document in text (`ip -j -batch` prints one per command)."""
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    pos = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            return docs
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)


def _family_of(addr: str) -> int:
    return ipaddress.ip_address(addr.split("%", 1)[0]).version


# --------------------------------------------------------------------------
# Running commands
# --------------------------------------------------------------------------

Job = Sequence[tuple[list[str], "str | None"]]  # commands (argv, stdin) to run one after the other


def run(
    argv: Sequence[str],
    *,
    input: str | None = None,
    check: bool = True,
    timeout: float = 60.0,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run argv (never through a shell); with check, a failure raises LabError with its stderr."""
    # errors="replace": what `ip` prints of a hostile interface name need not be UTF-8
    proc = subprocess.run(
        list(argv), input=input, capture_output=True, text=True, errors="replace", timeout=timeout, env=env
    )
    if check and proc.returncode != 0:
        raise LabError(f"{' '.join(argv)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def run_parallel(jobs: Sequence[Job]) -> None:
    """Run the jobs in parallel, each job's commands in order; raise the first failure."""

    def one(job: Job) -> None:
        for argv, stdin in job:
            run(argv, input=stdin)

    for _ in parallel_map(one, jobs):
        pass


def parallel_map(fn: Callable[[Any], _R], items: Iterable[Any]) -> list[_R]:
    """fn over items in a few threads (each mostly waits on a child process), results in order.

    Sequential once the interpreter is shutting down (no new threads then),
    so that down() still works from the atexit hook.
    """
    items = list(items)
    try:
        with ThreadPoolExecutor(max_workers=_PARALLEL) as pool:
            futures = [pool.submit(fn, item) for item in items]
    except RuntimeError:  # "cannot schedule new futures after interpreter shutdown"
        return [fn(item) for item in items]
    return [f.result() for f in futures]


def netns_names() -> set[str]:
    """Names of every named network namespace (`ip netns list`)."""
    out = run(["ip", "netns", "list"]).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _alive(pid: int) -> bool:
    """A process still running (a zombie has already left its namespace)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _signal_all(pids: Iterable[int], sig: signal.Signals) -> None:
    for pid in pids:
        with suppress(ProcessLookupError):
            os.kill(pid, sig)


def _traffic_env() -> dict[str, str]:
    """This environment with this package importable, whatever the interpreter's cwd."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": root + (os.pathsep + path if path else "")}


# --------------------------------------------------------------------------
# The lab
# --------------------------------------------------------------------------


class Lab:
    """A router with `links` WAN uplinks, one ISP namespace per uplink, an internet and a LAN.

    Use as a context manager, or call up() and down().  Link indexes are 1-based.
    """

    def __init__(
        self,
        links: int = 3,
        *,
        shape_mbit: Sequence[float | None] | None = None,
        router_nat: bool = True,
        antispoof: bool = False,
        hash_seed: int | None = 1234,
        prefix: str | None = None,
        lan_clients: int = 1,
        verbose: bool = False,
    ) -> None:
        if not 1 <= links <= MAX_LINKS:
            raise ValueError(f"links must be 1..{MAX_LINKS}, not {links}")
        if not 1 <= lan_clients <= MAX_LAN_CLIENTS:
            raise ValueError(f"lan_clients must be 1..{MAX_LAN_CLIENTS}, not {lan_clients}")
        if shape_mbit is not None and len(shape_mbit) != links:
            raise ValueError(f"shape_mbit has {len(shape_mbit)} rates for {links} links")
        if prefix is not None and not _PREFIX_RE.fullmatch(prefix):
            raise ValueError(f"prefix {prefix!r} must match {_PREFIX_RE.pattern}")
        self.links = links
        self.shape_mbit = list(shape_mbit) if shape_mbit is not None else None
        self.router_nat = router_nat
        self.antispoof = antispoof
        self.hash_seed = hash_seed
        self.lan_clients = lan_clients
        self.verbose = verbose
        self.prefix = prefix or f"wh{secrets.token_hex(3)}"
        self.router = f"{self.prefix}-r"
        self.isps = [f"{self.prefix}-isp{i}" for i in range(1, links + 1)]
        self.internet = f"{self.prefix}-net"
        self.lan = f"{self.prefix}-lan"
        self.namespaces = [self.router, *self.isps, self.internet, self.lan]
        self._atexit = False

    # --- lifecycle --------------------------------------------------------------

    def __enter__(self: _T) -> _T:
        self.up()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.down()

    def up(self) -> None:
        """Build the whole lab; on any failure tear down what was built and re-raise."""
        taken = netns_names() & set(self.namespaces)
        if taken:
            raise LabError(f"namespaces already exist: {sorted(taken)}")
        if not self._atexit:
            atexit.register(self.down)
            self._atexit = True
        started = time.monotonic()
        try:
            self._build()
        except BaseException:
            self._cleanup_after_failure()
            raise
        self._log(f"lab {self.prefix} up: {self.links} links in {time.monotonic() - started:.2f}s")

    def _build(self) -> None:
        """The set-up steps in dependency order: a veth is created before its peer side is configured."""
        self._create_namespaces()
        self._configure_sysctls()
        self._ip_batch(self.router, router_batch(self.isps, self.lan))
        run_parallel([[self._ip_batch_job(isp, isp_batch(i, self.internet))] for i, isp in self._isp_items()])
        run_parallel(
            [
                [self._ip_batch_job(self.internet, net_batch(self.links))],
                [self._ip_batch_job(self.lan, lan_batch(self.lan_clients))],
            ]
        )
        self._configure_nft()
        shaped = [(i, mbit) for i, mbit in enumerate(self.shape_mbit or [], 1) if mbit is not None]
        run_parallel([self._shape_job(i, mbit) for i, mbit in shaped])
        self.settle()

    def _cleanup_after_failure(self) -> None:
        """down(), without letting a cleanup error hide the error that made up() fail."""
        try:
            self.down()
        except Exception as exc:  # the original exception is re-raised by the caller
            warnings.warn(
                f"lab {self.prefix}: cleanup after a failed up() failed: {exc}", RuntimeWarning, stacklevel=3
            )

    def down(self) -> None:
        """Kill the processes inside our namespaces, then delete them.  Safe in any state, repeatable."""
        present = netns_names()
        existing = [ns for ns in self.namespaces if ns in present]
        if existing:
            self._kill_processes(existing)
            deletions = _text(f"netns del {ns}" for ns in existing)
            run(["ip", "-force", "-batch", "-"], input=deletions, check=False)
            left = netns_names() & set(existing)
            if left:
                raise LabError(f"could not delete namespaces {sorted(left)}")
            self._log(f"lab {self.prefix} down")
        if self._atexit:
            atexit.unregister(self.down)
            self._atexit = False

    def _create_namespaces(self) -> None:
        """One at a time: the first `ip netns add` on a machine sets up the /run/netns mount."""
        for ns in self.namespaces:
            run(["ip", "netns", "add", self._guard(ns)])

    def _configure_sysctls(self) -> None:
        """Before any interface exists, so that the `default` values reach every new device."""
        roles = {self.router: "router", self.internet: "net", self.lan: "lan"}
        jobs = [
            [(self._exec_argv(ns, ["sysctl", "-q", "-w", *ROLE_SYSCTLS[roles.get(ns, "isp")]]), None)]
            for ns in self.namespaces
        ]
        if self.hash_seed is not None:  # -e: a kernel without the seed knob simply does not get it
            seed = f"net.ipv4.fib_multipath_hash_seed={self.hash_seed}"
            jobs[0].append((self._exec_argv(self.router, ["sysctl", "-q", "-e", "-w", seed]), None))
        run_parallel(jobs)

    def _configure_nft(self) -> None:
        jobs = [[self._nft_job(isp, isp_nft(i, self.antispoof))] for i, isp in self._isp_items()]
        jobs.append([self._nft_job(self.internet, NET_NFT)])
        if self.router_nat:
            jobs.append([self._nft_job(self.router, ROUTER_NAT_NFT)])
        run_parallel(jobs)

    def _kill_processes(self, namespaces: Sequence[str]) -> None:
        """SIGTERM, then SIGKILL after a short wait, to exactly the pids `ip netns pids` lists."""

        def pids_of(ns: str) -> set[int]:
            out = run(["ip", "netns", "pids", ns], check=False).stdout
            return {int(p) for p in out.split() if p.isdigit()}

        pids = set().union(*parallel_map(pids_of, namespaces)) - {os.getpid()}
        if not pids:
            return
        _signal_all(pids, signal.SIGTERM)
        deadline = time.monotonic() + 2.0
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.02)
        _signal_all([p for p in pids if _alive(p)], signal.SIGKILL)

    # --- waiting for the kernel --------------------------------------------------

    def expected_state(self) -> dict[str, tuple[list[str], set[str]]]:
        """Per namespace: the devices that must be operationally up, and the IPv6
        addresses that must have their local route, once the lab has settled."""
        links = [link_addrs(i) for i in range(1, self.links + 1)]
        expected = {
            self.router: ([a.ifname for a in links] + ["lan0"], {a.router6 for a in links} | {LAN_ROUTER6}),
            self.internet: ([f"i{a.index}" for a in links], {a.net_up6 for a in links} | {SERVER6}),
            self.lan: (["eth0"], {lan_addr(k, 6) for k in range(1, self.lan_clients + 1)}),
        }
        for a, isp in zip(links, self.isps):
            expected[isp] = (["c", "u"], {a.gateway6, ISP_GATEWAY_LL, a.isp_up6})
        return expected

    def settle(self, timeout: float = 10.0) -> None:
        """Wait until every interface is operationally up and every IPv6 address is usable.

        Why: the kernel finishes both asynchronously.  A veth's carrier event
        can sit in linkwatch for up to a second; until it is handled the
        device is not "ready" for IPv6, whose addresses (nodad ones too) get
        their local routes only afterwards, and packets sent before that are
        dropped: the first ping of a fresh lab was flaky.  Asking for one
        device by name (`ip link show dev X`, not a dump) makes the kernel
        handle that device's pending event at once, so we poll that way and
        the wait is short.  Expects every link up: not for use while one is
        carrier_off/link_down.
        """
        pending = self.expected_state()
        deadline = time.monotonic() + timeout
        while True:
            done = parallel_map(self._settled, pending.items())
            pending = {ns: want for (ns, want), ok in zip(pending.items(), done) if not ok}
            if not pending:
                return
            if time.monotonic() > deadline:
                raise LabError(f"namespaces did not settle within {timeout}s: {sorted(pending)}")
            time.sleep(0.01)

    def _settled(self, item: tuple[str, tuple[list[str], set[str]]]) -> bool:
        ns, (devices, want6) = item
        out = run(
            ["ip", "-n", self._guard(ns), "-j", "-batch", "-"],
            input=_text(f"link show dev {dev}" for dev in devices),
        ).stdout
        if any(link.get("operstate") != "UP" for doc in _json_documents(out) for link in doc):
            return False
        routes = self.ip_json(ns, "-6", "route", "show", "table", "local")
        return want6 <= {r.get("dst") for r in routes if r.get("type") == "local"}

    # --- running things inside the lab --------------------------------------------

    def _guard(self, ns: str) -> str:
        """Refuse any namespace that is not this lab's: nothing may run in the root namespace."""
        if ns not in self.namespaces:
            raise ValueError(f"{ns!r} is not a namespace of lab {self.prefix}")
        return ns

    def _exec_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self._guard(ns), *argv]

    def _ip_batch_job(self, ns: str, batch: str) -> tuple[list[str], str | None]:
        return ["ip", "-n", self._guard(ns), "-batch", "-"], batch

    def _nft_job(self, ns: str, text: str) -> tuple[list[str], str | None]:
        return self._exec_argv(ns, ["nft", "-f", "-"]), text

    def _ip_batch(self, ns: str, batch: str) -> None:
        argv, stdin = self._ip_batch_job(ns, batch)
        run(argv, input=stdin)

    def _isp_items(self) -> list[tuple[int, str]]:
        return list(enumerate(self.isps, 1))

    def isp(self, i: int) -> str:
        """Namespace of ISP i."""
        if not 1 <= i <= self.links:
            raise ValueError(f"lab {self.prefix} has links 1..{self.links}, not {i}")
        return self.isps[i - 1]

    def link(self, i: int) -> LinkAddrs:
        """Addresses of link i of this lab."""
        self.isp(i)
        return link_addrs(i)

    def ns_exec(
        self,
        ns: str,
        argv: Sequence[str],
        check: bool = True,
        timeout: float = 60.0,
        input: str | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run argv inside one of the lab's namespaces (no shell)."""
        return run(self._exec_argv(ns, argv), input=input, check=check, timeout=timeout, env=env)

    def r(
        self, argv: Sequence[str], check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run argv in the router namespace."""
        return self.ns_exec(self.router, argv, check=check, timeout=timeout)

    def ip(self, ns: str, *args: str, check: bool = True) -> str:
        """`ip -n NS ARGS...`; returns stdout."""
        return run(["ip", "-n", self._guard(ns), *args], check=check).stdout

    def ip_json(self, ns: str, *args: str) -> Any:
        """`ip -n NS -j ARGS...`, parsed (no output parses as [])."""
        out = run(["ip", "-n", self._guard(ns), "-j", *args]).stdout
        return json.loads(out) if out.strip() else []

    def nft_json(self, ns: str, *args: str) -> Any:
        """`nft -j ARGS...` inside NS, parsed."""
        return json.loads(self.ns_exec(ns, ["nft", "-j", *args]).stdout)

    def add_uplinks(self, count: int, first: int = 5, prefix: str = "w") -> list[str]:
        """count more uplinks on the router, <prefix><first>..., their far ends in a
        namespace of the lab's own (deleted with it): each with an address in 100.65.0.0/16
        and up (clear of the ISPs' 100.64.i.0/24) and a default in main, as DHCP leaves
        them.  Nothing answers beyond them: they are links, not ISPs.  Their names."""
        if count <= 0:
            return []
        peer = f"{self.prefix}-x"
        if peer not in self.namespaces:
            if peer in netns_names():  # another's: down() would delete it as the lab's
                raise LabError(f"namespace {peer} exists already")
            run(["ip", "netns", "add", peer])
            self.namespaces.append(peer)
        names, lines, peer_lines = [], [], []
        for k in range(first, first + count):
            net = f"100.{65 + (k - first) // 250}.{(k - first) % 250 + 1}"
            name = f"{prefix}{k}"
            names.append(name)
            lines += [
                f"link add {name} type veth peer name c{k} netns {peer}",
                f"link set {name} up",
                f"addr add {net}.2/24 dev {name}",
                f"route add default via {net}.1 dev {name} metric {100 + k}",
            ]
            peer_lines += [f"link set c{k} up", f"addr add {net}.1/24 dev c{k}"]
        self._ip_batch(self.router, _text(lines))
        self._ip_batch(peer, _text(peer_lines))
        return names

    # --- playing the network manager and the world ----------------------------------

    def set_main_default(self, i: int, family: int = 4, gateway: str | None = None) -> None:
        """Add/replace a main-table default via link i, as NetworkManager or networkd would.

        Metric 100+i lets several stand side by side; v4 carries `src` like a
        DHCP lease does, v6 goes via the ISP's link-local like a route from an RA.
        """
        a = self.link(i)
        gw = str(ipaddress.ip_address(gateway or a.gateway(family)))  # also keeps the split below safe
        route = f"route replace default via {gw} dev {a.ifname}"
        if family == 4:
            args = f"-4 {route} proto dhcp src {a.router4} metric {100 + i}".split()
        else:
            args = f"-6 {route} proto ra metric {100 + i}".split()
        self.ip(self.router, *args)

    def del_main_default(self, i: int, family: int = 4) -> None:
        """Remove the main-table default that set_main_default(i, family) added; absent is fine."""
        fam = "-4" if family == 4 else "-6"
        self.ip(
            self.router,
            fam,
            "route",
            "del",
            "default",
            "dev",
            self.link(i).ifname,
            "metric",
            str(100 + i),
            check=False,
        )

    def link_down(self, i: int) -> None:
        """Admin-down the router's w<i>."""
        self.ip(self.router, "link", "set", self.link(i).ifname, "down")

    def link_up(self, i: int) -> None:
        self.ip(self.router, "link", "set", self.link(i).ifname, "up")

    def carrier_off(self, i: int) -> None:
        """Take ISP i's side down: the router's w<i> stays admin-up but loses carrier (cable pulled)."""
        self.ip(self.isp(i), "link", "set", "c", "down")

    def carrier_on(self, i: int) -> None:
        """Undo carrier_off().  The ISP's fe80::1 comes back too: IPv6 keeps no link-local
        address over a link down, whatever keep_addr_on_down says."""
        batch = _text(["link set c up", f"addr replace {ISP_GATEWAY_LL}/64 dev c nodad"])
        self._ip_batch(self.isp(i), batch)

    def blackhole(self, i: int, on: bool) -> None:
        """ISP i silently drops everything from and to the router; ARP and ND still work (the
        modem is up).

        The flow sets still record what arrives, so a test can watch the
        router keep sending into the hole until it notices.
        """
        self.ns_exec(self.isp(i), ["nft", "-f", "-"], input=_BLACKHOLE_CLEAR + (BLACKHOLE_NFT if on else ""))

    def blackholed_packets(self, i: int) -> int:
        """Packets from the router ISP i has dropped since blackhole(i, True)."""
        if "labblackhole" not in self.ns_exec(self.isp(i), ["nft", "list", "tables"]).stdout:
            return 0
        return parse_counter(self.nft_json(self.isp(i), "list", "counter", "inet", "labblackhole", "dropped"))

    def delegate(self, i: int) -> str:
        """Number the LAN from ISP i's delegated prefix, as a DHCPv6-PD client would (router
        ::1, client 1 ::2); returns client 1's address.  The ISP already routes the prefix."""
        a = self.link(i)
        self._ip_batch(self.router, _text([f"addr add {a.pd_addr(1)}/64 dev lan0 nodad"]))
        self._ip_batch(self.lan, _text([f"addr add {a.pd_addr(2)}/64 dev eth0 nodad"]))
        return a.pd_addr(2)

    def set_antispoof(self, on: bool) -> None:
        """Turn BCP38 filtering on or off in every ISP."""

        def text(i: int) -> str:
            rules = antispoof_rules(i) if on else []
            adds = [f"add rule inet labisp antispoof {rule}" for rule in rules]
            return _text(["flush chain inet labisp antispoof", *adds])

        run_parallel([[self._nft_job(isp, text(i))] for i, isp in self._isp_items()])
        self.antispoof = on

    def spoofed_per_link(self, family: int = 4) -> dict[int, int]:
        """Packets each ISP dropped as spoofed (antispoof), by link."""

        def read(isp: str) -> int:
            return parse_counter(self.nft_json(isp, "list", "counter", "inet", "labisp", f"spoofed{family}"))

        return self._per_isp(read)

    def router_sysctl(self, name: str, value: str | int) -> None:
        """Set a sysctl in the router namespace (e.g. net.ipv4.fib_multipath_hash_policy)."""
        if not re.fullmatch(r"[A-Za-z0-9_.\-/]+", name):
            raise ValueError(f"bad sysctl name {name!r}")
        self.r(["sysctl", "-q", "-w", f"{name}={value}"])

    def shape(self, i: int, mbit: float | None) -> None:
        """Rate-limit link i both ways (tbf on w<i> and on ISP i's c); None removes the shaping."""
        if mbit is not None:
            for argv, _ in self._shape_job(i, mbit):
                run(argv)
            return
        for ns, dev in self._shaped_ends(i):
            run(["tc", "-n", self._guard(ns), "qdisc", "del", "dev", dev, "root"], check=False)

    def _shaped_ends(self, i: int) -> list[tuple[str, str]]:
        return [(self.router, self.link(i).ifname), (self.isp(i), "c")]

    def _shape_job(self, i: int, mbit: float) -> Job:
        return [
            (["tc", "-n", self._guard(ns), *tbf_args(dev, mbit)], None) for ns, dev in self._shaped_ends(i)
        ]

    # --- flows ------------------------------------------------------------------------

    def flow_keys_per_link(self, family: int = 4) -> dict[int, set[FlowKey]]:
        """Which flows (to ports 9000-9999) each ISP has seen since the last reset_flows()."""

        def read(isp: str) -> set[FlowKey]:
            return parse_flow_set(self.nft_json(isp, "list", "set", "inet", "labcount", f"flows{family}"))

        return self._per_isp(read)

    def flows_per_link(self, family: int = 4) -> dict[int, int]:
        """Number of distinct flows each ISP has seen since the last reset_flows()."""
        return {i: len(keys) for i, keys in self.flow_keys_per_link(family).items()}

    def reset_flows(self) -> None:
        """Forget every recorded flow, in every ISP."""
        text = "flush set inet labcount flows4\nflush set inet labcount flows6\n"
        run_parallel([[self._nft_job(isp, text)] for isp in self.isps])

    def _per_isp(self, read: Callable[[str], _R]) -> dict[int, _R]:
        return dict(zip(range(1, self.links + 1), parallel_map(read, self.isps)))

    # --- traffic ------------------------------------------------------------------------

    def traffic(
        self, ns: str, *args: str, check: bool = True, timeout: float = 60.0
    ) -> subprocess.CompletedProcess[str]:
        """Run `python -m wanhooks.lab.traffic ARGS` inside NS with this interpreter."""
        argv = [sys.executable, "-m", TRAFFIC_MODULE, *args]
        return self.ns_exec(ns, argv, check=check, timeout=timeout, env=_traffic_env())

    def spawn(self, ns: str, *args: str, session: bool = False) -> subprocess.Popen[str]:
        """Start `python -m wanhooks.lab.traffic ARGS` in NS in the background (down() ends it).
        `session`: in a session of its own, so a terminal's Ctrl-C reaches only its parent
        (which then ends it in order)."""
        argv = self._exec_argv(ns, [sys.executable, "-m", TRAFFIC_MODULE, *args])
        return subprocess.Popen(
            argv, stdout=subprocess.PIPE, text=True, env=_traffic_env(), start_new_session=session
        )

    def popen(
        self, ns: str, argv: Sequence[str], *, session: bool = False, **kwargs: Any
    ) -> subprocess.Popen[str]:
        """Start any program inside NS in the background (down() ends it); `session` as in spawn()."""
        return subprocess.Popen(self._exec_argv(ns, argv), text=True, start_new_session=session, **kwargs)

    def churn_packets(self) -> dict[int, int]:
        """UDP datagrams to CHURN_PORTS each ISP has received so far (udp-rate's flows)."""

        def read(isp: str) -> int:
            return parse_counter(self.nft_json(isp, "list", "counter", "inet", "labcount", "churn"))

        return self._per_isp(read)

    def isp_rx_bytes(self) -> dict[int, int]:
        """Bytes each ISP has received from the router so far (its `c` device counters)."""

        def read(isp: str) -> int:
            stats = self.ip_json(isp, "-s", "link", "show", "dev", "c")
            return int(stats[0]["stats64"]["rx"]["bytes"])

        return self._per_isp(read)

    def send_udp_flows(
        self,
        ns: str,
        dst: str | None,
        count: int,
        *,
        dport: int = 9000,
        bind: str | None = None,
        sport_base: int = 20000,
        family: int | None = None,
        device: str | None = None,
        check: bool = True,
        dsts: int = 1,
        size: int = 0,
    ) -> None:
        """Send `count` one-datagram UDP flows from ports sport_base.. to dst (None: SERVER4/6 by family);
        `size`: payload bytes (0: a short label)."""
        if dst is None:
            dst = SERVER6 if family == 6 else SERVER4
        if family not in (None, _family_of(dst)):  # _family_of also rejects anything but an address
            raise ValueError(f"{dst} is not an IPv{family} address")
        args = f"udp --dst {dst} --count {count} --dport {dport} --sport-base {sport_base}".split()
        args += ["--bind", bind] if bind else []
        args += ["--device", device] if device else []
        args += ["--dsts", str(dsts)] if dsts > 1 else []
        args += ["--size", str(size)] if size > 0 else []
        self.traffic(ns, *args, check=check)

    def ping(
        self,
        ns: str,
        dst: str,
        *,
        count: int = 1,
        timeout: float = 1.0,
        device: str | None = None,
        bind: str | None = None,
    ) -> bool:
        """ICMP echo from NS (link-local as "fe80::1%w2"); True if any of `count` requests was answered."""
        args = ["ping", "--dst", dst, "--count", str(count), "--timeout", str(timeout)]
        args += ["--bind", bind] if bind else []
        args += ["--device", device] if device else []
        return self.traffic(ns, *args, check=False, timeout=count * timeout + 30).returncode == 0

    def lan_addr(self, k: int = 1, family: int = 4) -> str:
        """Address of LAN client k in this lab."""
        if k > self.lan_clients:
            raise ValueError(f"lab {self.prefix} has {self.lan_clients} LAN clients, not {k}")
        return lan_addr(k, family)

    def _log(self, msg: str) -> None:
        if self.verbose:
            print(msg, file=sys.stderr)
