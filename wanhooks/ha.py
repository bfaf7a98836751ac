"""A high-availability pair: what keepalived runs on each router (README, "Running a pair").

keepalived (VRRP) moves the shared addresses -- the LAN's gateway and each
WAN's NAT address -- to whichever router is master; conntrackd copies the
connections, sticky marks included, to the other.  wanhooks on each router
balances over the links whose shared address it holds (nat_address:) and
knows the rest are waiting for theirs.  keepalived.conf calls two commands:

  vrrp_script wanhooks { script "/usr/bin/wanhooks vrrp check" ... }
      exit 0 while this router has a usable link of the best tier: one in the
      balance, or one kept out only because the other router holds its shared
      address -- and probed healthy, if probed.  A track_script weight on it
      lowers the priority of a router whose uplinks are dead, so the pair
      moves to the one whose are not.
  notify "/usr/bin/wanhooks vrrp notify"
      keepalived appends GROUP|INSTANCE, the name, the new state (and the
      priority): conntrackd's own steps for that state, as its primary-backup.sh
      takes them (below), then the daemon is told: a round at once, and
      `status` shows the role.

usable_here and conntrackd_commands are pure; run_conntrackd runs the steps
(`wanhooks vrrp` in cli.py prints what it says).
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Any

from . import constants as c
from .observe.status import WAITING
from .plan.names import shown

# conntrackd's client commands for each new state, with what each is for (its
# primary-backup.sh: doc/sync in conntrack-tools).
CONNTRACKD_STEPS: dict[str, tuple[tuple[str, str], ...]] = {
    "MASTER": (
        ("-c", "commit the external cache (the old master's connections) into the kernel's table"),
        ("-f", "flush the internal and external caches"),
        ("-R", "resynchronise the internal cache with the kernel's table"),
        ("-B", "send a bulk update to the other router"),
    ),
    "BACKUP": (
        ("-t", "shorten the kernel's conntrack timers: the entries of a master's time age out"),
        ("-n", "ask the master for a resync"),
    ),
    "FAULT": (("-t", "shorten the kernel's conntrack timers: the entries of a master's time age out"),),
    "STOP": (),
}


def conntrackd_commands(state: str, binary: str, config: str | None) -> list[tuple[list[str], str]]:
    """(argv, why) for each conntrackd step of the new state, in order."""
    base = [binary] + (["-C", config] if config else [])
    return [([*base, flag], why) for flag, why in CONNTRACKD_STEPS.get(state, ())]


def run_conntrackd(state: str, binary: str, config: str | None) -> list[str]:
    """Run conntrackd's steps for the new state, in order; what failed, one line each (a
    missing conntrackd, a step that failed or did not answer in CONNTRACKD_STEP_TIMEOUT_S)."""
    if not shutil.which(binary):
        return [
            f"no {binary} (connections are not committed or synced; "
            "--conntrackd none if this pair runs without)"
        ]
    failures = []
    for argv, why in conntrackd_commands(state, binary, config):
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, check=False, timeout=c.CONNTRACKD_STEP_TIMEOUT_S
            )
            said = shown((done.stderr or done.stdout).strip(), 200) if done.returncode else ""
        except subprocess.TimeoutExpired:
            said = f"no answer in {c.CONNTRACKD_STEP_TIMEOUT_S:g} s"
        if said:
            failures.append(f"{' '.join(argv)} ({why}) failed: {said}")
    return failures


def usable_here(doc: dict[str, Any]) -> tuple[bool, str]:
    """Whether this router has a usable link of the best tier (vrrp check's exit status), and
    why, in one line, from the daemon's status document."""
    links = doc.get("links") or []
    if not links:
        return False, "no managed link is present"
    best = min(int(link.get("tier") or 1) for link in links)
    usable, dead = [], []
    for link in links:
        if int(link.get("tier") or 1) != best:
            continue
        if any(_family_usable(link.get(f"ipv{f}") or {}) for f in (4, 6)):
            usable.append(link["name"])
        else:
            dead.append(link["name"])
    if usable:
        return True, f"usable tier-{best} link(s): {', '.join(usable)}"
    return False, f"no usable tier-{best} link (not usable: {', '.join(dead)})"


def _family_usable(family: dict[str, Any]) -> bool:
    health = family.get("health")
    if health is not None and health.get("state") != "up":
        return False
    # kept out only because the other router holds its shared address (the last gate of
    # the plan: otherwise usable): usable here once this router is master
    return bool(family.get("eligible")) or family.get("out") == WAITING
