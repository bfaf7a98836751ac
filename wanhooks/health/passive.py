"""The passive watch: a link whose traffic goes out and nothing comes back is suspect.

Sans-IO, like health/machine.py: the daemon samples a link's packet counts
(every 0.05-0.2 s: the periods below) and the prober's own, and this module says when the
link was heard from and when to suspect it -- which makes its prober probe at
the fast interval and judge within confirm_after (health/machine.py).

Two kinds of counts (health/passive_watch.py reads them):
  evidence  per link and family, wanhooks' nftables table counts packets sent
            beyond the link's near side (its own prefixes, its gateway, link-local)
            and packets heard from beyond it on established connections: only
            the internet can send those, not the modem (its ARP, its ICMP
            errors, its DNS proxy) -- so what is heard stands in for probes.
  raw       per link, the kernel's packet counters: where nftables cannot count
            (no nf_tables), and for steady budgeted links.  They cannot tell an
            ISP's answer from a modem's own packets, so they never stand in for
            probes: traffic one way only hastens a check.

The rule: packets the link sent that are not our probes, with no packet
received (not our probes' answers) since the first of them, for `wait`
seconds -- at least 2 packets, so one lost datagram or a counter that lags
by one (transmit completions on real NICs) is no reason.  `wait` is
max(0.25 s, 2 round trips): an ordinary request has had its answer by then.
A packet received answers what was sent before its sample, and up to
PASSIVE_ANSWERS_PER_PACKET (constants.py) of the packets sent in the same
sample.  The rest are *owed*: no wait of their own (a download's acks
outnumber the packets they acknowledge, whose data came in few large ones,
and call for no answer), but they join the count when more goes out
unanswered within `wait` of that sample.  For when the way out dies and the
way in does not, the far ends repeat what we never acknowledged (a TCP
sender retransmits on its backoff: 0.2, 0.4, 0.8 s...), in the very samples
where our own clients retransmit theirs: with those taken as answered, a
lone duplicate ack between two repeats would be one packet waiting, too
few, and one repeat a round would hide the link's death for seconds.
Bursts are paid from a token bucket holding PROBE_BURST_SHARE (constants.py) of the link's probe
budget (health.burst_bytes each), so a one-way stream (a UDP upload, a
send-only video call) costs at most that share a day.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from .. import constants as c

MIN_UNANSWERED = 2  # packets out, none in, before the watch suspects a link
WAIT_MIN = 0.25  # seconds
BUCKET_BURSTS = 10.0  # bursts the bucket can hold (a short outage burns a few)


@dataclass(frozen=True)
class Packets:
    """A link's counters at one moment, and the prober's own share of them."""

    tx: int
    rx: int
    own_tx: int
    own_rx: int
    # answers to the prober's probes that may be counted in rx but not yet read (own_rx):
    # not taken for traffic heard until they are either read or too old to come
    in_flight: int = 0

    @property
    def other_tx(self) -> int:
        return self.tx - self.own_tx

    @property
    def other_rx(self) -> int:
        return self.rx - self.own_rx

    @property
    def surely_other_rx(self) -> int:
        """other_rx less the answers that may be in flight: a floor."""
        return self.other_rx - self.in_flight


@dataclass(frozen=True)
class TrafficWatch:
    last: Packets
    unanswered: int = 0  # others' packets sent since the last packet received
    unanswered_since: float | None = None
    tokens: float = BUCKET_BURSTS
    refilled_at: float = 0.0
    suspicions: int = 0
    last_heard: float | None = None  # the last sample in which others' packets came in
    moved: bool = True  # the last sample saw others' packets either way
    # The most of others' packets received ever counted (surely_other_rx): only what
    # goes beyond it is heard.  The prober's own count runs a little ahead of or behind the
    # kernel's, as an answer is read before or after the counters are; a mark, not the
    # last sample, keeps such a wobble from passing for traffic.
    heard_mark: int = 0
    owed: int = 0  # sent with fewer answers than they could have had (above), in last_heard's sample


def start(sample: Packets, now: float) -> TrafficWatch:
    return TrafficWatch(last=sample, refilled_at=now, heard_mark=sample.surely_other_rx)


def observe(
    watch: TrafficWatch,
    sample: Packets,
    now: float,
    *,
    rtt: float | None,
    bursts_per_day: float,
    armed: bool = True,
) -> tuple[TrafficWatch, bool]:
    """The watch after a new sample, and whether to suspect the link now.

    armed: the link is up and not being checked already -- otherwise (failed,
    probing, a burst under way) suspicion would change nothing and spend a burst.
    """
    sent = sample.other_tx - watch.last.other_tx
    if sample.rx < watch.last.rx:  # the counters started again (the table was rewritten)
        watch = replace(watch, heard_mark=sample.surely_other_rx)
    received = max(0, sample.surely_other_rx - watch.heard_mark)
    watch = replace(watch, heard_mark=watch.heard_mark + received)
    tokens = min(BUCKET_BURSTS, watch.tokens + (now - watch.refilled_at) * bursts_per_day / 86400)
    previous = watch.refilled_at  # the last sample's time
    watch = replace(watch, last=sample, tokens=tokens, refilled_at=now, moved=sent > 0 or received > 0)
    if received > 0:
        watch = replace(watch, last_heard=now)
    if received > 0 or not armed:  # something came back: whatever was waiting has its answer
        owed = max(0, sent - c.PASSIVE_ANSWERS_PER_PACKET * received) if armed else 0
        return replace(watch, unanswered=0, unanswered_since=None, owed=owed), False
    wait = max(WAIT_MIN, 2 * (rtt or 0.0))
    if sent > 0:  # (negative: a counter lagging our own count)
        # sent since the last sample: on average halfway (samples come 0.05-0.2 s apart)
        first = watch.unanswered_since if watch.unanswered_since is not None else (previous + now) / 2
        heard = watch.last_heard
        owed = watch.owed if heard is not None and now - heard <= wait else 0
        watch = replace(watch, unanswered=watch.unanswered + sent + owed, unanswered_since=first, owed=0)
    since = watch.unanswered_since
    if since is None:
        return watch, False
    if watch.unanswered < MIN_UNANSWERED or now - since < wait or watch.tokens < 1:
        return watch, False
    fired = replace(
        watch, unanswered=0, unanswered_since=None, tokens=watch.tokens - 1, suspicions=watch.suspicions + 1
    )
    return fired, True
