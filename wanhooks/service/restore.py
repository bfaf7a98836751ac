"""Restore, don't fight: what to do when another program deletes wanhooks' objects (pure).

systemd-networkd with ManageForeignRoutingPolicyRules=yes sweeps foreign rules at
every reconfigure; an admin may run `ip rule flush`.  The first FIGHT_LIMIT sweeps
in FIGHT_WINDOW_S are restored at once (a sweep of many objects counts once: its
deletions arrive before the restoring round).  After that, restoring waits, the
wait doubling from FIGHT_BACKOFF_MIN_S to FIGHT_BACKOFF_MAX_S, until FIGHT_QUIET_S
pass with no deletion.  Never while main has no default route: a host is not left
without a route to make a point.  The daemon acts on the decision (a timer, a log
line, naming the process behind the netlink port).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from ..constants import FIGHT_BACKOFF_MAX_S, FIGHT_BACKOFF_MIN_S, FIGHT_LIMIT, FIGHT_QUIET_S, FIGHT_WINDOW_S


class Restore(enum.Enum):
    NOW = enum.auto()  # the next round restores it, as for any event
    SCHEDULED = enum.auto()  # a delayed restore is on its way already: nothing more
    LATER = enum.auto()  # restore after Decision.delay_s: the daemon sets the timer


@dataclass(frozen=True)
class Decision:
    restore: Restore
    delay_s: float = 0.0
    name_deleter: bool = False  # say in the log which process did it (once per port per fight)


@dataclass
class RestorePolicy:
    recent: list[float] = field(default_factory=list)  # immediate restores within FIGHT_WINDOW_S
    fighting: bool = False  # restores are being delayed
    backoff_s: float = FIGHT_BACKOFF_MIN_S
    last_deletion: float = -FIGHT_QUIET_S
    named: set[int] = field(default_factory=set)  # netlink ports already named in this fight

    def deleted(
        self, now: float, portid: int, *, scheduled: bool, round_pending: bool, main_has_default: bool
    ) -> Decision:
        """Another program (netlink port `portid`) deleted wanhooks' objects at `now`.
        scheduled: a delayed restore is set; round_pending: a round is already coming (the
        same sweep's earlier deletions asked for it)."""
        if now - self.last_deletion > FIGHT_QUIET_S:  # a new fight
            self.recent, self.fighting, self.backoff_s, self.named = [], False, FIGHT_BACKOFF_MIN_S, set()
        self.last_deletion = now
        if scheduled:
            return Decision(Restore.SCHEDULED)
        if round_pending:
            return Decision(Restore.NOW)  # the same sweep: its restore is on its way
        name = portid not in self.named
        self.named.add(portid)
        if not self.fighting:
            self.recent = [t for t in self.recent if now - t < FIGHT_WINDOW_S] + [now]
            if len(self.recent) <= FIGHT_LIMIT:
                return Decision(Restore.NOW, name_deleter=name)
            self.fighting = True
        if not main_has_default:
            return Decision(Restore.NOW, name_deleter=name)
        delay, self.backoff_s = self.backoff_s, min(self.backoff_s * 2, FIGHT_BACKOFF_MAX_S)
        return Decision(Restore.LATER, delay_s=delay, name_deleter=name)
