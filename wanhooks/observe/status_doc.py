"""The daemon's status document (`status --json`, and what metrics read): the plan and
the kernel's state as `wanhooks status` shows them (status.py), plus what only the daemon
knows -- probes, link states over time, traffic shares, weight: auto, its own figures."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Any

from ..kernel import Kernel
from ..model import Config, Delegation, MainDefault, ManagedDevice, Overrides
from ..plan.planner import plan, resolve_group_kind
from ..plan.verdicts import HealthVerdicts
from ..reconcile.diff import diff
from .status import status_json
from .traffic_share import CounterSnapshot, TrafficWindow


@dataclass(frozen=True)
class StatusInputs:
    """The loop's state a status document needs, copied on the loop for the worker."""

    config: Config
    overrides: Overrides
    verdicts: HealthVerdicts
    manager: tuple[ManagedDevice, ...]
    held: tuple[MainDefault, ...]
    held_doc: list[dict[str, Any]]
    health: dict[tuple[str, int], dict[str, Any]]
    link_states: dict[str, tuple[str, float, bool]]
    capacities: dict[str, float]  # weight: auto's applied values
    weighing: dict[str, dict[str, Any] | None]  # each auto link's estimate, for status
    weight_changes: list[tuple[float, str]]
    rounds: int
    events: int
    tasks: int
    vrrp: dict[str, tuple[str, float]] = field(default_factory=dict)  # instance -> (state, for s)
    delegations: tuple[Delegation, ...] = ()  # the prefixes learned (kept ones too)


def build_status(
    kernel: Kernel, traffic: TrafficWindow, given: StatusInputs, with_counters: bool
) -> dict[str, Any]:
    """In the daemon's kernel worker: the kernel's part, the plan, the document."""
    observed = kernel.observe()
    observed = replace(
        observed,
        main_defaults=observed.main_defaults + given.held,
        manager=given.manager,
        delegations=given.delegations,
    )
    desired = plan(given.config, observed, given.overrides, given.verdicts, capacities=given.capacities)
    owned = kernel.dump_owned()
    kind, _note = resolve_group_kind(given.config, observed)
    doc = status_json(given.config, observed, desired, owned, kind, diff(desired, owned))
    now = time.monotonic()
    managed = {link["name"] for link in doc["links"]}  # shares of the WAN traffic, not the LAN's
    every = kernel.link_counters()
    try:
        heard = kernel.evidence()
    except OSError:  # no nf_tables in this kernel, or no right to read it: no evidence shown
        heard = {}
    rates = traffic.rates(CounterSnapshot(now, {name: n for name, n in every.items() if name in managed}))
    for link in doc["links"]:
        for family in (4, 6):
            link[f"ipv{family}"]["health"] = given.health.get((link["name"], family))
            evidence = heard.get((link["name"], family))
            if evidence is not None:  # packets heard from beyond on established connections, sent beyond
                link[f"ipv{family}"]["evidence"] = {"heard": evidence[0], "sent": evidence[1]}
        state, since, at_start = given.link_states.get(link["name"], ("", now, False))
        if state == link["state"]:
            link["since_s"], link["since_start"] = round(now - since, 1), at_start
        rate = rates.get(link["name"])
        if rate is not None:
            link["traffic"] = {
                "share": round(rate.share, 4) if rate.share is not None else None,
                "rx_bps": round(rate.rx_bps),
                "tx_bps": round(rate.tx_bps),
                "window_s": round(rate.window_s, 1),
            }
        weighing = given.weighing.get(link["name"])
        if weighing is not None:
            link["capacity"] = weighing
        found = every.get(link["name"]) if with_counters else None
        if found is not None:  # the metrics' byte counters, from the same dump
            link["rx_bytes"], link["tx_bytes"] = found.rx_bytes, found.tx_bytes
    doc["daemon"] = {
        "pid": os.getpid(),
        "rounds": given.rounds,
        "events": given.events,
        "rss_kib": rss_kib(),
        "open_fds": len(os.listdir("/proc/self/fd")),
        "tasks": given.tasks,
        "disabled": sorted(given.overrides.disabled),
        "draining": sorted(given.overrides.draining),
        "held_gateways": given.held_doc,
        "weight_changes": [{"ago_s": round(now - at, 1), "why": why} for at, why in given.weight_changes],
    }
    # keepalived's word on this router's role (wanhooks vrrp notify), and the links waiting
    # for a shared address the other router holds
    doc["vrrp"] = [
        {"instance": name, "state": state, "since_s": round(ago, 1)}
        for name, (state, ago) in sorted(given.vrrp.items())
    ]
    return doc


def rss_kib() -> int:
    """Resident memory, from /proc/self/status (0 where there is none)."""
    try:
        with open("/proc/self/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0
