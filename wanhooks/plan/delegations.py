"""Prefixes the ISPs delegated, learned from the LAN addresses their managers number from them.

An ISP's DHCPv6 prefix delegation ends up as addresses on LAN interfaces: the
router numbers each LAN /64 from it (systemd-networkd's DHCPPrefixDelegation=,
NetworkManager's shared profiles, dhcpcd, odhcp6c), and the LAN's hosts number
themselves from the router's adverts.  Each ISP drops sources from another's
prefix (BCP38), so traffic from a prefix must leave by the ISP that delegated
it -- and ISPs change the prefix: at reconnects, at renewals, on a schedule.

The kernel's addresses are the common ground: every client puts them there,
dynamic (with lifetimes), and the kernel tells of each change.  What the kernel
does not say is *which* uplink a LAN address came from.  Who does, first
answer winning: the config (`delegated_to:`), networkd (its .network file's
UplinkInterface=, read by sources/networkd_pd.py and handed in), NetworkManager
(a profile with ipv6.method=shared is numbered from the one prefix it asks for,
on its IPv6 default device -- the device of main's best IPv6 default, which it
put there itself; 1.42 exports the prefix nowhere).

A prefix whose LAN address goes away (the ISP gave a new one, the lease ended)
is kept until its valid lifetime ends: the hosts that numbered themselves from
it keep those addresses that long, deprecated, and their open connections must
still leave by its ISP (and find them: planner's _kept_prefixes_on_lan).  Then
it goes, and nothing stale stays.  A prefix given in the config wins over a
learned one that overlaps it.  Pure: the caller logs the changes and puts the
notes in the plan's.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace

from .. import constants as c
from ..model import Config, Delegation, DelegationSource, Observed, ObservedLink
from .planner import match_entry

Deadlines = tuple[float, float]  # (preferred_until, valid_until), time.monotonic()


def lan_prefixes(link: ObservedLink) -> dict[ipaddress.IPv6Network, Deadlines]:
    """The prefixes a LAN interface is numbered from by a delegation: its dynamic global IPv6
    addresses' (a static address is the admin's, who would name its prefix in the config),
    each with the latest deadlines of its addresses."""
    found: dict[ipaddress.IPv6Network, Deadlines] = {}
    for a in link.addresses:
        if a.family != 6 or a.scope != "global" or a.tentative or not c.delegable(a.prefixlen):
            continue  # a /128 is a host's lease, not a LAN
        if a.preferred_until is None or a.valid_until is None:  # not dynamic
            continue
        prefix = a.network
        assert isinstance(prefix, ipaddress.IPv6Network)
        before = found.get(prefix, (a.preferred_until, a.valid_until))
        found[prefix] = (max(before[0], a.preferred_until), max(before[1], a.valid_until))
    return found


def ipv6_default_device(observed: Observed, managed: Mapping[str, int]) -> str | None:
    """NetworkManager's IPv6 default device -- the device of main's best live IPv6 default --
    if it is a managed link (None if it is another device: no link of the config's)."""
    live = [(d.metric, d.oif) for d in observed.main_defaults if d.family == 6 and d.live]
    if not live:
        return None
    best = min(live)[1]
    return next((name for name, index in managed.items() if index == best), None)


@dataclass(frozen=True)
class Learned:
    delegations: tuple[Delegation, ...]
    changes: tuple[str, ...]  # one line each, for the log
    notes: tuple[str, ...]  # what keeps a prefix from being learned, while it lasts (the plan's notes)


class DelegationBook:
    """What was learned, round to round: the present prefixes and those kept for their hosts."""

    def __init__(self) -> None:
        self.known: dict[ipaddress.IPv6Network, Delegation] = {}

    def learn(
        self,
        observed: Observed,
        config: Config,
        managed: Mapping[str, int],
        networkd: Mapping[str, str],
        now: float,
    ) -> Learned:
        """This round's delegations.  managed: the managed links' name -> ifindex; networkd:
        LAN interface -> the uplink its .network file names."""
        notes: list[str] = []
        candidates: list[Delegation] = []
        told = {lan: entry.interface for entry in config.links for lan in entry.delegated_to}
        shared = {d.name for d in observed.manager if d.shared6}
        for link in observed.links:
            if link.name in managed:
                continue
            prefixes = lan_prefixes(link)
            if not prefixes:
                continue
            uplink = _uplink(
                link.name, told, networkd, shared, lambda: ipv6_default_device(observed, managed)
            )
            if uplink is not None and uplink[0] not in managed:
                notes.append(
                    f"{link.name} is numbered from {uplink[0]}'s delegation (says {uplink[1].value}), and "
                    f"{uplink[0]} is no link of the config's now: its prefixes get no rule"
                )
                uplink = None
            for prefix, (preferred, valid) in prefixes.items():
                before = self.known.get(prefix)
                if (
                    before is not None
                    and _sticks(before, link.name, managed)
                    and (uplink is None or uplink[1] is before.source)
                ):
                    # A prefix cannot become another ISP's: its manager says nothing now
                    # (NetworkManager's default device went to a VPN) or answers otherwise because
                    # it moved on, and the prefix still on the LAN is the ISP's that delegated it.
                    candidates.append(replace(before, preferred_until=preferred, valid_until=valid))
                elif uplink is not None:
                    candidates.append(Delegation(uplink[0], prefix, uplink[1], link.name, preferred, valid))
        present = self._resolved(candidates, config, notes)
        changes, book = self._changes(present, config, now)
        self.known = book
        return Learned(
            tuple(sorted(book.values(), key=lambda d: (d.link, d.prefix))), tuple(changes), tuple(notes)
        )

    def _resolved(
        self, candidates: list[Delegation], config: Config, notes: list[str]
    ) -> dict[ipaddress.IPv6Network, Delegation]:
        """The candidates that stand: none the config's prefixes overlap, and of two learned ones
        that overlap with different uplinks the one there first (whatever the links' order)."""
        configured = [(p, e) for e in config.links for p in e.delegated]
        candidates = sorted(candidates, key=lambda d: not self._held(d))
        present: dict[ipaddress.IPv6Network, Delegation] = {}
        for d in candidates:
            said = f"delegated prefix {d.prefix} on {d.lan} ({d.link}'s, says {d.source.value}) overlaps"
            given = next(((p, entry) for p, entry in configured if p.overlaps(d.prefix)), None)
            if given is not None:
                if match_entry(config, d.link) is not given[1]:  # the same ISP's: nothing to say
                    notes.append(f"{said} the config's {given[0]} ({given[1].interface}'s): the config wins")
                continue
            clash = next((held for held in present.values() if held.prefix.overlaps(d.prefix)), None)
            if clash is not None and clash.link != d.link:
                notes.append(
                    f"{said} {clash.prefix} on {clash.lan} ({clash.link}'s): the one there first stays"
                )
                continue
            present[d.prefix] = d
        return present

    def _changes(
        self,
        present: dict[ipaddress.IPv6Network, Delegation],
        config: Config,
        now: float,
    ) -> tuple[list[str], dict[ipaddress.IPv6Network, Delegation]]:
        """The new book, and a line for each change from the old one."""
        configured = [p for e in config.links for p in e.delegated]
        changes: list[str] = []
        book: dict[ipaddress.IPv6Network, Delegation] = {}
        for prefix, d in present.items():
            before = self.known.get(prefix)
            if before is None or not before.present:
                changes.append(f"delegated prefix {prefix} learned: {_told(d)}; {lifetimes(d, now)}")
            elif before.link != d.link:
                changes.append(f"delegated prefix {prefix} moved from {before.link} to {_told(d)}")
            book[prefix] = d
        for prefix, d in self.known.items():
            if prefix in book:
                continue
            if any(prefix.overlaps(p) for p in present):
                changes.append(f"delegated prefix {prefix} ({d.link}'s) dropped: a prefix over it is learned")
            elif any(prefix.overlaps(p) for p in configured):
                changes.append(f"delegated prefix {prefix} ({d.link}'s) dropped: the config names it")
            elif d.valid_until <= now:
                changes.append(f"delegated prefix {prefix} ({d.link}'s) expired: its rule is removed")
            else:
                if d.present:
                    left = d.valid_until - now
                    changes.append(
                        f"delegated prefix {prefix} left {d.lan}: kept on {d.link} for {left:.0f} s, "
                        "while its hosts' addresses from it are valid"
                    )
                book[prefix] = replace(d, present=False)
        return changes, book

    def _held(self, d: Delegation) -> bool:
        """Was this prefix on this LAN interface last round?"""
        before = self.known.get(d.prefix)
        return before is not None and before.present and before.lan == d.lan

    def next_expiry(self) -> float | None:
        """When the first prefix kept for its hosts runs out (a round then removes its rule)."""
        ends = [d.valid_until for d in self.known.values() if not d.present]
        return min(ends) if ends else None


def _uplink(
    lan: str,
    told: Mapping[str, str],
    networkd: Mapping[str, str],
    shared: Iterable[str],
    default_device: Callable[[], str | None],
) -> tuple[str, DelegationSource] | None:
    """Who says which uplink numbers `lan`, first answer winning: the admin, networkd,
    NetworkManager (its IPv6 default device, asked only for a shared profile)."""
    if lan in told:
        return told[lan], DelegationSource.DELEGATED_TO
    if lan in networkd:
        return networkd[lan], DelegationSource.NETWORKD
    if lan in shared:
        wan = default_device()
        if wan is not None:
            return wan, DelegationSource.NETWORKMANAGER
    return None


def _sticks(before: Delegation, lan: str, managed: Mapping[str, int]) -> bool:
    """Does a prefix still on its LAN interface keep the uplink it was learned with, whatever
    its manager answers now?  Yes, unless the admin named it (delegated_to: is the word to
    follow) or that uplink left the config."""
    return (
        before.present
        and before.lan == lan
        and before.source is not DelegationSource.DELEGATED_TO
        and before.link in managed
    )


def _told(d: Delegation) -> str:
    return f"{d.lan} is numbered from {d.link}'s delegation (says {d.source.value})"


def lifetimes(d: Delegation, now: float) -> str:
    """ "preferred 15 s, valid 25 s", as the log says it."""
    return f"preferred {max(0.0, d.preferred_until - now):.0f} s, valid {max(0.0, d.valid_until - now):.0f} s"
