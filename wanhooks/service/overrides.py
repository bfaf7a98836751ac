"""The admin's link overrides (`wanhooks link disable|drain|enable NAME`): applied to the
current set (pure), and kept in the run dir so they survive a daemon restart -- not a
reboot: the run dir is a tmpfs."""

from __future__ import annotations

import json
import os

from ..model import Overrides
from ..plan.names import ifname_problem
from .lock import write_private

OVERRIDES_FILE = "overrides.json"
ACTIONS = ("disable", "drain", "enable")


def applied(overrides: Overrides, action: str, name: str) -> Overrides:
    """The overrides after `wanhooks link <action> <name>` (ValueError for another action).
    A link is in at most one set; enable takes it out of both."""
    if action not in ACTIONS:
        raise ValueError(f"unknown link action {action[:20]!r}: disable, drain or enable")
    disabled, draining = set(overrides.disabled) - {name}, set(overrides.draining) - {name}
    if action == "disable":
        disabled.add(name)
    elif action == "drain":
        draining.add(name)
    return Overrides(disabled=frozenset(disabled), draining=frozenset(draining))


def load(run_dir: str) -> Overrides:
    """What the last daemon saved; none when there is nothing, or nothing readable (a name
    that is no interface name is dropped: the file is input, like any other)."""
    try:
        path = os.path.join(run_dir, OVERRIDES_FILE)
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError, RecursionError):
        return Overrides()
    if not isinstance(data, dict):
        return Overrides()
    return Overrides(disabled=_names(data.get("disabled")), draining=_names(data.get("draining")))


def _names(value: object) -> frozenset[str]:
    if not isinstance(value, list):
        return frozenset()
    return frozenset(n for n in value if isinstance(n, str) and not ifname_problem(n))


def save(run_dir: str, overrides: Overrides) -> None:
    """Written privately and fsynced (write_private): call it off the event loop."""
    doc = {"disabled": sorted(overrides.disabled), "draining": sorted(overrides.draining)}
    write_private(os.path.join(run_dir, OVERRIDES_FILE), json.dumps(doc))
