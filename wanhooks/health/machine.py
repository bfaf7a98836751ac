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
import math
from dataclasses import dataclass, field, replace
from typing import TypeVar

from .. import constants as c
from ..model import HealthConfig, IPAddress
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
    HEARTBEAT_MISSED = "heartbeat-missed"  # a budgeted link's targets missed a round
    ANSWERED = "answered"  # an echo sent since the suspicion came back
    STATE_CHANGED = "state-changed"  # the link failed: suspicion has done its work


# (suspected, clue) -> suspected, every pair.  Only a link that is up is ever suspected
# (the others are probed at their own pace, and judged by the table above).
SUSPICION: dict[tuple[bool, Clue], bool] = {
    (False, Clue.UNANSWERED): True,
    (False, Clue.HEARTBEAT_MISSED): True,
    (False, Clue.ANSWERED): False,
    (False, Clue.STATE_CHANGED): False,
    (True, Clue.UNANSWERED): True,  # already suspected: it keeps its moment
    (True, Clue.HEARTBEAT_MISSED): True,
    (True, Clue.ANSWERED): False,
    (True, Clue.STATE_CHANGED): False,
}

# Which states carry traffic.
CARRIES_TRAFFIC = {
    HealthState.UP: True,
    HealthState.PROBING: False,
    HealthState.DOWN: False,
    HealthState.RECOVERING: False,
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


@dataclass(frozen=True)
class Params:
    targets: tuple[IPAddress, ...]
    interval: float = c.PROBE_INTERVAL_S
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
    confirm_after: float = 0.5
    passive: bool = True  # the daemon's passive watch may suspect the link (health/passive.py)
    budget_mb_per_day: float = 0.0  # set by within_budget: what the link may spend

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


def sent(health: Health, now: float) -> Health:
    return replace(health, sent=health.sent + 1, buckets=_count(health, now, 1, 0))


def replied(health: Health, target: IPAddress, rtt: float, now: float) -> Health:
    """An echo reply from target arrived now, rtt seconds after its request."""
    smoothed = rtt if health.rtt is None else 0.875 * health.rtt + 0.125 * rtt  # as TCP's SRTT
    alive_since = health.alive_since if health.alive_since is not None else now
    suspected = health.suspected_since
    if suspected is not None and now - rtt >= suspected:  # an echo sent since the suspicion
        suspected = _suspicion(health, Clue.ANSWERED, now).suspected_since
    return evaluate(
        replace(
            health,
            last_reply={**health.last_reply, target: now},
            alive_since=alive_since,
            rtt=smoothed,
            received=health.received + 1,
            buckets=_count(health, now - rtt, 0, 1),
            suspected_since=suspected,
        ),
        now,
    )


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
    return [t for t in health.params.targets if max(health.last_reply.get(t, since), since) <= horizon]


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
    silent = _silent_targets(health, now, health.watching_since, p.down_after)
    if len(silent) >= p.k > 0:
        shown = ", ".join(str(t) for t in silent)
        return Signal.SILENT, f"no reply from {shown} for {p.down_after:g} s"
    if health.suspected_since is not None:
        confirm = p.confirm_after + (health.rtt or 0.0)
        silent = _silent_targets(health, now, health.suspected_since, confirm)
        if len(silent) >= p.k > 0:
            shown = ", ".join(str(t) for t in silent)
            return Signal.SILENT, f"suspected, then no reply from {shown} for {confirm:.2g} s of fast probing"
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
    if heartbeat_missed(health, now):
        health = _suspicion(health, Clue.HEARTBEAT_MISSED, now)
    sig, why = signal(health, now)
    if sig in (Signal.SILENT, Signal.DEGRADED):
        health = replace(health, alive_since=None)  # an unbroken run of good answers is over
    new = TRANSITIONS[(health.state, sig)]
    if new is health.state:
        return health
    health = _suspicion(health, Clue.STATE_CHANGED, now)
    return replace(health, state=new, since=now, last=Transition(now, health.state, new, why))


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
    )


def within_budget(params: Params, family: int, budget_mb_per_day: float) -> Params:
    """Params stretched to spend at most budget_mb_per_day on probes (metered, standby links).

    Four fifths of the budget pay for the steady rounds, the rest for bursts
    (BURST_SHARE).  At the default 5 MB a day and two IPv4 targets: an echo to
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
    steady = budget_mb_per_day * 1e6 * (1 - BURST_SHARE)
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


# The share of a budget kept for bursts of fast probing when the passive watch
# suspects a link (health/passive.py spends it; at 5 MB a day, 1 MB is ~1,400 bursts).
BURST_SHARE = 0.2


def bursts_per_day(params: Params, family: int) -> float:
    """How many bursts of fast probing (confirm_after at the fast interval) the share of
    the budget kept for them pays for."""
    rounds = math.ceil(params.confirm_after / params.burst_interval) + 1
    cost = rounds * len(params.targets) * PROBE_BYTES[(params.kind, family)]
    return params.budget_mb_per_day * 1e6 * BURST_SHARE / cost


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
    lines.append("suspicion (an up link probed fast, judged on confirm_after):")
    for was in (False, True):
        into = [clue.value for clue in Clue if SUSPICION[(was, clue)] != was]
        lines.append(
            f"  {'suspected' if was else 'not suspected'} -> {'not ' if was else ''}suspected on: "
            + ", ".join(into)
        )
    return "\n".join(lines)
