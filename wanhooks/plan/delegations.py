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

import ipaddress
import logging
from collections.abc import Callable, Iterable
from dataclasses import replace

from ..config.schema import DELEGATED_MIN_LENGTH
from ..model import Config, Delegation, ObservedLink

log = logging.getLogger("wanhooks")

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
    """What was learned, round to round: the present prefixes and those kept for their hosts."""

    def __init__(self) -> None:
        self.known: dict[ipaddress.IPv6Network, Delegation] = {}
        self._unclaimed: set[tuple[str, ipaddress.IPv6Network]] = set()  # told once each
        self._overruled: set[ipaddress.IPv6Network] = set()

    def learn(
        self,
        links: Iterable[ObservedLink],
        config: Config,
        managed: set[str],
        uplink_of: UplinkOf,
        now: float,
    ) -> tuple[tuple[Delegation, ...], list[str]]:
        """This round's delegations, and a line for each change (the log's)."""
        configured = [(p, e.interface) for e in config.links for p in e.delegated]
        present: dict[ipaddress.IPv6Network, Delegation] = {}
        for link in links:
            if link.name in managed:
                continue
            prefixes = lan_prefixes(link)
            if not prefixes:
                continue
            uplink = uplink_of(link)
            if uplink is None:
                self._tell_unclaimed(link.name, prefixes)
                continue
            wan, source = uplink
            for prefix, (preferred, valid) in prefixes.items():
                owner = next((f"{o}'s {p}" for p, o in configured if p.overlaps(prefix)), None)
                if owner is not None:
                    if prefix not in self._overruled:
                        self._overruled.add(prefix)
                        log.warning(
                            "delegated prefix %s on %s (from %s, says %s) overlaps the config's "
                            "delegated %s: the config wins", prefix, link.name, wan, source, owner,
                        )  # fmt: skip
                    continue
                present[prefix] = Delegation(wan, prefix, source, link.name, preferred, valid, True)
        changes: list[str] = []
        book: dict[ipaddress.IPv6Network, Delegation] = {}
        for prefix, d in present.items():
            before = self.known.get(prefix)
            if before is None or not before.present:
                changes.append(f"delegated prefix {prefix} learned: {_told(d)}; {lifetimes(d, now)}")
            elif before.link != d.link:
                if d.source != "delegated_to":
                    # A prefix cannot become another ISP's: a manager's answer changed because
                    # it moved on (NetworkManager's IPv6 default device).  Only the admin's word
                    # (a changed delegated_to:) moves a prefix that stayed on the LAN.
                    d = replace(d, link=before.link, source=before.source)
                else:
                    changes.append(f"delegated prefix {prefix} moved from {before.link} to {_told(d)}")
            book[prefix] = d
        for prefix, d in self.known.items():
            if prefix in book:
                continue
            if any(prefix.overlaps(p) for p in present):
                changes.append(f"delegated prefix {prefix} ({d.link}'s) dropped: a prefix over it is learned")
            elif d.valid_until is None or d.valid_until <= now:
                changes.append(f"delegated prefix {prefix} ({d.link}'s) expired: its rule is removed")
            else:
                if d.present:
                    changes.append(
                        f"delegated prefix {prefix} left {d.lan}: kept on {d.link} for "
                        f"{d.valid_until - now:.0f} s, while its hosts' addresses from it are valid"
                    )
                book[prefix] = replace(d, present=False)
        self.known = book
        self._unclaimed = {(lan, p) for lan, p in self._unclaimed if p not in book}
        return tuple(sorted(book.values(), key=lambda d: (d.link, d.prefix))), changes

    def next_expiry(self) -> float | None:
        """When the first prefix kept for its hosts runs out (a round then removes its rule)."""
        ends = [d.valid_until for d in self.known.values() if not d.present and d.valid_until is not None]
        return min(ends) if ends else None

    def _tell_unclaimed(
        self, lan: str, prefixes: dict[ipaddress.IPv6Network, tuple[float | None, float | None]]
    ) -> None:
        for prefix in prefixes:
            if (lan, prefix) not in self._unclaimed:
                self._unclaimed.add((lan, prefix))
                log.debug("%s holds %s, dynamic: no manager or delegated_to: says which ISP's", lan, prefix)


def _told(d: Delegation) -> str:
    return f"{d.lan} is numbered from {d.link}'s delegation (says {d.source})"


def lifetimes(d: Delegation, now: float) -> str:
    """ "preferred 15 s, valid 25 s" (or forever), as status and the log say it."""
    return f"preferred {_left(d.preferred_until, now)}, valid {_left(d.valid_until, now)}"


def _left(until: float | None, now: float) -> str:
    if until is None:
        return "forever"
    return f"{max(0.0, until - now):.0f} s"
