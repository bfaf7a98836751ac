"""Prefixes the ISPs delegated, learned from the LAN addresses their managers number from them.

An ISP's DHCPv6 prefix delegation ends up as addresses on LAN interfaces: the
router numbers each LAN /64 from it (systemd-networkd's DHCPPrefixDelegation=,
NetworkManager's shared profiles, dhcpcd, odhcp6c), and the LAN's hosts number
themselves from the router's adverts.  Each ISP drops sources from another's
prefix (BCP38), so traffic from a prefix must leave by the ISP that delegated
it -- and ISPs change the prefix: at reconnects, at renewals, on a schedule.

The kernel's addresses are the common ground: every client puts them there,
dynamic (with lifetimes), and the kernel tells of each change.  What the kernel
does not say is *which* uplink a LAN address came from; the LAN interface's
manager does (networkd's UplinkInterface=, NetworkManager's IPv6 default device)
or the config (`delegated_to:`).  `UplinkOf` asks them; `DelegationBook` turns
the answers and the addresses into Delegations, round by round.

A prefix whose LAN address goes away (the ISP gave a new one, the lease ended)
is kept until its valid lifetime ends: the hosts that numbered themselves from
it keep those addresses that long, deprecated, and their open connections must
still leave by its ISP.  Then it goes, and nothing stale stays.  A prefix given
in the config wins over a learned one that overlaps it.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace

from ..config.schema import DELEGATED_MIN_LENGTH
from ..model import Config, Delegation, ObservedLink

# A LAN interface -> (the uplink that delegated its prefixes, who said so), or None: nobody says
UplinkOf = Callable[[ObservedLink], "tuple[str, str] | None"]


def lan_prefixes(link: ObservedLink) -> dict[ipaddress.IPv6Network, tuple[float | None, float | None]]:
    """The prefixes a LAN interface is numbered from by a delegation: its dynamic global IPv6
    addresses' (a static address is the admin's, who would name its prefix in the config),
    each with the latest (preferred, valid) deadline of its addresses."""
    found: dict[ipaddress.IPv6Network, tuple[float | None, float | None]] = {}
    for a in link.addresses:
        if a.family != 6 or a.scope != "global" or a.tentative or not a.dynamic:
            continue
        if not DELEGATED_MIN_LENGTH <= a.prefixlen <= 64:  # a /128 is a host's lease, not a LAN
            continue
        prefix = a.network
        assert isinstance(prefix, ipaddress.IPv6Network)
        before = found.get(prefix)
        if before is None:
            found[prefix] = (a.preferred_until, a.valid_until)
        else:
            found[prefix] = (_later(before[0], a.preferred_until), _later(before[1], a.valid_until))
    return found


def _later(a: float | None, b: float | None) -> float | None:
    if a is None or b is None:
        return None
    return max(a, b)


class DelegationBook:
    """What was learned, round to round: the present prefixes and those kept for their hosts.

    Pure: `learn` returns what to log, each line with its level, rather than logging
    (a one-shot command shows none of it; the daemon logs it).  A warning is given once
    while its cause lasts: the set of them is rebuilt each round, so nothing grows.
    """

    def __init__(self) -> None:
        self.known: dict[ipaddress.IPv6Network, Delegation] = {}
        self._said: set[str] = set()  # the warnings given and still true

    def learn(
        self,
        links: Iterable[ObservedLink],
        config: Config,
        managed: set[str],
        uplink_of: UplinkOf,
        now: float,
    ) -> tuple[tuple[Delegation, ...], list[tuple[int, str]]]:
        """This round's delegations, and the lines to log: each change, each new problem."""
        configured = [(p, e.interface) for e in config.links for p in e.delegated]
        lines: list[tuple[int, str]] = []
        said: set[str] = set()

        def once(level: int, key: str, text: str) -> None:
            said.add(key)
            if key not in self._said:
                lines.append((level, text))

        candidates: list[Delegation] = []
        for link in links:
            if link.name in managed:
                continue
            prefixes = lan_prefixes(link)
            if not prefixes:
                continue
            uplink = told = uplink_of(link)
            if told is not None and told[0] not in managed:
                wan, source = told
                once(logging.WARNING, f"unmanaged {link.name} {wan}",
                     f"{link.name} is numbered from {wan}'s delegation (says {source}), and {wan} is no "
                     "link of wanhooks' now: its prefixes get no rule")  # fmt: skip
                uplink = None
            for prefix, (preferred, valid) in prefixes.items():
                if uplink is not None:
                    candidates.append(
                        Delegation(uplink[0], prefix, uplink[1], link.name, preferred, valid, True)
                    )
                    continue
                before = self.known.get(prefix)
                if before is not None and self._sticks(before, link.name, managed):
                    # its manager says nothing now (NetworkManager's default device went to a VPN),
                    # and the prefix is still on the LAN: still the ISP's that delegated it
                    candidates.append(replace(before, preferred_until=preferred, valid_until=valid))
                elif told is None:
                    text = f"{link.name} holds {prefix}, dynamic: no manager or delegated_to: says whose"
                    once(logging.DEBUG, f"unclaimed {link.name} {prefix}", text)
        # a prefix already present goes first: one learned later that overlaps it with another
        # uplink is the one refused, whatever the order of the links
        candidates.sort(key=lambda d: not self._held(d))
        present: dict[ipaddress.IPv6Network, Delegation] = {}
        for d in candidates:
            prefix, wan, lan, source = d.prefix, d.link, d.lan, d.source
            given = next(((p, o) for p, o in configured if p.overlaps(prefix)), None)
            if given is not None:
                if not fnmatch.fnmatchcase(wan, given[1]):  # the same ISP's: nothing to say
                    once(logging.WARNING, f"overruled {prefix}",
                         f"delegated prefix {prefix} on {lan} ({wan}'s, says {source}) overlaps "
                         f"the config's {given[0]} ({given[1]}'s): the config wins")  # fmt: skip
                continue
            clash = next((q for q, held in present.items() if q.overlaps(prefix) and held.link != wan), None)
            if clash is not None:
                other = present[clash]
                once(logging.WARNING, f"clash {prefix}",
                     f"delegated prefix {prefix} on {lan} ({wan}'s, says {source}) overlaps "
                     f"{clash} on {other.lan} ({other.link}'s): the one there first stays")  # fmt: skip
                continue
            present[prefix] = d
        book: dict[ipaddress.IPv6Network, Delegation] = {}

        def info(text: str) -> None:
            lines.append((logging.INFO, f"delegated prefix {text}"))

        for prefix, d in present.items():
            before = self.known.get(prefix)
            if before is None or not before.present:
                info(f"{prefix} learned: {_told(d)}; {lifetimes(d, now)}")
            elif before.link != d.link:
                if before.source == d.source and self._sticks(before, d.lan, managed):
                    # A prefix cannot become another ISP's: the same manager answers otherwise
                    # because it moved on (NetworkManager's IPv6 default device), and the prefix
                    # still on the LAN is the old ISP's.  The admin's word (delegated_to:), another
                    # source, or an uplink gone from the config moves it.
                    d = replace(d, link=before.link)
                else:
                    info(f"{prefix} moved from {before.link} to {_told(d)}")
            book[prefix] = d
        for prefix, d in self.known.items():
            if prefix in book:
                continue
            if any(prefix.overlaps(p) for p in present):
                info(f"{prefix} ({d.link}'s) dropped: a prefix over it is learned")
            elif any(prefix.overlaps(p) for p, _owner in configured):
                info(f"{prefix} ({d.link}'s) dropped: the config names it")
            elif d.valid_until is None or d.valid_until <= now:
                info(f"{prefix} ({d.link}'s) expired: its rule is removed")
            else:
                if d.present:
                    left = d.valid_until - now
                    kept = f"kept on {d.link} for {left:.0f} s, while its hosts' addresses from it are valid"
                    info(f"{prefix} left {d.lan}: {kept}")
                book[prefix] = replace(d, present=False)
        self.known = book
        self._said = said
        return tuple(sorted(book.values(), key=lambda d: (d.link, d.prefix))), lines

    def _held(self, d: Delegation) -> bool:
        """Was this prefix on this LAN interface last round?"""
        before = self.known.get(d.prefix)
        return before is not None and before.present and before.lan == d.lan

    @staticmethod
    def _sticks(before: Delegation, lan: str, managed: set[str]) -> bool:
        """Does a prefix still on its LAN interface keep the uplink it was learned with, whatever
        its manager answers now?  Yes, unless the admin named it (delegated_to: is the word to
        follow) or that uplink left the config."""
        return (
            before.present
            and before.lan == lan
            and before.source != "delegated_to"
            and before.link in managed
        )

    def next_expiry(self) -> float | None:
        """When the first prefix kept for its hosts runs out (a round then removes its rule)."""
        ends = [d.valid_until for d in self.known.values() if not d.present and d.valid_until is not None]
        return min(ends) if ends else None


def _told(d: Delegation) -> str:
    return f"{d.lan} is numbered from {d.link}'s delegation (says {d.source})"


def lifetimes(d: Delegation, now: float) -> str:
    """ "preferred 15 s, valid 25 s" (or forever), as status and the log say it."""
    return f"preferred {_left(d.preferred_until, now)}, valid {_left(d.valid_until, now)}"


def _left(until: float | None, now: float) -> str:
    if until is None:
        return "forever"
    return f"{max(0.0, until - now):.0f} s"
