"""Forwarded TCP connections through group changes: sticky connections on vs off, in one run.

    python bench/sticky_survival.py [--flows 60] [--cycles 5] [--trials 2]

Root; builds a router lab whose ISPs all drop foreign source addresses
(BCP38) and whose router does no NAT of its own: wanhooks masquerades.
For each group kind (legacy multipath route, resilient nexthop group) and
sticky on/off, `wanhooks run` balances a LAN client's `flows` long-lived
TCP connections (an echo every 50 ms) while link w3 is drained and enabled
`cycles` times (each change rebuilds the group).  A connection *survives*
when no echo was ever late by a second or more and it was never reset.

Why they die without the mark: when a rebuilt group hashes a masqueraded
connection onto another link, the kernel drops the packet and kills the
connection's conntrack entry (nf_nat_oif_changed); the next packet starts a
fresh mapping on the new link's address, which the server has never seen,
and it answers with a reset (an nft counter in the server's namespace, set
up by hand once, counted one RST per broken connection).  Prints a Markdown
table.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from wanhooks import constants as c
from wanhooks.lab import SERVER4, Lab

LINKS = "".join(
    f"  - {{interface: w{i}, gateway: 100.64.{i}.1, weight: {w}}}\n" for i, w in ((1, 1), (2, 2), (3, 1))
)


def members(lab: Lab, group: str) -> int:
    if group == "legacy":
        table = lab.ip(lab.router, "route", "show", "table", str(c.TABLE_BALANCE), check=False)
        return table.count("nexthop via") or int("default via" in table)
    shown = lab.ip(lab.router, "nexthop", "show", "id", str(c.NH_GROUP_V4), check=False)
    return shown.split(" group ")[1].split()[0].count("/") + 1 if " group " in shown else 0


def wait(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise TimeoutError("the group did not change in time")
        time.sleep(0.02)


def one_run(lab: Lab, tmp: str, group: str, sticky: bool, flows: int, cycles: int) -> tuple[int, str]:
    """(connections that survived, how the others ended)."""
    cfg = Path(tmp) / "wanhooks.yaml"
    cfg.write_text(f"links:\n{LINKS}nat: masquerade\ngroup: {group}\nsticky: {str(sticky).lower()}\n")
    run_dir = f"{tmp}/run-{group}-{sticky}"
    base = [sys.executable, "-m", "wanhooks", "-c", str(cfg), "--run-dir", run_dir]
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", lab.router, *base, "run"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait(lambda: members(lab, group) == 3)
        seconds = cycles * 1.2 + 2
        hold = lab.spawn(
            lab.lan, "tcp-hold", "--dst", SERVER4, "--flows", str(flows), "--seconds", str(seconds)
        )
        assert hold.stdout is not None and hold.stdout.readline().strip() == "started"
        time.sleep(0.5)
        for _ in range(cycles):
            lab.ns_exec(lab.router, [*base, "link", "drain", "w3"])
            wait(lambda: members(lab, group) == 2)
            time.sleep(0.5)
            lab.ns_exec(lab.router, [*base, "link", "enable", "w3"])
            wait(lambda: members(lab, group) == 3)
            time.sleep(0.5)
        results = json.loads(hold.stdout.readline())
        hold.wait(30)
    finally:
        daemon.terminate()
        daemon.wait(10)
        lab.ns_exec(lab.router, [*base, "cleanup"], check=False)
        lab.ns_exec(lab.router, ["conntrack", "-F"], check=False)
    survived = [r for r in results if r["error"] is None and r["max_gap"] < 1.0]
    ends = Counter(r["error"] or f"stalled {r['max_gap']:.1f} s" for r in results if r not in survived)
    return len(survived), ", ".join(f"{n} {why}" for why, n in ends.most_common()) or "-"


def main() -> int:
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--flows", type=int, default=60)
    ap.add_argument("--cycles", type=int, default=5)
    ap.add_argument("--trials", type=int, default=2)
    args = ap.parse_args()
    print(f"| group | sticky | trial | survived of {args.flows} | the others |")
    print("|---|---|---:|---:|---|")
    with Lab(3, router_nat=False, antispoof=True) as lab, tempfile.TemporaryDirectory() as tmp:
        echo = lab.spawn(lab.internet, "tcp-echo", "--port", "9200", "--seconds", "3600")
        assert echo.stdout is not None and echo.stdout.readline().strip() == "ready"
        try:
            for group in ("legacy", "resilient"):
                for sticky in (True, False):
                    for trial in range(1, args.trials + 1):
                        alive, others = one_run(lab, tmp, group, sticky, args.flows, args.cycles)
                        on = "on" if sticky else "off"
                        print(f"| {group} | {on} | {trial} | {alive} | {others} |", flush=True)
        finally:
            echo.terminate()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
