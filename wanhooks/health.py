"""Per-link health, as a state machine whose transitions are a table.

Theory of operation
-------------------
The prober sends an echo to every target of a link every `interval` and
reports what comes back; this module only judges, and knows no sockets and
no clock: time is an argument.  A target is *silent* once no reply from it
has arrived for `down_after` seconds of probing; the link is SILENT when
`k` of its `n` targets are (default: all of them).  The judgement does not
depend on round trip times -- probes are pipelined, so a 600 ms cellular
link still answers every 100 ms -- and loss only matters when it swallows
every echo for `down_after`.

The arithmetic, at the defaults (interval 0.1 s, down_after 0.7 s, two
targets): a link is wrongly declared dead only if 7 consecutive echoes to
*both* targets are lost.  With 10 % loss in each direction an echo is lost
with p = 1 - 0.9**2 = 0.19, so that takes p**14 = 8e-11 per 0.1 s step:
864,000 steps a day give 7e-5 false failovers per day (one in 40 years).
At 20 % loss each way (p = 0.36) it is 6e-7 per step, 0.5 a day -- past
that, the link is too lossy to carry traffic anyway.  A silent failure is
declared 0.7-0.8 s after the last reply (+ the tick), under a second.

All that decides a transition is in TRANSITIONS below, and nowhere else.
`wanhooks health-table` prints it.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace

from .model import IPAddress


class State(str, enum.Enum):
    PROBING = "probing"  # a new link: no verdict yet (kept out of the group)
    UP = "up"
    DOWN = "down"
    RECOVERING = "recovering"  # answering again, not yet long enough to be trusted


class Signal(str, enum.Enum):
    SILENT = "silent"  # k of n targets have not answered for down_after
    ALIVE = "alive"  # answering, for less than up_after
    SETTLED = "settled"  # answering for up_after
    RESTORED = "restored"  # answering for max(up_after, hold_down): a failed link may return


# (state, signal) -> next state.  Pairs not listed leave the state as it is.
TRANSITIONS: dict[tuple[State, Signal], State] = {
    (State.PROBING, Signal.SILENT): State.DOWN,
    (State.PROBING, Signal.SETTLED): State.UP,
    (State.PROBING, Signal.RESTORED): State.UP,
    (State.UP, Signal.SILENT): State.DOWN,
    (State.DOWN, Signal.ALIVE): State.RECOVERING,
    (State.DOWN, Signal.SETTLED): State.RECOVERING,
    (State.DOWN, Signal.RESTORED): State.RECOVERING,
    (State.RECOVERING, Signal.SILENT): State.DOWN,
    (State.RECOVERING, Signal.RESTORED): State.UP,
}

# Which states carry traffic.
CARRIES_TRAFFIC = {State.UP: True, State.PROBING: False, State.DOWN: False, State.RECOVERING: False}


@dataclass(frozen=True)
class Params:
    targets: tuple[IPAddress, ...]
    interval: float = 0.1
    down_after: float = 0.7
    up_after: float = 1.0
    hold_down: float = 5.0
    silent_targets: int = 0  # k; 0: all targets

    @property
    def k(self) -> int:
        n = len(self.targets)
        return min(self.silent_targets, n) if self.silent_targets > 0 else n


@dataclass(frozen=True)
class ProbeKey:
    """What one prober is -- a link, a family, the source it probes from, how: when any
    of it changes, the prober is replaced."""

    link: str
    family: int
    source: IPAddress
    params: Params


@dataclass(frozen=True)
class Transition:
    at: float
    old: State
    new: State
    reason: str


@dataclass(frozen=True)
class Health:
    params: Params
    state: State
    since: float  # when the current state began
    watching_since: float  # probing (re)started: silence is counted from here at the earliest
    last_reply: dict[IPAddress, float] = field(default_factory=dict)
    alive_since: float | None = None  # start of the current unbroken run of answers
    rtt: float | None = None  # smoothed round trip time, seconds
    sent: int = 0
    received: int = 0
    last: Transition | None = None

    def carries_traffic(self) -> bool:
        return CARRIES_TRAFFIC[self.state]


def start(params: Params, now: float, *, trusted: bool = False) -> Health:
    """A new machine.  trusted: the link is already in the kernel's group (a daemon
    restart must not take it out while the first probes are on their way)."""
    state = State.UP if trusted else State.PROBING
    return Health(params=params, state=state, since=now, watching_since=now)


def sent(health: Health, now: float) -> Health:
    return replace(health, sent=health.sent + 1)


def replied(health: Health, target: IPAddress, rtt: float, now: float) -> Health:
    """An echo reply from target arrived now, rtt seconds after its request."""
    smoothed = rtt if health.rtt is None else 0.875 * health.rtt + 0.125 * rtt  # as TCP's SRTT
    alive_since = health.alive_since if health.alive_since is not None else now
    return evaluate(
        replace(
            health,
            last_reply={**health.last_reply, target: now},
            alive_since=alive_since,
            rtt=smoothed,
            received=health.received + 1,
        ),
        now,
    )


def _silent_targets(health: Health, now: float) -> list[IPAddress]:
    horizon = now - health.params.down_after
    return [
        t
        for t in health.params.targets
        if max(health.last_reply.get(t, health.watching_since), health.watching_since) <= horizon
    ]


def signal(health: Health, now: float) -> tuple[Signal, str]:
    """What the probes say now, and why (for the log)."""
    p = health.params
    silent = _silent_targets(health, now)
    if len(silent) >= p.k > 0:
        shown = ", ".join(str(t) for t in silent)
        return Signal.SILENT, f"no reply from {shown} for {p.down_after:g} s"
    if health.alive_since is None:
        return Signal.ALIVE, "waiting for replies"
    answering = now - health.alive_since
    if answering >= max(p.up_after, p.hold_down):
        return Signal.RESTORED, f"answering for {answering:.1f} s"
    if answering >= p.up_after:
        return Signal.SETTLED, f"answering for {answering:.1f} s"
    return Signal.ALIVE, f"answering for {answering:.1f} s"


def evaluate(health: Health, now: float) -> Health:
    """Apply the table to what the probes say at `now`."""
    sig, why = signal(health, now)
    if sig is Signal.SILENT:
        health = replace(health, alive_since=None)  # an unbroken run of answers is over
    new = TRANSITIONS.get((health.state, sig))
    if new is None or new is health.state:
        return health
    return replace(health, state=new, since=now, last=Transition(now, health.state, new, why))


# Bytes on the wire for one echo and its reply: IP header + ICMP header + 8-byte payload.
ECHO_BYTES = {4: 2 * (20 + 8 + 8), 6: 2 * (40 + 8 + 8)}
# On a budgeted link the interval is long, so down_after is chosen by the same
# arithmetic as the defaults: enough silent rounds that 10 % loss each way (19 %
# of echoes) fails a healthy link less than once in ~100 days -- but never more
# than 10 s of silence, the idle detection promised for metered links.
DESIGN_ECHO_LOSS = 0.19
FALSE_FAILOVERS_PER_DAY = 0.01
BUDGET_MAX_DOWN_AFTER = 9.9


def within_budget(params: Params, family: int, budget_mb_per_day: float) -> Params:
    """Params stretched to spend at most budget_mb_per_day on probes (metered, standby links).

    At the default 5 MB a day and two IPv4 targets: an echo to each every
    2.5 s, a silent failure found within 10 s when idle (4 silent rounds;
    about one false failover in 50 days at 10 % loss each way).
    """
    per_round = len(params.targets) * ECHO_BYTES[family]
    interval = max(params.interval, per_round * 86400 / (budget_mb_per_day * 1e6))
    if interval == params.interval:
        return params
    rounds_per_day = 86400 / interval
    lost_round = DESIGN_ECHO_LOSS ** max(1, params.k)
    rounds = math.ceil(math.log(FALSE_FAILOVERS_PER_DAY / rounds_per_day) / math.log(lost_round))
    down_after = max(params.down_after, min(rounds * interval, BUDGET_MAX_DOWN_AFTER))
    return replace(params, interval=interval, down_after=max(down_after, interval * 1.5))


def loss(health: Health) -> float | None:
    """Share of echoes unanswered so far (approximate: replies in flight count as lost)."""
    return None if health.sent == 0 else max(0.0, 1 - health.received / health.sent)


def table_text() -> str:
    """The transition table, for `wanhooks health-table`."""
    rows = [("from", "on", "to")]
    rows += [(s.value, sig.value, new.value) for (s, sig), new in TRANSITIONS.items()]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, width)).rstrip() for row in rows]
    lines.append("")
    lines.append("silent:   k of n targets unanswered for down_after")
    lines.append("settled:  answering for up_after;  restored: answering for max(up_after, hold_down)")
    lines.append("carries traffic: " + ", ".join(s.value for s, yes in CARRIES_TRAFFIC.items() if yes))
    return "\n".join(lines)
