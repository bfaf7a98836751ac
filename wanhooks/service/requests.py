"""What the daemon's control requests mean (the socket and its protocol: control.py).  Pure:
each request is checked and turned into an event, or refused with a reason that names what
was wrong; the daemon posts the event.  Anything read from a request is treated as hostile
(a hook passes on names from DHCP servers and managers)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..config.load import unknown_link
from ..events import HookNotified, LinkCommand, VrrpChanged
from ..model import Config, Overrides
from ..plan.names import ifname_problem, shown
from . import overrides

HOOK_ACTIONS = frozenset(
    {
        # NetworkManager dispatcher
        "up", "down", "dhcp4-change", "dhcp6-change", "connectivity-change", "reapply",
        # networkd-dispatcher states
        "routable", "degraded", "carrier", "no-carrier", "off", "configured", "configuring",
        # anyone
        "changed",
    }
)  # fmt: skip
KNOWN_SOURCES = frozenset({"nm-dispatcher", "networkd-dispatcher", "manual"})  # counted by name in metrics
_SOURCE_NAME = re.compile(r"[a-z0-9-]{1,32}")


VRRP_STATES = frozenset({"MASTER", "BACKUP", "FAULT", "STOP"})  # keepalived's notify states
_INSTANCE_NAME = re.compile(r"[A-Za-z0-9_.:-]{1,64}")


@dataclass(frozen=True)
class Refused:
    error: str  # for the client
    logged: str  # for the log: what was refused, from whom


def hook_notice(request: dict[str, Any]) -> HookNotified | Refused:
    """op notify: a dispatcher hook says a link changed."""
    source, iface, action = (str(request.get(k, ""))[:64] for k in ("source", "iface", "action"))
    if source and not _SOURCE_NAME.fullmatch(source):
        return Refused(
            "the source must be 1-32 of a-z, 0-9 and -",
            f"notify refused: source {shown(source)!r} is not a name",
        )
    problem = ifname_problem(iface) if iface else None
    if problem:
        return Refused(problem, f"notify from {source or '?'} refused: {problem}")
    if action and action not in HOOK_ACTIONS:
        return Refused(
            f"unknown action {shown(action)!r}",
            f"notify from {source or '?'} refused: unknown action {shown(action)!r}",
        )
    return HookNotified(source=source or "unknown", iface=iface, action=action or "changed")


def link_command(
    request: dict[str, Any], config: Config, current: Overrides
) -> tuple[Overrides, LinkCommand] | str:
    """op link: the admin disables, drains or enables a link.  The overrides it leaves, and
    the event; or why not."""
    action, name = str(request.get("action", "")), str(request.get("name", ""))
    problem = ifname_problem(name)
    if problem:
        return problem
    # enable may clear an override of a link no longer configured
    problem = unknown_link(config, name) if action in ("disable", "drain") else None
    if problem:
        return problem
    try:
        return overrides.applied(current, action, name), LinkCommand(action=action, name=name)
    except ValueError as err:
        return str(err)


def vrrp_notice(request: dict[str, Any]) -> VrrpChanged | Refused:
    """op vrrp: keepalived's notify (wanhooks vrrp notify) says this router's role changed."""
    instance, state = (str(request.get(k, ""))[:80] for k in ("instance", "state"))
    if not _INSTANCE_NAME.fullmatch(instance):
        return Refused(
            "the instance must be 1-64 of A-Z, a-z, 0-9 and _.:-",
            f"vrrp refused: instance {shown(instance)!r} is not a name",
        )
    if state not in VRRP_STATES:
        return Refused(
            f"unknown state {shown(state)!r} (MASTER, BACKUP, FAULT or STOP)",
            f"vrrp refused: unknown state {shown(state)!r} for {instance}",
        )
    return VrrpChanged(instance=instance, state=state)
