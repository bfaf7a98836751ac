"""Per-link health, as a state machine whose transitions are a table.

Theory of operation
-------------------
This module decides what to probe when (the *pace*) and judges what comes
back; the prober (health/probes.py) only sends and listens, and the passive
watch (health/passive.py) reports the link's own traffic.  It knows no
sockets and no clock: time is an argument.

Probes fill in where evidence is missing (the default, `Params.adaptive`):
  heartbeat  an up link: while traffic is heard from beyond it (replies on
             established connections, counted by wanhooks' nftables table),
             nothing is sent -- only the internet can send those; otherwise
             one echo every `heartbeat` to the next of its targets in turn.
             (A `weight: auto` link probes every target every `measure`
             while its traffic is heard: its capacity shows in the queueing.)
             An echo unanswered for max(0.25 s, 2 round trips), with nothing
             heard since it left, makes the link suspected (below), and so does
             traffic sent that nothing answers (the passive watch).
  fast       a new or recovering link, or a suspected one: every target every
             `interval` (0.1 s), judged as below.
  resting    a failed link: every target every heartbeat, at once when traffic
             is heard on it; an answer makes it recovering (fast).
A target that left PROBE_SET_ASIDE_AFTER heartbeats unanswered in a row
while another answered is *set aside* (a reflector rate-limiting ICMP, not
the link): no heartbeats, not counted among the silent, for
PROBE_SET_ASIDE_S; its answers still count as life.

A link that is not adaptive (heartbeat 0, passive false, or max_loss set:
loss needs a steady stream) is probed *steadily*: every target every
`interval`.  The rest of this text is the steady judgement, which the fast
pace uses too.  A target is *silent* once no reply from it
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

Optional thresholds (max_rtt, max_loss) take an answering link out too: the
smoothed round trip time above max_rtt, or more than max_loss of the echoes
of the last loss_window seconds unanswered (an echo counts once it is answered
or older than max(1 s, 3 round trips), and only with 10 or more counted).

A *suspected* link -- the passive watch (health/passive.py) saw it send traffic
that nothing answered, or a budgeted link missed a heartbeat round -- is
probed at its fast interval, and fails when k of n targets stay silent for
confirm_after (+ one round trip) from the moment of suspicion.  0.5 s at 10
echoes a second to two targets is 10 lost echoes: p = 0.19**10 = 6e-8 per
suspicion at 10 % loss each way.  That is how a metered link that probes
every few seconds still notices within a second once traffic is affected.

All that decides a transition is in TRANSITIONS below, and whether a link
is suspected in SUSPICION, and nowhere else.
`wanhooks health-table` prints it.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field, replace
from typing import TypeVar

from .. import constants as c
from ..model import HealthConfig, IPAddress, cached_hash
from ..plan.verdicts import HealthState

_T = TypeVar("_T")


class Signal(str, enum.Enum):
    SILENT = "silent"  # k of n targets have not answered for down_after
    DEGRADED = "degraded"  # answering, but round trips or loss beyond the thresholds
    WAITING = "waiting"  # no answer since probing began or the link last failed
    ALIVE = "alive"  # answering, for less than up_after
    SETTLED = "settled"  # answering for up_after
    RESTORED = "restored"  # answering for max(up_after, hold_down): a failed link may return


# (state, signal) -> next state: every pair, staying ones included, so that a state or a
# signal added without its row fails at once (evaluate() looks pairs up with [], and the
# tests check the table is whole) instead of silently meaning "stay".
_S, _G = HealthState, Signal
TRANSITIONS: dict[tuple[HealthState, Signal], HealthState] = {
    (_S.PROBING, _G.SILENT): _S.DOWN,
    (_S.PROBING, _G.DEGRADED): _S.DOWN,
    (_S.PROBING, _G.WAITING): _S.PROBING,
    (_S.PROBING, _G.ALIVE): _S.PROBING,  # answering, not yet for up_after
    (_S.PROBING, _G.SETTLED): _S.UP,
    (_S.PROBING, _G.RESTORED): _S.UP,
    (_S.UP, _G.SILENT): _S.DOWN,
    (_S.UP, _G.DEGRADED): _S.DOWN,
    (_S.UP, _G.WAITING): _S.UP,  # trusted at a restart, first answers on their way
    (_S.UP, _G.ALIVE): _S.UP,
    (_S.UP, _G.SETTLED): _S.UP,
    (_S.UP, _G.RESTORED): _S.UP,
    (_S.DOWN, _G.SILENT): _S.DOWN,
    (_S.DOWN, _G.DEGRADED): _S.DOWN,
    (_S.DOWN, _G.WAITING): _S.DOWN,
    (_S.DOWN, _G.ALIVE): _S.RECOVERING,
    (_S.DOWN, _G.SETTLED): _S.RECOVERING,
    (_S.DOWN, _G.RESTORED): _S.RECOVERING,
    (_S.RECOVERING, _G.SILENT): _S.DOWN,
    (_S.RECOVERING, _G.DEGRADED): _S.DOWN,
    (_S.RECOVERING, _G.WAITING): _S.RECOVERING,
    (_S.RECOVERING, _G.ALIVE): _S.RECOVERING,
    (_S.RECOVERING, _G.SETTLED): _S.RECOVERING,  # answering, but not yet for hold_down
    (_S.RECOVERING, _G.RESTORED): _S.UP,
}


class Clue(str, enum.Enum):
    """What moves an up link into suspicion (probed fast, judged on confirm_after) or out."""

    UNANSWERED = "unanswered"  # the passive watch: the link's traffic went unanswered
    HEARTBEAT_MISSED = "heartbeat-missed"  # a heartbeat (or a budgeted link's round) went unanswered
    ANSWERED = "answered"  # an echo sent since the suspicion came back
    HEARD = "heard"  # traffic heard from beyond the link (proves the way in, not the way out)
    STATE_CHANGED = "state-changed"  # the link failed: suspicion has done its work


# (suspected, clue) -> suspected, every pair.  Only a link that is up is ever suspected
# (the others are probed at their own pace, and judged by the table above).
SUSPICION: dict[tuple[bool, Clue], bool] = {
    (False, Clue.UNANSWERED): True,
    (False, Clue.HEARTBEAT_MISSED): True,
    (False, Clue.ANSWERED): False,
    (False, Clue.HEARD): False,
    (False, Clue.STATE_CHANGED): False,
    (True, Clue.UNANSWERED): True,  # already suspected: it keeps its moment
    (True, Clue.HEARTBEAT_MISSED): True,
    (True, Clue.ANSWERED): False,
    # Traffic heard does not clear a suspicion: a dead way out still lets the far end's
    # retransmissions in (a TCP sender repeats unacknowledged data for seconds), and they
    # would clear every suspicion the passive watch raised until its bucket ran dry.  Only
    # an echo sent since the suspicion proves the way out.
    (True, Clue.HEARD): True,
    (True, Clue.STATE_CHANGED): False,
}

# Which states carry traffic.
CARRIES_TRAFFIC = {
    HealthState.UP: True,
    HealthState.PROBING: False,
    HealthState.DOWN: False,
    HealthState.RECOVERING: False,
}


class Pace(str, enum.Enum):
    """How a link is probed now (the module's text has the rules)."""

    STEADY = "steady"  # every target every interval: not adaptive
    FAST = "fast"  # every target every interval: new, recovering or suspected
    HEARTBEAT = "heartbeat"  # up: one target in turn every heartbeat, none while traffic is heard
    RESTING = "resting"  # failed: every target every heartbeat, at once when traffic is heard


PACE_TEXT = {
    Pace.HEARTBEAT: "up: an echo every heartbeat to each target in turn, none while traffic is heard",
    Pace.FAST: "new, recovering or suspected: every target every interval",
    Pace.RESTING: "down: every target every heartbeat, at once when traffic is heard",
    Pace.STEADY: "heartbeat 0, passive false or max_loss set: every target every interval",
}


class Kind(str, enum.Enum):
    """What a probe is (health/probes.py sends them; the judgement is the same for all)."""

    ICMP = "icmp"  # echo request / reply
    TCP = "tcp"  # a connection attempt: SYN answered by SYN-ACK or RST
    DNS = "dns"  # a query over UDP answered by any response


DEFAULT_PORTS = {Kind.ICMP: 0, Kind.TCP: 443, Kind.DNS: 53}
# Bytes on the wire for one probe and its answer, by kind and family (headers +
# payload): an 8-byte echo; SYN, SYN-ACK and the RST that ends it (60-byte
# TCP+options, 40 ack/rst); a 17-byte query for "." NS and an answer of ~250.
PROBE_BYTES = {
    (Kind.ICMP, 4): 2 * (20 + 8 + 8),
    (Kind.ICMP, 6): 2 * (40 + 8 + 8),
    (Kind.TCP, 4): 2 * (20 + 40) + (20 + 20),
    (Kind.TCP, 6): 2 * (40 + 40) + (40 + 20),
    (Kind.DNS, 4): (20 + 8 + 17) + (20 + 8 + 250),
    (Kind.DNS, 6): (40 + 8 + 17) + (40 + 8 + 250),
}
ECHO_BYTES = {4: PROBE_BYTES[(Kind.ICMP, 4)], 6: PROBE_BYTES[(Kind.ICMP, 6)]}


@cached_hash  # a key of every prober, compared each round
@dataclass(frozen=True)
class Params:
    targets: tuple[IPAddress, ...]
    interval: float = c.PROBE_INTERVAL_S
    heartbeat: float = c.PROBE_HEARTBEAT_S  # 0: steady probing
    measure: float = 0.0  # weight: auto: every target this often while traffic is heard (0: never)
    down_after: float = c.PROBE_DOWN_AFTER_S
    up_after: float = c.PROBE_UP_AFTER_S
    hold_down: float = c.PROBE_HOLD_DOWN_S
    silent_targets: int = 0  # k; 0: all targets
    kind: Kind = Kind.ICMP
    port: int = 0  # tcp / dns: the port probed (0: the kind's default)
    query: str = c.PROBE_DNS_QUERY  # dns: the name asked for (type NS)
    max_rtt: float | None = None  # seconds of smoothed round trip beyond which the link fails
    max_loss: float | None = None  # share of echoes lost over loss_window beyond which it fails
    loss_window: float = c.PROBE_LOSS_WINDOW_S
    # While suspected: the interval probed at (the configured one, before a budget
    # stretched it; None: interval) and how long silence must last.
    fast_interval: float | None = None
    confirm_after: float = c.PROBE_CONFIRM_S
    passive: bool = True  # traffic heard stands in for probes, unanswered traffic suspects the link
    budget_mb_per_day: float = 0.0  # set by within_budget: what the link may spend

    @property
    def adaptive(self) -> bool:
        """Probes only where traffic proves nothing (the module's text); else steady."""
        return self.heartbeat > 0 and self.passive and self.max_loss is None

    @property
    def burst_interval(self) -> float:
        return self.fast_interval if self.fast_interval is not None else self.interval

    @property
    def budgeted(self) -> bool:
        """Probing slower than configured (a budget): the passive watch speeds it up."""
        return self.burst_interval < self.interval

    @property
    def probe_port(self) -> int:
        return self.port or DEFAULT_PORTS[self.kind]

    @property
    def k(self) -> int:
        n = len(self.targets)
        return min(self.silent_targets, n) if self.silent_targets > 0 else n


@cached_hash
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
    old: HealthState
    new: HealthState
    reason: str


@dataclass(frozen=True)
class Health:
    params: Params
    state: HealthState
    since: float  # when the current state began
    watching_since: float  # probing (re)started: silence is counted from here at the earliest
    last_reply: dict[IPAddress, float] = field(default_factory=dict)
    alive_since: float | None = None  # start of the current unbroken run of answers
    rtt: float | None = None  # smoothed round trip time, seconds
    sent: int = 0
    received: int = 0
    last: Transition | None = None
    # (second, sent, answered) for the loss window: echoes counted by the second they left
    buckets: tuple[tuple[int, int, int], ...] = ()
    suspected_since: float | None = None  # the passive watch saw traffic go unanswered
    last_heard: float | None = None  # traffic last heard from beyond the link (the passive watch)
    last_round: float | None = None  # when probes last left
    turn: int = 0  # heartbeats sent: whose turn it is
    awaiting: dict[IPAddress, float] = field(default_factory=dict)  # heartbeats unanswered: sent at
    misses: dict[IPAddress, int] = field(default_factory=dict)  # heartbeats unanswered in a row
    set_aside: dict[IPAddress, float] = field(default_factory=dict)  # until when

    def carries_traffic(self) -> bool:
        return CARRIES_TRAFFIC[self.state]


def start(params: Params, now: float, *, trusted: bool = False) -> Health:
    """A new machine.  trusted: the link is already in the kernel's group (a daemon
    restart must not take it out while the first probes are on their way)."""
    state = HealthState.UP if trusted else HealthState.PROBING
    return Health(params=params, state=state, since=now, watching_since=now)


def _grace(health: Health) -> float:
    """How long an unanswered echo counts as in flight rather than lost."""
    return max(1.0, 3 * (health.rtt or 0.0))


def _count(health: Health, at: float, sent: int, answered: int) -> tuple[tuple[int, int, int], ...]:
    second = math.floor(at)
    oldest = second - math.ceil(health.params.loss_window + _grace(health)) - 1
    kept = [b for b in health.buckets if b[0] >= oldest]
    for i, (s, n, a) in enumerate(kept):
        if s == second:
            kept[i] = (s, n + sent, a + answered)
            return tuple(kept)
    if sent:  # an answer to an echo older than the window is not counted
        kept.append((second, sent, answered))
        kept.sort()
    return tuple(kept)


def pace(health: Health) -> Pace:
    if not health.params.adaptive:
        return Pace.STEADY
    if health.state is HealthState.UP:
        return Pace.HEARTBEAT if health.suspected_since is None else Pace.FAST
    return Pace.RESTING if health.state is HealthState.DOWN else Pace.FAST


def next_round(health: Health) -> float:
    """When the next round of probes is due (-inf: now)."""
    last, p = health.last_round, health.params
    if last is None:
        return -math.inf
    now_pace = pace(health)
    if health.suspected_since is not None and health.suspected_since > last:
        return health.suspected_since  # suspected since the last round: a fast one at once
    heard = health.last_heard if health.last_heard is not None and health.last_heard > last else None
    if now_pace is Pace.HEARTBEAT:
        if heard is None:
            return last + p.heartbeat
        if p.measure:  # weight: auto reads queueing from round trips under load
            return last + p.measure
        # traffic heard postpones the heartbeat -- up to the busy heartbeat
        return min(heard, last + max(0.0, c.PROBE_BUSY_HEARTBEAT_S - p.heartbeat)) + p.heartbeat
    if now_pace is Pace.RESTING:
        return last + (p.heartbeat if heard is None else p.interval)  # traffic on it: look now
    return last + (p.burst_interval if health.suspected_since is not None else p.interval)


def heard_lately(health: Health, now: float) -> bool:
    """Whether traffic heard from beyond the link proved it alive within a heartbeat (what
    status calls `alive_by: passive`)."""
    last = health.last_heard
    return last is not None and now - last <= max(health.params.heartbeat, 1.0)


def round_gap(health: Health, now: float) -> float:
    """The time between rounds at the pace kept now (status's `interval_s`): next_round's
    spacing, without the postponement that traffic heard gives a heartbeat."""
    p = health.params
    checking = health.suspected_since is not None
    match pace(health):
        case Pace.HEARTBEAT:
            return p.measure if p.measure and heard_lately(health, now) else p.heartbeat
        case Pace.RESTING:
            return p.heartbeat
        case Pace.FAST:
            return p.burst_interval
        case _:
            return p.burst_interval if checking else p.interval


def _measuring(health: Health) -> bool:
    """A weight: auto link whose traffic is heard: every target every `measure`, as steady
    probing would (its capacity estimator reads queueing from those round trips)."""
    last, heard = health.last_round, health.last_heard
    return bool(health.params.measure) and heard is not None and (last is None or heard > last)


def _judged(health: Health, now: float) -> tuple[IPAddress, ...]:
    """The targets whose silence counts: all but those set aside (all, if every one is)."""
    kept = tuple(t for t in health.params.targets if health.set_aside.get(t, -math.inf) <= now)
    return kept or health.params.targets


def send_round(health: Health, now: float) -> tuple[Health, tuple[IPAddress, ...]]:
    """A round of probes leaves now: to whom, and the machine after it (each counts as sent
    whether or not the socket took it: an echo that could not leave is a lost one)."""
    heartbeat = pace(health) is Pace.HEARTBEAT and not _measuring(health)
    if heartbeat:
        judged = _judged(health, now)
        targets: tuple[IPAddress, ...] = (judged[health.turn % len(judged)],)
        awaiting = {**health.awaiting, **{t: health.awaiting.get(t, now) for t in targets}}
    else:
        targets, awaiting = health.params.targets, health.awaiting
    return (
        replace(
            health,
            sent=health.sent + len(targets),
            buckets=_count(health, now, len(targets), 0),
            last_round=now,
            turn=health.turn + heartbeat,
            awaiting=awaiting,
        ),
        targets,
    )


def replied(health: Health, target: IPAddress, rtt: float, now: float) -> Health:
    """An echo reply from target arrived now, rtt seconds after its request."""
    smoothed = rtt if health.rtt is None else 0.875 * health.rtt + 0.125 * rtt  # as TCP's SRTT
    alive_since = health.alive_since if health.alive_since is not None else now
    suspected = health.suspected_since
    if suspected is not None and now - rtt >= suspected:  # an echo sent since the suspicion
        suspected = _suspicion(health, Clue.ANSWERED, now).suspected_since
    # another target answers: one whose heartbeats mostly go unanswered is set aside.  Each
    # missed heartbeat counts one up, each answered one one down (a fast round's answers do
    # not count: a reflector that answers one echo in five answers some of those): a healthy
    # target at 19 % echo loss climbs to 3 about once in 80 excursions, one that answers a
    # third of its heartbeats climbs there steadily
    misses = dict(health.misses)
    if target in health.awaiting and target in misses:
        misses[target] -= 1
        if misses[target] <= 0:
            del misses[target]
    set_aside = dict(health.set_aside)
    for other in [t for t, n in misses.items() if n >= c.PROBE_SET_ASIDE_AFTER and t != target]:
        set_aside[other] = now + c.PROBE_SET_ASIDE_S
        del misses[other]
    return evaluate(
        replace(
            health,
            last_reply={**health.last_reply, target: now},
            alive_since=alive_since,
            rtt=smoothed,
            received=health.received + 1,
            buckets=_count(health, now - rtt, 0, 1),
            suspected_since=suspected,
            awaiting={t: at for t, at in health.awaiting.items() if t != target},
            misses=misses,
            set_aside=set_aside,
        ),
        now,
    )


def heard(health: Health, now: float) -> Health:
    """Traffic from beyond the link arrived (the passive watch): it is alive now."""
    health = replace(health, last_heard=now)
    return _suspicion(health, Clue.HEARD, now)


def answer_wait(health: Health) -> float:
    """How long an answer may take before it is overdue."""
    return max(c.PROBE_WAIT_MIN_S, 2 * (health.rtt or 0.0))


def _judge_heartbeats(health: Health, now: float) -> Health:
    """Heartbeats overdue: each a miss for its target; one with nothing heard since it left
    makes an up link suspected."""
    wait = answer_wait(health)
    overdue = {t: at for t, at in health.awaiting.items() if now - at >= wait}
    if not overdue:
        return health
    misses = dict(health.misses)
    for target in overdue:
        misses[target] = misses.get(target, 0) + 1
    health = replace(
        health,
        awaiting={t: at for t, at in health.awaiting.items() if t not in overdue},
        misses=misses,
    )
    unheard = health.last_heard is None or health.last_heard < min(overdue.values())
    if unheard and health.state is HealthState.UP:
        health = _suspicion(health, Clue.HEARTBEAT_MISSED, now)
    return health


def next_look(health: Health, now: float) -> float:
    """When the prober should next evaluate: the next round, an answer falling due, or (fast
    and steady paces) every half fast interval."""
    due = next_round(health)
    if health.awaiting:
        due = min(due, min(health.awaiting.values()) + answer_wait(health))
    if pace(health) in (Pace.FAST, Pace.STEADY):
        due = min(due, now + health.params.burst_interval / 2)
    return due


def suspect(health: Health, now: float) -> Health:
    """The passive watch saw the link's traffic go unanswered: confirm quickly."""
    return _suspicion(health, Clue.UNANSWERED, now)


def _suspicion(health: Health, clue: Clue, now: float) -> Health:
    """The SUSPICION table applied: a link newly suspected is so from now on."""
    was = health.suspected_since is not None
    now_suspected = SUSPICION[(was, clue)] and health.state is HealthState.UP
    if now_suspected == was:
        return health
    return replace(health, suspected_since=now if now_suspected else None)


def window_loss(health: Health, now: float) -> tuple[float, int] | None:
    """Share of echoes lost over the last loss_window seconds, and how many counted.

    Echoes still in their grace period are left out (neither lost nor answered).
    """
    newest = now - _grace(health)
    oldest = newest - health.params.loss_window
    sent_n = answered = 0
    for second, n, a in health.buckets:
        if oldest <= second and second + 1 <= newest:
            sent_n, answered = sent_n + n, answered + a
    if sent_n == 0:
        return None
    return max(0.0, 1 - answered / sent_n), sent_n


# Fewer counted echoes than this say nothing about loss.
LOSS_MIN_ECHOES = 10


def _silent_targets(health: Health, now: float, since: float, window: float) -> list[IPAddress]:
    horizon = now - window
    return [t for t in _judged(health, now) if max(health.last_reply.get(t, since), since) <= horizon]


def _degraded(health: Health, now: float) -> str | None:
    p = health.params
    if p.max_rtt is not None and health.rtt is not None and health.rtt > p.max_rtt:
        return f"round trip {health.rtt * 1000:.0f} ms, above max_rtt {p.max_rtt * 1000:g} ms"
    if p.max_loss is not None:
        measured = window_loss(health, now)
        if measured is not None and measured[1] >= LOSS_MIN_ECHOES and measured[0] > p.max_loss:
            return (
                f"{measured[0] * 100:.0f} % of {measured[1]} echoes lost over {p.loss_window:g} s, "
                f"above max_loss {p.max_loss * 100:g} %"
            )
    return None


def signal(health: Health, now: float) -> tuple[Signal, str]:
    """What the probes say now, and why (for the log)."""
    p = health.params
    k = min(p.k, len(_judged(health, now)))
    # an adaptive up link's targets are not probed all the time: only a suspicion judges it
    if not (p.adaptive and health.state is HealthState.UP):
        silent = _silent_targets(health, now, health.watching_since, p.down_after)
        if len(silent) >= k > 0:
            shown = ", ".join(str(t) for t in silent)
            return Signal.SILENT, f"no reply from {shown} for {p.down_after:g} s"
    if health.suspected_since is not None:
        confirm = p.confirm_after + (health.rtt or 0.0)
        silent = _silent_targets(health, now, health.suspected_since, confirm)
        if len(silent) >= k > 0:
            shown = ", ".join(str(t) for t in silent)
            return Signal.SILENT, f"no reply from {shown} for {confirm:.2g} s of fast probing"
    degraded = _degraded(health, now)
    if degraded is not None:
        return Signal.DEGRADED, degraded
    if health.alive_since is None:
        return Signal.WAITING, "waiting for replies"
    answering = now - health.alive_since
    if answering >= max(p.up_after, p.hold_down):
        return Signal.RESTORED, f"answering for {answering:.1f} s"
    if answering >= p.up_after:
        return Signal.SETTLED, f"answering for {answering:.1f} s"
    return Signal.ALIVE, f"answering for {answering:.1f} s"


def heartbeat_missed(health: Health, now: float) -> bool:
    """A budgeted link's k targets missed a round: worth a burst of fast probes."""
    p = health.params
    if not p.budgeted or health.state is not HealthState.UP or health.suspected_since is not None:
        return False
    window = p.interval + max(0.25, 2 * (health.rtt or 0.0))
    return len(_silent_targets(health, now, health.watching_since, window)) >= p.k > 0


def evaluate(health: Health, now: float) -> Health:
    """Apply the table to what the probes say at `now`."""
    if any(until <= now for until in health.set_aside.values()):  # back in turn
        health = replace(health, set_aside={t: u for t, u in health.set_aside.items() if u > now})
    health = _judge_heartbeats(health, now)
    if heartbeat_missed(health, now):
        health = _suspicion(health, Clue.HEARTBEAT_MISSED, now)
    sig, why = signal(health, now)
    if sig in (Signal.SILENT, Signal.DEGRADED):
        health = replace(health, alive_since=None)  # an unbroken run of good answers is over
    new = TRANSITIONS[(health.state, sig)]
    if new is health.state:
        return health
    health = _suspicion(health, Clue.STATE_CHANGED, now)
    return replace(
        health, state=new, since=now, last=Transition(now, health.state, new, why), awaiting={}, misses={}
    )


# On a budgeted link the interval is long, so down_after is chosen by the same
# arithmetic as the defaults: enough silent rounds that 10 % loss each way (19 %
# of echoes) fails a healthy link less than once in ~100 days -- but never more
# than 10 s of silence, the idle detection promised for metered links.
DESIGN_ECHO_LOSS = 0.19
FALSE_FAILOVERS_PER_DAY = 0.01
BUDGET_MAX_DOWN_AFTER = 9.9


def params_for(settings: HealthConfig, targets: tuple[IPAddress, ...]) -> Params:
    """A prober's parameters from resolved settings (HealthConfig.resolved: every field
    set, the defaults in one place, model.HEALTH_DEFAULTS)."""

    def given(value: _T | None) -> _T:
        if value is None:
            raise ValueError("health settings used before they were resolved")
        return value

    return Params(
        targets=targets,
        interval=float(given(settings.interval)),
        down_after=float(given(settings.down_after)),
        up_after=float(given(settings.up_after)),
        hold_down=float(given(settings.hold_down)),
        silent_targets=given(settings.silent_targets),
        kind=Kind(given(settings.kind)),
        port=given(settings.port),
        query=given(settings.query),
        max_rtt=given(settings.max_rtt) or None,  # 0: no threshold
        max_loss=given(settings.max_loss) / 100 or None,  # percent in the config
        loss_window=float(given(settings.loss_window)),
        passive=given(settings.passive),
        heartbeat=float(given(settings.heartbeat)),
    )


def within_budget(params: Params, family: int, budget_mb_per_day: float) -> Params:
    """Params stretched to spend at most budget_mb_per_day on probes (metered, standby links).

    Adaptive: four fifths of the budget pay for the heartbeats (one echo each:
    at 5 MB a day, IPv4, every 2 s fits; IPv6 every 2.4 s), the rest for
    bursts; nothing else changes.

    Steady: four fifths of the budget pay for the steady rounds, the rest for bursts
    (c.PROBE_BURST_SHARE).  At the default 5 MB a day and two IPv4 targets: an echo to
    each every 3.1 s.  Each round is a heartbeat: when k targets miss one
    (interval + 2 round trips, 0.25 s at least) the link is suspected and a
    burst at the fast interval confirms within confirm_after -- a silent
    failure is found in 1.4-3.9 s when idle, and a false failover needs 10
    echoes lost in a row (6e-8 per missed heartbeat; at 10 % loss each way
    about 1,000 heartbeats a day are missed: 6e-5 false failovers a day, and
    0.9 MB of bursts).  down_after, stretched by the arithmetic below and
    capped at 9.9 s, stays as the backstop.
    """
    per_round = len(params.targets) * PROBE_BYTES[(params.kind, family)]
    steady = budget_mb_per_day * 1e6 * (1 - c.PROBE_BURST_SHARE)
    if params.adaptive:
        fits = PROBE_BYTES[(params.kind, family)] * 86400 / steady  # the shortest affordable gap
        beat = max(params.heartbeat, fits)
        measure = max(params.measure, fits) if params.measure else 0.0
        return replace(params, heartbeat=beat, measure=measure, budget_mb_per_day=budget_mb_per_day)
    interval = max(params.interval, per_round * 86400 / steady)
    if interval == params.interval:
        return params
    rounds_per_day = 86400 / interval
    lost_round = DESIGN_ECHO_LOSS ** max(1, params.k)
    rounds = math.ceil(math.log(FALSE_FAILOVERS_PER_DAY / rounds_per_day) / math.log(lost_round))
    down_after = max(params.down_after, min(rounds * interval, BUDGET_MAX_DOWN_AFTER))
    return replace(
        params,
        interval=interval,
        down_after=max(down_after, interval * 1.5),
        fast_interval=params.burst_interval,
        budget_mb_per_day=budget_mb_per_day,
    )


@functools.lru_cache(maxsize=256)
def bursts_per_day(params: Params, family: int) -> float:
    """How many bursts of fast probing the share of the budget kept for them pays for (a
    tier-1 adaptive link: PROBE_BURST_MB_PER_DAY).  A steady link's burst lasts
    confirm_after at the fast interval; an adaptive link's ends at the first answer, so
    two rounds are counted (one that confirms a failure costs more, and ends the bursts)."""
    if params.adaptive:
        rounds = 2
        allowance = params.budget_mb_per_day * c.PROBE_BURST_SHARE or c.PROBE_BURST_MB_PER_DAY
    else:
        rounds = math.ceil(params.confirm_after / params.burst_interval) + 1
        allowance = params.budget_mb_per_day * c.PROBE_BURST_SHARE
    return allowance * 1e6 / (rounds * len(params.targets) * PROBE_BYTES[(params.kind, family)])


def loss(health: Health) -> float | None:
    """Share of echoes unanswered so far (approximate: replies in flight count as lost)."""
    return None if health.sent == 0 else max(0.0, 1 - health.received / health.sent)


def table_text() -> str:
    """The transition table, for `wanhooks health-table`."""
    rows = [("from", "on", "to")]
    rows += [(s.value, sig.value, new.value) for (s, sig), new in TRANSITIONS.items() if new is not s]
    width = [max(len(r[i]) for r in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, width)).rstrip() for row in rows]
    lines.append("")
    for state in HealthState:
        stays = [sig.value for (s, sig), new in TRANSITIONS.items() if s is state and new is state]
        lines.append(f"{state.value} stays on: {', '.join(stays)}")
    lines.append("")
    lines.append("silent:   k of n targets unanswered for down_after")
    lines.append("          (suspected: for confirm_after + one round trip since the suspicion)")
    lines.append("degraded: smoothed round trip above max_rtt, or loss over loss_window above max_loss")
    lines.append("waiting:  no answer yet (changes nothing)")
    lines.append("settled:  answering for up_after;  restored: answering for max(up_after, hold_down)")
    lines.append("carries traffic: " + ", ".join(s.value for s, yes in CARRIES_TRAFFIC.items() if yes))
    lines.append("")
    lines.append("pace (probes only where traffic heard from beyond proves nothing):")
    lines += [f"  {pace.value:<9}  {text}" for pace, text in PACE_TEXT.items()]
    lines.append("")
    lines.append("suspicion (an up link probed fast, judged on confirm_after):")
    for was in (False, True):
        into = [clue.value for clue in Clue if SUSPICION[(was, clue)] != was]
        lines.append(
            f"  {'suspected' if was else 'not suspected'} -> {'not ' if was else ''}suspected on: "
            + ", ".join(into)
        )
    return "\n".join(lines)
