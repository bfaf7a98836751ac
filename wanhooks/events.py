"""What the daemon hears, as small frozen records built only by the sources.

Every event only marks the state dirty: the daemon then looks at the kernel
afresh (level-triggered), so an event never needs to carry the whole truth.
The fields are for the log line that says what triggered a change.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelChanged:
    """rtnetlink: a link, address, main-table default, rule or owned object changed."""

    what: str  # link | address | route | rule | nexthop
    change: str  # new | del
    ifindex: int = 0
    detail: str = ""
    deleted_by: int | None = (
        None  # one of wanhooks' objects deleted: the sender's netlink port (0: the kernel)
    )


@dataclass(frozen=True)
class Resync:
    """Something may have been missed (netlink buffer overrun, start-up, a timer)."""

    reason: str


@dataclass(frozen=True)
class HookNotified:
    """A dispatcher hook forwarded a network manager's event."""

    source: str  # nm-dispatcher | networkd-dispatcher | manual
    iface: str
    action: str


@dataclass(frozen=True)
class LinkCommand:
    """An admin's `wanhooks link disable|drain|enable NAME`."""

    action: str
    name: str


@dataclass(frozen=True)
class VrrpChanged:
    """keepalived's notify: this router's role in a VRRP instance changed (wanhooks vrrp notify)."""

    instance: str
    state: str  # MASTER | BACKUP | FAULT | STOP


@dataclass(frozen=True)
class ManagerChanged:
    """NetworkManager said something about a device (state, IP config, connectivity)."""

    iface: str
    detail: str


@dataclass(frozen=True)
class HealthChanged:
    """A link's health machine changed state (health/probes.py -> health/machine.py)."""

    iface: str
    family: int
    old: str
    new: str
    reason: str


Event = KernelChanged | Resync | HookNotified | LinkCommand | ManagerChanged | HealthChanged | VrrpChanged


def describe(event: Event) -> str:
    """One short phrase for logs."""
    if isinstance(event, KernelChanged):
        where = f" if{event.ifindex}" if event.ifindex else ""
        return f"kernel {event.what} {event.change}{where}{' ' + event.detail if event.detail else ''}"
    if isinstance(event, Resync):
        return f"resync ({event.reason})"
    if isinstance(event, HookNotified):
        return f"{event.source} {event.action} {event.iface}"
    if isinstance(event, LinkCommand):
        return f"admin: link {event.action} {event.name}"
    if isinstance(event, HealthChanged):
        return f"health {event.iface} IPv{event.family} {event.old} -> {event.new} ({event.reason})"
    if isinstance(event, VrrpChanged):
        return f"keepalived: {event.state} in {event.instance}"
    return f"NetworkManager {event.iface}: {event.detail}"
