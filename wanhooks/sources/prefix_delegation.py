"""The ISPs' delegated prefixes, as the daemon (and `apply`, `plan`, `status`) learn them.

Who says which uplink a LAN interface is numbered from, first answer wins:
the config's `delegated_to:`, then systemd-networkd's .network files
(sources/networkd_pd.py), then NetworkManager.  The kernel's addresses say
the rest (plan/delegations.py).

NetworkManager 1.42 exports no delegated prefix (DHCP6Config's ip6_prefix is
1.44's, and names no lifetimes).  What it does is fixed: a device whose
profile says ipv6.method=shared is numbered from the one prefix NetworkManager
asks for, on its IPv6 default device -- the device of the best (lowest
metric) IPv6 default route in main, which it put there itself.  So that
device, as the kernel shows it, is the uplink.  When the default moves,
NetworkManager asks the new device and renumbers: a prefix already learned
keeps the uplink it was learned with (plan/delegations.py), so the old
prefix's hosts keep leaving by the ISP that gave it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from ..model import Config, Delegation, Observed, ObservedLink
from ..plan.delegations import DelegationBook
from ..plan.planner import managed_links
from .networkd_pd import NetworkdUplinks

log = logging.getLogger("wanhooks")


class LearnedPrefixes:
    """The delegations learned round after round, with the prefixes kept for their hosts.
    quiet: log nothing (one-shot commands: `status --watch` would repeat it every frame)."""

    def __init__(
        self,
        networkd: NetworkdUplinks | None = None,
        *,
        quiet: bool = False,
        persist: Callable[[tuple[Delegation, ...]], None] | None = None,
    ) -> None:
        self.book = DelegationBook()
        self.networkd = networkd if networkd is not None else NetworkdUplinks()
        self.quiet = quiet
        self.persist = persist  # the daemon's: keep them in the run dir, for its next start
        self._noted: set[str] = set()  # networkd's notes already logged, while they last
        self._persisted: tuple[object, ...] = ()

    def restore(self, kept: tuple[Delegation, ...], now: float | None = None) -> None:
        """What a previous daemon learned (service/kept_prefixes.py), as it left them: the first
        round sees which are still on the LAN; the others are kept to their valid lifetime."""
        now = time.monotonic() if now is None else now
        self.book.known = {d.prefix: d for d in kept}
        self._persisted = _digest(kept)
        for d in sorted(kept, key=lambda d: d.prefix):
            left = (d.valid_until or now) - now
            log.info(
                "delegated prefix %s (%s's) from the last run: valid %.0f s more", d.prefix, d.link, left
            )

    def observe(self, config: Config, observed: Observed, now: float | None = None) -> Observed:
        """observed with its delegations; each change logged."""
        now = time.monotonic() if now is None else now
        pairs = managed_links(config, observed)
        managed = {link.name: link.index for link, _entry in pairs}
        names = {link.index: link.name for link in observed.links}
        told = {lan: entry.interface for entry in config.links for lan in entry.delegated_to}
        shared = {d.name for d in observed.manager if d.shared6}

        def uplink_of(link: ObservedLink) -> tuple[str, str] | None:
            wan = told.get(link.name)
            if wan is not None:
                return wan, "delegated_to"
            wan = self.networkd.uplink(link.index, link.name, names, managed)
            if wan is not None:
                return wan, "networkd"
            if link.name in shared:
                wan = ipv6_default_device(observed, managed)
                if wan is not None:
                    return wan, "NetworkManager"
            return None

        self.networkd.begin(names)
        try:
            delegations, lines = self.book.learn(observed.links, config, set(managed), uplink_of, now)
        except Exception:  # a bug here must not stop the rounds: last round's prefixes stand
            log.exception("learning the delegated prefixes failed (a bug in wanhooks): last round's stand")
            delegations, lines = tuple(sorted(self.book.known.values(), key=lambda d: (d.link, d.prefix))), []
        notes = set(self.networkd.notes.values())
        lines += [(logging.WARNING, note) for note in sorted(notes - self._noted)]
        self._noted = notes
        if not self.quiet:
            for level, line in lines:
                log.log(level, "%s", line)
        digest = _digest(delegations)
        if self.persist is not None and digest != self._persisted:
            try:
                self.persist(delegations)
                self._persisted = digest
            except OSError as err:  # the kernel's routing does not depend on it: said, and on
                log.warning("could not keep the delegated prefixes in the run dir: %s", err)
        if not delegations and not observed.delegations:
            return observed
        return replace(observed, delegations=delegations)

    def next_expiry(self) -> float | None:
        return self.book.next_expiry()


def _digest(delegations: tuple[Delegation, ...]) -> tuple[object, ...]:
    """What a restart needs of them; a renewal that moves a deadline by less than a second
    (the kernel's lifetimes are whole seconds) is no change worth writing."""
    return tuple(
        (d.link, d.prefix, d.source, d.lan, d.present, round(d.valid_until or 0)) for d in delegations
    )


def ipv6_default_device(observed: Observed, managed: dict[str, int]) -> str | None:
    """The device of main's best live IPv6 default route (NetworkManager's choice), if it is
    a managed link (None if it is another device: its prefix is not one of wanhooks' links')."""
    live = [
        (d.metric, d.oif)
        for d in observed.main_defaults
        if d.family == 6 and d.kind == "unicast" and not d.dead
    ]
    if not live:
        return None
    best = min(live)[1]
    return next((name for name, index in managed.items() if index == best), None)


def learn_once(config: Config) -> Callable[[Observed], Observed]:
    """For one-shot commands: what the managers delegated now (no memory of what went)."""
    learned = LearnedPrefixes(quiet=True)
    return lambda observed: learned.observe(config, observed)
