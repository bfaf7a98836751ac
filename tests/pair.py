"""A pair of routers in network namespaces, for tests/test_pair_lab.py (root only).

    net         the internet: 203.0.113.10 (a server) on its loopback
     | 198.18.1.0/30        | 198.18.2.0/30
    isp1                   isp2            each drops sources not its own (BCP38)
     | sw1: 100.64.1.0/24   | sw2: 100.64.2.0/24   .1 the ISP, .2 r1, .3 r2, .10 shared
    r1 ======= sync0: 10.99.0.0/30 (conntrackd) ======= r2
     | swl: 192.168.50.0/24: .2 r1, .3 r2, .1 shared (the LAN's gateway), .100 the client
    lan

sw1, sw2 and swl are namespaces holding a bridge each: a segment both routers
share.  keepalived (VRRPv3, 0.3 s adverts) moves the three shared addresses
together (one sync group); its notify runs `wanhooks vrrp notify`, which runs
conntrackd's steps (FTFW over sync0) when conntrackd is on; wanhooks runs on
both routers, each link NATed to its WAN's shared address.  Everything lives
in namespaces of the pair's own, deleted by down(); every process is started
here and ended by pid.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from wanhooks.lab import netns_names

SERVER = "203.0.113.10"
SHARED = {"lan0": "192.168.50.1", "w1": "100.64.1.10", "w2": "100.64.2.10"}
ROUTERS = (1, 2)


def sh(*argv: str, input: str | None = None, check: bool = True) -> str:
    return subprocess.run(argv, input=input, capture_output=True, text=True, check=check).stdout


# The shipped examples are what the pair runs: only their paths are replaced, and on
# router 2 the values their comments say differ.
EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "pair"


def keepalived_conf(r: int, wanhooks: str, conntrackd_config: Path | None) -> str:
    text = (EXAMPLES / "keepalived.conf").read_text().replace("/usr/sbin/wanhooks", wanhooks)
    ct = "--conntrackd-config /etc/conntrackd/conntrackd.conf"
    text = text.replace(
        ct, f"--conntrackd-config {conntrackd_config}" if conntrackd_config else "--conntrackd none"
    )
    if r == 2:
        text = text.replace("router_id r1", "router_id r2").replace("priority 150", "priority 100")
    return text


def conntrackd_conf(r: int, d: Path) -> str:
    text = (EXAMPLES / "conntrackd.conf").read_text()
    for old, new in (
        ("/var/log/conntrackd.log", f"{d}/conntrackd.log"),
        ("/var/lock/conntrackd.lock", f"{d}/conntrackd.lock"),
        ("/var/run/conntrackd.ctl", f"{d}/conntrackd.ctl"),
    ):
        text = text.replace(old, new)
    if r == 2:
        text = (
            text.replace("IPv4_address 10.99.0.1", "IPv4_address 10.99.0.@")
            .replace("IPv4_Destination_Address 10.99.0.2", "IPv4_Destination_Address 10.99.0.1")
            .replace("IPv4_address 10.99.0.@", "IPv4_address 10.99.0.2")
        )
    return text


ISP_NFT = """\
table inet labisp {{
  counter shared {{ }}
  chain forward {{
    type filter hook forward priority 0;
    iifname "c" ip saddr != 100.64.{i}.0/24 counter drop
    iifname "c" ip saddr 100.64.{i}.10 counter name shared
  }}
}}
"""


class Pair:
    def __init__(self, work: Path, *, conntrackd: bool) -> None:
        self.prefix = f"wp{secrets.token_hex(3)}"
        self.work = work
        self.conntrackd = conntrackd
        names = ["net", "isp1", "isp2", "sw1", "sw2", "swl", "r1", "r2", "lan"]
        self.ns = {n: f"{self.prefix}-{n}" for n in names}
        self.procs: dict[str, subprocess.Popen[str]] = {}
        self.created: list[str] = []  # namespaces this pair made: the only ones down() touches

    # --- building -----------------------------------------------------------------------

    def up(self) -> None:
        taken = netns_names() & set(self.ns.values())
        if taken:  # never another's: down() deletes what it finds under these names
            raise RuntimeError(f"namespaces {sorted(taken)} exist already")
        for name in self.ns.values():
            sh("ip", "netns", "add", name)
            self.created.append(name)
            self.batch(name, "link set lo up")
        for n in ("net", "isp1", "isp2", "r1", "r2"):
            self.exec(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        for r in ROUTERS:
            # conntrackd's advice for a pair: a connection the new master does not know yet is
            # not picked up mid-stream (with whatever link and address the balance gives it)
            # before the commit restores it; and the windows of committed ones are not judged
            self.exec(
                f"r{r}", "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=2",
                "net.netfilter.nf_conntrack_tcp_loose=0", "net.netfilter.nf_conntrack_tcp_be_liberal=1",
            )  # fmt: skip
        for i in (1, 2):  # the internet's side of each ISP
            self.batch(
                self.ns[f"isp{i}"],
                f"link add up{i} type veth peer name down{i} netns {self.ns['net']}",
                f"link set up{i} up",
                f"addr add 198.18.{i}.1/30 dev up{i}",
                f"route add default via 198.18.{i}.2",
            )
            self.batch(
                self.ns["net"],
                f"link set down{i} up",
                f"addr add 198.18.{i}.2/30 dev down{i}",
                f"route add 100.64.{i}.0/24 via 198.18.{i}.1",
            )
            self.exec(f"isp{i}", "nft", "-f", "-", input=ISP_NFT.format(i=i))
        self.batch(self.ns["net"], f"addr add {SERVER}/32 dev lo")
        # the segments: a bridge each, the ISP (or the client) and both routers on it
        segments = {"sw1": ("isp1", "c", "w1", "100.64.1"), "sw2": ("isp2", "c", "w2", "100.64.2")}
        for sw, (other, other_if, wan, net) in segments.items():
            self.bridge(sw, [(other, other_if), ("r1", wan), ("r2", wan)])
            self.batch(self.ns[other], f"addr add {net}.1/24 dev {other_if}")
            for r in ROUTERS:
                self.batch(self.ns[f"r{r}"], f"addr add {net}.{r + 1}/24 dev {wan}")
        self.bridge("swl", [("lan", "eth0"), ("r1", "lan0"), ("r2", "lan0")])
        lan = self.ns["lan"]
        self.batch(lan, "addr add 192.168.50.100/24 dev eth0", "route add default via 192.168.50.1")
        for r in ROUTERS:
            self.batch(self.ns[f"r{r}"], f"addr add 192.168.50.{r + 1}/24 dev lan0")
        self.batch(
            self.ns["r1"],
            f"link add sync0 type veth peer name sync0 netns {self.ns['r2']}",
            "link set sync0 up",
            "addr add 10.99.0.1/30 dev sync0",
        )
        self.batch(self.ns["r2"], "link set sync0 up", "addr add 10.99.0.2/30 dev sync0")

    def bridge(self, sw: str, ports: list[tuple[str, str]]) -> None:
        self.batch(self.ns[sw], "link add br0 type bridge", "link set br0 up")
        for k, (node, ifname) in enumerate(ports):
            self.batch(
                self.ns[sw],
                f"link add p{k} type veth peer name {ifname} netns {self.ns[node]}",
                f"link set p{k} master br0",
                f"link set p{k} up",
            )
            self.batch(self.ns[node], f"link set {ifname} up")

    def batch(self, ns: str, *lines: str) -> None:
        sh("ip", "-n", ns, "-batch", "-", input="\n".join(lines) + "\n")

    def exec(self, node: str, *argv: str, input: str | None = None, check: bool = True) -> str:
        return sh("ip", "netns", "exec", self.ns[node], *argv, input=input, check=check)

    # --- the routers' daemons ---------------------------------------------------------------

    def start_router(self, r: int) -> None:
        """wanhooks, conntrackd (when on) and keepalived on router r, in that order."""
        d = self.work / f"r{r}"
        d.mkdir(parents=True, exist_ok=True)
        run_dir = d / "run"
        config = d / "wanhooks.yaml"
        config.write_text((EXAMPLES / "wanhooks.yaml").read_text() + "hooks_dir: /nonexistent/hooks.d\n")
        wanhooks = [sys.executable, "-m", "wanhooks", "-c", str(config), "--run-dir", str(run_dir)]
        self.spawn(f"wanhooks{r}", r, [*wanhooks, "run"], d / "wanhooks.log")
        deadline = time.monotonic() + 20
        while "round 1:" not in (d / "wanhooks.log").read_text():
            assert time.monotonic() < deadline, (d / "wanhooks.log").read_text()[-2000:]
            time.sleep(0.05)
        ct_conf = d / "conntrackd.conf" if self.conntrackd else None
        if ct_conf is not None:
            ct_conf.write_text(conntrackd_conf(r, d))
            self.spawn(f"conntrackd{r}", r, ["conntrackd", "-C", str(ct_conf)], d / "conntrackd.out")
            time.sleep(0.5)
        ka = d / "keepalived.conf"
        ka.write_text(keepalived_conf(r, " ".join(wanhooks), ct_conf))
        pids = ["-p", str(d / "ka.pid"), "-r", str(d / "vrrp.pid")]
        self.spawn(
            f"keepalived{r}",
            r,
            ["keepalived", "-n", "-l", "-D", "-P", "-f", str(ka), *pids],
            d / "keepalived.log",
        )

    def spawn(self, key: str, r: int, argv: list[str], log: Path) -> None:
        out = open(log, "w")  # noqa: SIM115 - kept open for the process's life
        self.procs[key] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[f"r{r}"], *argv], stdout=out, stderr=subprocess.STDOUT, text=True
        )
        out.close()

    def master(self) -> int | None:
        """The router holding the LAN's shared address."""
        held = [r for r in ROUTERS if SHARED["lan0"] in self.exec(f"r{r}", "ip", "-br", "addr", check=False)]
        return held[0] if len(held) == 1 else None

    def kill_router(self, r: int) -> None:
        """The router dies: its links cut, its daemons killed (-9)."""
        for ifname in ("lan0", "w1", "w2", "sync0"):
            self.batch(self.ns[f"r{r}"], f"link set {ifname} down")
        for key in (f"keepalived{r}", f"wanhooks{r}", f"conntrackd{r}"):
            proc = self.procs.pop(key, None)
            if proc is not None:
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        self.end_processes(f"r{r}")  # keepalived's VRRP child, a notify under way

    def end_processes(self, node: str) -> None:
        """Every process left in one of the pair's namespaces: started here, or by them."""
        for pid in sh("ip", "netns", "pids", self.ns[node], check=False).split():
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)

    def revive_router(self, r: int) -> None:
        """Back from the dead, as a reboot leaves it: no shared address, its links up."""
        for ifname, address in SHARED.items():
            self.exec(f"r{r}", "ip", "addr", "del", f"{address}/24", "dev", ifname, check=False)
        for ifname in ("lan0", "w1", "w2", "sync0"):
            self.batch(self.ns[f"r{r}"], f"link set {ifname} up")
        self.start_router(r)

    def shared_packets(self, i: int) -> int:
        """Packets from the shared address that ISP i has forwarded."""
        out = self.exec(f"isp{i}", "nft", "list", "counter", "inet", "labisp", "shared")
        return int(out.split("packets")[1].split()[0])

    def log(self, r: int, what: str) -> str:
        path = self.work / f"r{r}" / what
        return path.read_text() if path.exists() else ""

    def down(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        self.procs.clear()
        for node, name in self.ns.items():
            if name in self.created:
                self.end_processes(node)
        for name in self.created:
            sh("ip", "netns", "del", name, check=False)
        self.created.clear()


def available() -> str | None:
    """What is missing to run the pair, or None."""
    missing = [tool for tool in ("keepalived", "conntrackd") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not installed" if missing else None
