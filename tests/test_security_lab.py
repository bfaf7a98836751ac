"""Security regressions, each attack run for real in a lab (root only; network namespaces).

Issue #13's findings, one test each: hostile interface names (nftables
injection, log and terminal forging), the notify fallback importing from the
caller's directory, a busy or stopped daemon being undone by a hook's
`apply`, an untrusted run dir, and hostile control-socket requests.  The
D-Bus findings are in test_dbus_security.py, the transition hooks' in
test_transition_hooks.py, cleanup's record in test_sysctls.py.
"""

from __future__ import annotations

import json
import os
import pwd
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import DaemonProc, Router, wait_for
from conftest import group_members as members

from wanhooks import constants as c
from wanhooks.lab import SERVER4, Lab

pytestmark = pytest.mark.kernel
Start = Callable[..., DaemonProc]

CONFIG = """\
links:
  - {interface: w1, gateway: 100.64.1.1}
  - {interface: w2, gateway: 100.64.2.1}
  - {interface: w3, gateway: 100.64.3.1}
  - interface: 'w*'
nat: masquerade
"""
# the two names of the finding, then what else the kernel allows
ATTACK_NAMES = [b'wl";drop;#', b"w\\1"]
FORBIDDEN = set(b"/:% \t\n\v\f\r\0")  # the kernel's (and '%': a name template)
SAFE = set(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+@")


def hostile(name: bytes) -> bool:
    return not set(name) <= SAFE


@pytest.fixture
def lab3() -> Iterator[object]:
    # the ISPs drop foreign sources: only wanhooks' NAT gets the LAN out
    with Lab(3, router_nat=False, antispoof=True) as lab:
        yield lab


def hostile_names(seed: int, count: int) -> list[bytes]:
    """Names the kernel accepts, starting with 'w' (the config's glob matches them all)."""
    rng = random.Random(seed)
    allowed = [b for b in range(1, 256) if b not in FORBIDDEN]
    out = list(ATTACK_NAMES)
    while len(out) < count:
        name = b"w" + bytes(rng.choice(allowed) for _ in range(rng.randint(1, 14)))
        if name not in out and hostile(name):
            out.append(name)
    return out


def add_hostile_links(lab: Lab, names: list[bytes], first: int = 0) -> list[bytes]:
    """Each name as a veth in the router, up, with an address (so NAT would cover it)."""
    made = []
    for k, name in enumerate(names, start=first):
        peer = f"hp{k}".encode()
        add = [
            b"ip",
            b"-n",
            lab.router.encode(),
            b"link",
            b"add",
            name,
            b"type",
            b"veth",
            b"peer",
            b"name",
            peer,
        ]
        if subprocess.run(add, capture_output=True).returncode != 0:
            continue  # one the kernel refuses after all ('.', '..', a name it takes as a template)
        dev = [b"ip", b"-n", lab.router.encode()]
        subprocess.run([*dev, b"addr", b"add", f"100.99.{k}.1/30".encode(), b"dev", name], check=True)
        subprocess.run([*dev, b"link", b"set", name, b"up"], check=True)
        subprocess.run([*dev, b"link", b"set", peer, b"up"], check=True)
        made.append(name)
    return made


def lan_reaches_the_internet(lab: Lab) -> bool:
    return lab.ping(lab.lan, SERVER4, count=2, timeout=1.0)


def nft_table(lab: Lab) -> str:
    return lab.ns_exec(lab.router, ["nft", "list", "table", "inet", "wanhooks"]).stdout


def test_hostile_interface_names_never_reach_nft_the_logs_or_a_terminal(
    router: Router, daemon_factory: Start
) -> None:
    """H1 and the fuzz: names made of every byte the kernel allows, matched by the config's
    glob, change nothing outside wanhooks' own objects -- through apply, status, the
    daemon and its log, and cleanup."""
    lab = router.lab
    router.write_config(CONFIG)
    before = router.snapshot()
    seed = int(os.environ.get("WANHOOKS_NAMES_SEED", random.randrange(1 << 32)))
    made = add_hostile_links(lab, hostile_names(seed, 40))
    assert len(made) >= 30 and made[:2] == ATTACK_NAMES, (seed, made)
    assert all(hostile(n) for n in made)
    baseline = router.snapshot()  # the hostile links themselves, before wanhooks

    applied = router.wanhooks("apply")
    table = nft_table(lab)
    rules = [line.strip() for line in table.splitlines() if "comment" in line and "masquerade" in line]
    assert sorted(rules) == sorted(
        f'oifname "w{i}" meta nfproto ipv4 masquerade comment "nat w{i}"' for i in (1, 2, 3)
    ), (seed, table)
    assert "drop" not in table and "\\" not in table, (seed, table)
    assert lan_reaches_the_internet(lab), f"seed {seed}: the LAN lost the internet"
    assert set(members(lab)) == {"w1", "w2", "w3"}
    for out in (applied.stdout, applied.stderr):
        assert out.isprintable() or all(line.isprintable() for line in out.splitlines()), (seed, out)
    assert "is not managed" in applied.stdout

    status = router.wanhooks("status")
    assert all(line.isprintable() for line in status.stdout.splitlines()), (seed, status.stdout)
    assert "\x1b" not in status.stdout and "Traceback" not in status.stderr
    doc = json.loads(router.wanhooks("status", "--json").stdout)
    assert {link["name"] for link in doc["links"]} == {"w1", "w2", "w3"}

    # the daemon: present from start-up, and one more hostile link while it runs
    daemon = daemon_factory()
    late = add_hostile_links(lab, [b"wz\x1b]0;owned\x07"], first=100)
    assert late
    wait_for(lambda: "interface" in daemon.text() and "not managed" in daemon.text(), 5, "a note")
    router.wanhooks("link", "disable", "w3")
    wait_for(lambda: set(members(lab)) == {"w1", "w2"}, 5, "w3 disabled")
    router.wanhooks("link", "enable", "w3")
    wait_for(lambda: set(members(lab)) == {"w1", "w2", "w3"}, 5, "w3 back")
    assert lan_reaches_the_internet(lab)
    assert daemon.stop() == 0
    log_bytes = daemon.log_path.read_bytes()
    log = log_bytes.decode("utf-8")  # valid UTF-8 whatever the names' bytes
    assert "Traceback" not in log and "round failed" not in log, log[-3000:]
    for line in log.splitlines():
        assert line.isprintable(), (seed, line)

    for name in late:
        subprocess.run([b"ip", b"-n", lab.router.encode(), b"link", b"del", name], check=True)
    router.wanhooks("cleanup")
    assert router.snapshot() == baseline, f"seed {seed}: cleanup left something, or something changed"
    for name in made:  # the lab is as it was before the hostile links came
        subprocess.run([b"ip", b"-n", lab.router.encode(), b"link", b"del", name], check=True)
    assert router.snapshot() == before


def plant_module(tmp: Path) -> tuple[Path, Path]:
    """A directory anyone can write, holding a `wanhooks.py` that leaves a mark if imported."""
    planted = tmp / "planted"
    planted.mkdir()
    os.chmod(planted, 0o1777)
    marker = tmp / "imported-the-planted-module"
    nobody = pwd.getpwnam("nobody")
    module = planted / "wanhooks.py"
    module.write_text(f"open({str(marker)!r}, 'w').write('ran as uid %d' % __import__('os').getuid())\n")
    os.chown(module, nobody.pw_uid, nobody.pw_gid)
    os.chmod(tmp, 0o755)
    return planted, marker


def test_the_notify_fallback_never_imports_from_the_callers_directory(router: Router) -> None:
    """M3: with no daemon (mode hooks-only), notify starts a one-shot apply; a `wanhooks.py`
    that `nobody` planted in the caller's working directory must not be what it runs."""
    lab = router.lab
    router.write_config("mode: hooks-only\n" + CONFIG)
    planted, marker = plant_module(router.tmp)
    # the hooks run wanhooks isolated (-I) themselves; the child it spawns must be too
    argv = [
        sys.executable,
        "-I",
        "-m",
        "wanhooks",
        "-c",
        str(router.config),
        "--run-dir",
        str(router.run_dir),
    ]
    notify = ["notify", "--source", "nm-dispatcher", "--action", "up", "w1"]
    proc = subprocess.run(
        ["ip", "netns", "exec", lab.router, *argv, *notify],
        cwd=planted, capture_output=True, text=True, timeout=30,
        env={**os.environ, "PYTHONPATH": str(planted)},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    wait_for(lambda: marker.exists() or set(members(lab)) == {"w1", "w2", "w3"}, 10, "the one-shot apply")
    assert not marker.exists(), f"the planted module ran: {marker.read_text()}"


def test_a_daemon_that_cannot_answer_is_never_undone_by_an_apply(
    router: Router, daemon_factory: Start
) -> None:
    """M4: while the daemon is stopped (SIGSTOP: alive, not answering), a hook's notify gives
    up on it but starts no `apply` -- which would know nothing of the admin's override and
    put w3 back; nor does an admin's `apply`."""
    lab = router.lab
    router.write_config(CONFIG)
    daemon_factory()
    router.wanhooks("link", "disable", "w3")
    wait_for(lambda: set(members(lab)) == {"w1", "w2"}, 5, "w3 disabled")
    pid = json.loads(router.wanhooks("status", "--json").stdout)["daemon"]["pid"]
    os.kill(pid, signal.SIGSTOP)
    try:
        notify = router.wanhooks("notify", "--source", "nm-dispatcher", "--action", "up", "w1")
        assert "not applying" in notify.stderr
        time.sleep(1.5)  # what a spawned apply would have needed (it takes ~0.3 s)
        assert set(members(lab)) == {"w1", "w2"}, "an apply ran beside the daemon"
    finally:
        os.kill(pid, signal.SIGCONT)
    applied = router.wanhooks("apply", check=False)  # refused: the daemon owns the routing
    assert applied.returncode == 1, applied
    assert f"a wanhooks daemon runs (pid {pid}) and owns the routing" in applied.stderr
    assert set(members(lab)) == {"w1", "w2"}


def test_a_round_in_flight_does_not_stop_the_daemon_answering(router: Router, daemon_factory: Start) -> None:
    """M4: a round waiting on the run lock (another apply, a slow nft) runs in the kernel
    worker: the control socket still answers at once, and the round completes after."""
    import fcntl

    lab = router.lab
    router.write_config(CONFIG)
    daemon = daemon_factory()
    balance = f"priority {c.PRIO_BALANCE}"
    fd = os.open(router.run_dir / "lock", os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # the next round blocks on it
        lab.ip(lab.router, "rule", "del", *balance.split())  # the daemon will restore it
        time.sleep(0.2)
        answers = [ping(router, timeout=2.0) for _ in range(20)]
        assert all(answers), "the control socket went silent while a round waited"
        assert lab.ip(lab.router, "rule", "show", *balance.split()).strip() == ""  # still waiting
    finally:
        os.close(fd)
    wait_for(lambda: "lookup" in lab.ip(lab.router, "rule", "show", *balance.split()), 5, "the rule back")
    assert set(members(lab)) == {"w1", "w2", "w3"}
    assert "round failed" not in daemon.text()


def ping(router: Router, timeout: float) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        # the router namespace does not matter to a Unix socket: its path is the file system's
        sock.connect(str(router.run_dir / "control"))
        sock.sendall(b'{"v": 1, "op": "ping"}\n')
        return b'"ok": true' in sock.recv(4096)


def test_hostile_control_requests_are_refused_and_the_daemon_goes_on(
    router: Router, daemon_factory: Start
) -> None:
    """JSON nested 60,000 deep, a notify `source` forging a log line, a thousand distinct
    sources (each would have been a metrics counter): refused or folded, the daemon alive."""
    router.write_config(CONFIG)
    daemon = daemon_factory()

    def ask(payload: bytes) -> dict[str, object]:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5)
            sock.connect(str(router.run_dir / "control"))
            sock.sendall(payload)
            return dict(json.loads(sock.recv(65536)))

    deep = b'{"v": 1, "op": "notify", "x": ' + b"[" * 30000 + b"]" * 30000 + b"}\n"
    assert ask(deep) == {"ok": False, "error": "malformed JSON"}
    forged = {"v": 1, "op": "notify", "source": "x\nround 99: 0 changes", "iface": "w1", "action": "up"}
    assert ask(json.dumps(forged).encode() + b"\n")["ok"] is False
    for k in range(300):
        ask(json.dumps({"v": 1, "op": "notify", "source": f"s{k}", "action": "changed"}).encode() + b"\n")
    assert ping(router, timeout=2.0)
    daemon.stop()
    log = daemon.text()
    assert "round 99" not in log.replace("\\x0around 99", "")  # only ever escaped, never a line
    assert not any(line.startswith("round 99") for line in log.splitlines())
    assert "Traceback" not in log


def test_a_run_dir_that_is_not_roots_alone_is_refused(router: Router, tmp_path: Path) -> None:
    """A nobody-owned run dir with a `lock` symlink made root create a file elsewhere: such a
    dir is refused, and nothing is created or changed."""
    lab = router.lab
    router.write_config(CONFIG)
    before = router.snapshot()
    nobody = pwd.getpwnam("nobody")
    target = tmp_path / "created-by-root"
    router.run_dir.mkdir(mode=0o700)
    os.symlink(target, router.run_dir / "lock")
    os.chown(router.run_dir, nobody.pw_uid, nobody.pw_gid)
    for command in (["apply"], ["cleanup"], ["notify", "w1"]):
        proc = router.wanhooks(*command, check=False)
        assert proc.returncode in (0, 1) and "Traceback" not in proc.stderr, (command, proc.stderr)
    time.sleep(1)  # a spawned apply (notify) is refused as well
    assert not target.exists()
    assert router.snapshot() == before
    refused = router.wanhooks("apply", check=False)
    assert refused.returncode == 1 and "belongs to uid" in refused.stderr
    os.chown(router.run_dir, 0, 0)
    os.unlink(router.run_dir / "lock")
    os.chmod(router.run_dir, 0o775)
    refused = router.wanhooks("apply", check=False)
    assert refused.returncode == 1 and "mode 0775: others may write to it" in refused.stderr
    assert router.snapshot() == before
    os.chmod(router.run_dir, 0o755)  # others may enter it (the socket serves them status), not write
    router.wanhooks("apply")
    assert set(members(lab)) == {"w1", "w2", "w3"}


SLOW_CLIENTS = """\
import socket, sys, time
socks = []
for _ in range(int(sys.argv[2])):
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.sendall(b"GET /metrics HTTP/1.1\\r\\n")  # and never the rest
    socks.append(s)
print("ready", flush=True)
time.sleep(float(sys.argv[3]))
"""


def test_a_flood_of_stalled_scrapers_costs_no_threads_and_no_answers(
    router: Router, daemon_factory: Start
) -> None:
    """The metrics endpoint served each request in a thread of its own: 30 clients that
    never finish their request held 50 threads.  Now one thread serves, a stalled client
    is dropped after a timeout, and the control socket answers all the while."""
    lab = router.lab
    port = 9737
    router.write_config(CONFIG + f"metrics: 127.0.0.1:{port}\n")
    daemon = daemon_factory()
    daemon.wait_log("metrics: Prometheus endpoint")
    pid = json.loads(router.wanhooks("status", "--json").stdout)["daemon"]["pid"]
    tasks_before = len(os.listdir(f"/proc/{pid}/task"))
    clients = subprocess.Popen(
        ["ip", "netns", "exec", lab.router, sys.executable, "-c", SLOW_CLIENTS, str(port), "30", "3"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert clients.stdout is not None and clients.stdout.readline().strip() == "ready"
        time.sleep(0.5)
        assert len(os.listdir(f"/proc/{pid}/task")) <= tasks_before + 1
        assert all(ping(router, timeout=2.0) for _ in range(10))
        # the stalled ones are dropped in turn; a real scrape then gets its answer
        url = f"http://127.0.0.1:{port}/metrics"
        scrape = [
            sys.executable,
            "-c",
            f"import urllib.request as u; print(u.urlopen({url!r}, timeout=60).read().decode())",
        ]
        body = lab.ns_exec(lab.router, scrape, timeout=90).stdout
        assert 'wanhooks_link_in_balance{family="4",link="w1"} 1.0' in body
    finally:
        clients.kill()
        clients.wait()
