"""The ISPs' delegated prefixes, as the daemon (and `apply`, `plan`, `status`) learn them.

The policy -- who says which uplink, what is kept, when it goes -- is
plan/delegations.py's.  This module brings it what only I/O can tell:
networkd's answers (sources/networkd_pd.py reads its files, asked only for the
LAN interfaces that hold dynamic global addresses) and the book of the last
rounds; it logs the changes, and keeps the book in the run dir through the
daemon (service/kept_prefixes.py) after each round that changed it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import replace

from ..model import Config, Delegation, Observed
from ..plan.delegations import DelegationBook, Learned, lan_prefixes
from ..plan.planner import managed_links
from .networkd_pd import NetworkdUplinks

log = logging.getLogger("wanhooks")


class LearnedPrefixes:
    """The delegations learned round after round, with the prefixes kept for their hosts.
    quiet: log nothing (one-shot commands: `status --watch` would repeat it every frame);
    persist: how `save` keeps them (the daemon's: the run dir)."""

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
        self.persist = persist
        self._persisted: tuple[object, ...] = ()

    @property
    def known(self) -> tuple[Delegation, ...]:
        """The book now; replaced whole each round, never changed in place (the daemon's
        loop reads it for status while its worker learns)."""
        return tuple(sorted(self.book.known.values(), key=lambda d: (d.link, d.prefix)))

    def restore(self, kept: tuple[Delegation, ...], now: float | None = None) -> None:
        """What a previous daemon learned (service/kept_prefixes.py), as it left them: the first
        round sees which are still on the LAN; the others are kept to their valid lifetime."""
        now = time.monotonic() if now is None else now
        self.book.known = {d.prefix: d for d in kept}
        self._persisted = _digest(kept)
        for d in sorted(kept, key=lambda d: d.prefix):
            left = d.valid_until - now
            log.info(
                "delegated prefix %s (%s's) from the last run: valid %.0f s more", d.prefix, d.link, left
            )

    def observe(self, config: Config, observed: Observed, now: float | None = None) -> Observed:
        """observed with its delegations and what kept any from being learned (its notes)."""
        now = time.monotonic() if now is None else now
        managed = {link.name: link.index for link, _entry in managed_links(config, observed)}
        names = {link.index: link.name for link in observed.links}
        told = {lan for entry in config.links for lan in entry.delegated_to}
        try:
            self.networkd.begin(names)
            networkd = {}
            for link in observed.links:
                if link.name in managed or link.name in told or not lan_prefixes(link):
                    continue  # the admin's word comes first; only a LAN interface with a delegation asks
                wan = self.networkd.uplink(link.index, link.name, names, managed)
                if wan is not None:
                    networkd[link.name] = wan
            learned = self.book.learn(observed, config, managed, networkd, now)
        except Exception:  # a bug here must not stop the rounds: last round's prefixes stand
            log.exception("learning the delegated prefixes failed (a bug in wanhooks): last round's stand")
            learned = Learned(self.known, (), ())
        if not self.quiet:
            for line in learned.changes:
                log.info("%s", line)
        notes = learned.notes + tuple(self.networkd.notes.values())
        if not (learned.delegations or notes or observed.delegations or observed.delegation_notes):
            return observed
        return replace(observed, delegations=learned.delegations, delegation_notes=notes)

    def save(self) -> None:
        """Keep the book (persist) if it changed since last kept: after a round, off its path
        (the write is fsynced)."""
        found = self.known
        digest = _digest(found)
        if self.persist is None or digest == self._persisted:
            return
        try:
            self.persist(found)
            self._persisted = digest
        except OSError as err:  # the kernel's routing does not depend on it: said, and on
            log.warning("could not keep the delegated prefixes in the run dir: %s", err)

    def next_expiry(self) -> float | None:
        return self.book.next_expiry()


def _digest(delegations: tuple[Delegation, ...]) -> tuple[object, ...]:
    """What a restart needs of them; a renewal that moves a deadline by less than a second
    (the kernel's lifetimes are whole seconds) is no change worth writing."""
    return tuple((d.link, d.prefix, d.source, d.lan, d.present, round(d.valid_until)) for d in delegations)


def learn_once(config: Config) -> Callable[[Observed], Observed]:
    """For one-shot commands: what the managers delegated now (no memory of what went)."""
    learned = LearnedPrefixes(quiet=True)
    return lambda observed: learned.observe(config, observed)
