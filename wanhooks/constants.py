"""Every number wanhooks owns in the kernel, each with the reason for its value.

Nothing here derives from config order (the mwan3 mistake): per-link numbers
come from the kernel's interface index, which is unique in a network
namespace, stable for the life of the device and recoverable from the kernel
after a restart.  When a device is re-created it gets a new index, and the
old table/nexthops died with the old device anyway.

The sticky mark, which leaves the host with each connection (an HA pair's
conntrackd), is the exception: it comes from the link's `id:` or name
(name_link_id).
"""

from __future__ import annotations

import zlib
from typing import NamedTuple

# --- rtnetlink protocol id -------------------------------------------------
# Every route, rule and nexthop wanhooks adds carries this protocol id, and the
# reconciler only ever reads or removes objects that carry it.  87 is "W";
# /etc/iproute2/rt_protos and FRR leave 43..98 unassigned (babel is 42,
# openr 99).
RTPROT_WANHOOKS = 87

# --- routing tables ---------------------------------------------------------
# Table ids are u32.  NetworkManager, networkd, tailscale (52) and admins use
# small numbers; we take the block [2e9, 3e9) so a table id reads as
# "2_000_000_000 + ifindex" in `ip route show table all`.
TABLE_BASE = 2_000_000_000
TABLE_SPAN = 1_000_000_000
# The weighted multipath default lives here; ifindex 0 never names a device.
TABLE_BALANCE = TABLE_BASE
# Interface indexes at or above this cannot be given a table or nexthop id.
MAX_IFINDEX = TABLE_SPAN - 1


def link_table(ifindex: int) -> int:
    """The per-link table of the device with this index."""
    return TABLE_BASE + ifindex


# Tables of pinned tiers (router/pins.py): one per tier, just above the per-link block.
TABLE_TIER_BASE = TABLE_BASE + TABLE_SPAN


def tier_table(tier: int) -> int:
    """The table holding a multipath default over one tier's links, for pinned traffic."""
    return TABLE_TIER_BASE + tier


# Learned delegated prefixes, each on-link on its LAN interface behind main's routes: the hosts'
# deprecated addresses keep their connections when the manager took its route away with its
# address (NetworkManager does at a renumbering; plan/planner.py).  Just above the tiers.
TABLE_LAN_PREFIXES = TABLE_TIER_BASE + 100


def is_owned_table(table: int) -> bool:
    return (
        TABLE_BASE <= table < TABLE_BASE + TABLE_SPAN
        or TABLE_TIER_BASE < table <= TABLE_TIER_BASE + TIER_COUNT
        or table == TABLE_LAN_PREFIXES
    )


# --- nexthop object ids -----------------------------------------------------
# Nexthop ids are one u32 space shared by both families.  Groups sit at the
# bottom of our block; each family has a spare id used only for a moment when
# a group must be rebuilt (its type or bucket count cannot change in place):
# the route moves to the spare, the group is rebuilt, the route moves back.
NH_GROUP_V4 = 2_000_000_000
NH_GROUP_V6 = 2_000_000_001
NH_GROUP_V4_SPARE = 2_000_000_002
NH_GROUP_V6_SPARE = 2_000_000_003
# Per-link members: one block per family, ifindex added (see MAX_IFINDEX).
NH_LINK_V4_BASE = 2_100_000_000
NH_LINK_V6_BASE = 3_200_000_000
NH_ID_MIN = NH_GROUP_V4
NH_ID_MAX = NH_LINK_V6_BASE + MAX_IFINDEX  # 4_199_999_999 < 2**32


def group_id(family: int, spare: bool = False) -> int:
    if family == 4:
        return NH_GROUP_V4_SPARE if spare else NH_GROUP_V4
    return NH_GROUP_V6_SPARE if spare else NH_GROUP_V6


def link_nexthop_id(family: int, ifindex: int) -> int:
    return (NH_LINK_V4_BASE if family == 4 else NH_LINK_V6_BASE) + ifindex


def is_owned_nexthop_id(nhid: int) -> bool:
    return NH_ID_MIN <= nhid <= NH_ID_MAX


# --- health probing defaults (health/machine.py has the model) -------------------------
# Probes fill in where traffic proves nothing: an up link that carries traffic heard
# from beyond sends none; an idle one an echo to one target in turn every heartbeat;
# a link whose traffic or heartbeat goes unanswered is probed ten times a second and
# judged within CONFIRM: about a second busy, two idle, some 3 MB a day (README).
PROBE_INTERVAL_S = 0.1  # the fast pace: a new, recovering or suspected link; every target
PROBE_HEARTBEAT_S = 2.0  # an idle up link: one echo, to the next target in turn
# A link carrying traffic still sends a heartbeat this often: traffic heard proves the
# way in, and a way out that died alone (rare) is found by this at the latest.
PROBE_BUSY_HEARTBEAT_S = 30.0
# A `weight: auto` link reads its capacity from the queueing in its probes' round trips,
# so while its traffic is heard it probes every target this often, as steady probing does
# (the estimator is tuned on that stream): 1.4 kB/s while it carries traffic, heartbeats
# while idle.
PROBE_MEASURE_S = 0.1
PROBE_CONFIRM_S = 0.5  # a suspected link's targets silent this long (+ a round trip): it fails
PROBE_WAIT_MIN_S = 0.25  # an answer is overdue after max(this, 2 round trips)
# A target whose heartbeats went unanswered this many more times than answered, while
# another target answered, is set aside (a rate-limiting reflector, not the link) for
# SET_ASIDE_S.
PROBE_SET_ASIDE_AFTER = 3
PROBE_SET_ASIDE_S = 60.0
# Bursts of fast probing a tier-1 link may spend a day when its traffic goes unanswered
# (a metered link pays them from its budget: PROBE_BURST_SHARE of it).
PROBE_BURST_MB_PER_DAY = 2.0
# The share of a metered or standby link's budget kept for bursts of fast probing when
# the passive watch suspects it (at 5 MB a day, 1 MB is ~1,400 bursts).
PROBE_BURST_SHARE = 0.2
PROBE_DOWN_AFTER_S = 0.7
PROBE_UP_AFTER_S = 1.0  # answering this long before a new link is trusted
PROBE_HOLD_DOWN_S = 5.0  # a failed link answers this long before it returns (no flapping)
PROBE_BUDGET_MB_PER_DAY = 5.0  # on a metered or standby link: the heartbeat stretches to fit
PROBE_LOSS_WINDOW_S = 10.0
PROBE_DNS_QUERY = "."  # dns probes ask for the root's NS: every resolver answers it

# Seconds between the passive watch's counter samples (one costs ~0.1-0.3 ms of CPU):
# while some link's traffic waits for an answer, the wait is timed closely; while
# traffic flows both ways, unanswered traffic is noticed within BUSY; while none flows,
# traffic that starts is seen within IDLE (an idle link's heartbeats find a dead ISP).
PASSIVE_PERIOD_S = 0.05
PASSIVE_BUSY_PERIOD_S = 0.1
PASSIVE_IDLE_PERIOD_S = 0.2
# Packets sent in a sample that one packet received in it may answer (health/passive.py): a
# TCP receiver acknowledges every second segment, a request has one reply.
PASSIVE_ANSWERS_PER_PACKET = 2

# --- tiers -------------------------------------------------------------------
TIER_MIN = 1  # a link's tier: 1 carries traffic first, TIER_MAX last
TIER_MAX = 5
TIER_COUNT = TIER_MAX - TIER_MIN + 1

# --- weights -----------------------------------------------------------------
WEIGHT_MIN = 1
WEIGHT_MAX = 256  # a nexthop group member's weight is a u8 holding weight - 1
METERED_TIER_MIN = 0  # metered_tier 0: NetworkManager's metered flag changes no tier

# --- delegated prefixes -------------------------------------------------------
DELEGATED_MIN_LENGTH = 16  # shorter would capture others' traffic (::/0 would capture all)
DELEGATED_MAX_LENGTH = 64  # a LAN needs a /64 (SLAAC): a longer one is a host's, not a delegation


def delegable(prefixlen: int) -> bool:
    """Could an ISP's delegation (or the LAN subnet numbered from it) be this long?"""
    return DELEGATED_MIN_LENGTH <= prefixlen <= DELEGATED_MAX_LENGTH


# --- the kernel's own numbers we refer to ------------------------------------
TABLE_MAIN = 254  # RT_TABLE_MAIN: where network managers put their default routes
PRIO_RULE_MAIN = 32766  # the kernel's `from all lookup main` rule (and 32767, default, after it)

# --- rule priorities --------------------------------------------------------
# Below main (32766) so we are consulted first; clear of tailscale (5210-5270)
# and of the small numbers admins and networkd configs use.  Gapped by 100 so
# an admin can slot rules in between ours and we never renumber.
PRIO_MIN = 20000
PRIO_MAIN_SUPPRESS = 20000  # lookup main suppress_prefixlength 0: LAN/VPN/specific routes win
PRIO_LAN_PREFIX = 20010  # to <learned delegated prefix> lookup <its LAN table>: main's routes first
PRIO_TUNNEL = 20050  # fwmark <a tunnel's mark> lookup main: its encapsulated packets skip the balance
PRIO_LINK_SOURCE = 20100  # from <link address> lookup <link table>
PRIO_MARK = 20200  # fwmark -> link table (sticky connections): a connection keeps its link
PRIO_PIN_FIRST = 20210  # policy pins, one priority each in config order: new connections
MAX_PINS = 90  # ... up to 20299
PRIO_BALANCE = 20300  # lookup <balance table>: the weighted multipath default
PRIO_MAX = 20999


def is_owned_priority(priority: int) -> bool:
    return PRIO_MIN <= priority <= PRIO_MAX


# --- nftables and marks ------------------------------------------------------
# wanhooks' one nftables table; no other table is ever read or written.
NFT_FAMILY = "inet"
NFT_TABLE = "wanhooks"
# Sticky connections: the conntrack mark (and, restored from it, the packet
# mark) carries the link a connection belongs to in its top byte.  Others'
# marks: kubernetes 0x4000/0x8000, mwan3 0x3f00, tailscale 0xff0000 (bits
# 16-23), wg-quick 0xca6c, cilium 0x0f00: the top byte is free of them all
# (Calico's default mask 0xffff0000 overlaps: set its mask, or sticky: false).
# Only these 8 bits are ever changed; the rest of both marks is kept.
STICKY_MARK_SHIFT = 24
STICKY_MARK_MASK = 0xFF000000


# A tunnel's own mark (wg's fwmark, openvpn --mark) is matched without the sticky byte.
TUNNEL_MARK_MASK = ~STICKY_MARK_MASK & 0xFFFFFFFF


# A link's identity where it leaves the host -- its sticky mark, which conntrackd copies to
# an HA pair's other router with each connection -- is `id:` from the config, else one
# derived from its interface name: never its ifindex, which differs between two routers
# (and nothing renumbers when the config is reordered).
LINK_ID_MIN = 1
LINK_ID_MAX = 255


def name_link_id(name: str) -> int:
    """The identity of a link without `id:`, from its name alone (1..255): the same on every
    router that names the link the same.  Two names may share one: the plan gives the
    mark to one of them (an `id:` first, then the first name) and says to set an `id:`."""
    return zlib.crc32(name.encode()) % LINK_ID_MAX + 1


# `wanhooks vrrp notify`: how long one conntrackd client step may take (a commit of many
# connections takes a while; a daemon that does not answer must not hold up the role change)
CONNTRACKD_STEP_TIMEOUT_S = 30.0


def sticky_mark(link_id: int) -> int:
    """A link's mark: its identity (1..255) in the top byte."""
    return (link_id & 0xFF) << STICKY_MARK_SHIFT


# --- route metrics ----------------------------------------------------------
# The kernel stores an IPv6 route added with metric 0 as 1024; we ask for what
# it will report so that a dump compares equal with what we planned.
METRIC_V4 = 0
METRIC_V6 = 1024


# --- resilient nexthop groups ----------------------------------------------
class ResilientTimers(NamedTuple):
    idle_s: int  # a bucket unused this long may move to an under-weighted member
    unbalanced_s: int  # a group unbalanced this long moves busy buckets too; 0: never


# Buckets are fixed once a group exists.  Enough buckets that the weights are
# honoured within about 1 % (per member >= 100 buckets per unit of weight
# share), a power of two, within the kernel's u16.
RES_BUCKETS_PER_WEIGHT = 32
RES_BUCKETS_MIN = 128
RES_BUCKETS_MAX = 32768
# With `weight: auto` the weights follow measurements, up to 256:1 (plan/weights.py),
# and the count cannot change without a rebuild: a fixed 1024 keeps every share
# within 0.1 % and gives a 1/256 link 4 buckets.
RES_BUCKETS_AUTO = 1024
# Changing the bucket count means rebuilding the group, which reassigns every
# flow.  So an existing group keeps its count while it is within this factor
# of what the weights ask for (a weight edit does not remap live flows).
RES_BUCKETS_KEEP_BELOW = 2  # keep if >= wanted / 2
RES_BUCKETS_KEEP_ABOVE = 4  # keep if <= wanted * 4
# When a member is under its weight's share of buckets (it returned, joined, or
# its weight rose), the kernel moves it buckets that have been idle for
# idle_timer, and once the group has been unbalanced for unbalanced_timer it
# moves busy ones too (0: never).  A bucket is "busy" when any *new*
# connection hashed to it within idle_timer: on a router opening 300
# connections a second, 128 buckets each see one every half second, none is
# ever idle, and without the forced move a returning link never gets a
# bucket back (issue #15, bench/busy_router.py).
#
# With sticky connections on, an established connection follows its conntrack
# mark to its link's table and never consults the group again, so moving a
# busy bucket moves only the connections that have yet to start: rebalance
# at once.  The idle timer stays as short, for the same reason.
RES_TIMERS_STICKY = ResilientTimers(idle_s=1, unbalanced_s=1)
# Without them, moving a bucket moves every connection hashed to it, and a
# NATed or source-filtered one dies.  Idle buckets (quiet for 5 s) still move
# at once; busy ones are forced over after 30 s: by then most short flows
# have ended, and a returning link is never starved for longer.  The price:
# once per return, the long-lived connections in the moved buckets -- about
# the returning link's weight share of them -- are broken.
RES_TIMERS_UNSTICKY = ResilientTimers(idle_s=5, unbalanced_s=30)
RES_TIMER_MAX_S = 3600
USER_HZ = 100  # clock_t unit of the resilient-group timers

# --- multipath hash -----------------------------------------------------------
# fib_multipath_hash_fields bits (Documentation/networking/ip-sysctl.rst).
HASH_SRC_IP = 0x01
HASH_DST_IP = 0x02
HASH_IP_PROTO = 0x04
HASH_FLOWLABEL = 0x08
HASH_SRC_PORT = 0x10
HASH_DST_PORT = 0x20
HASH_POLICY_L3 = 0
HASH_POLICY_L4 = 1
HASH_POLICY_CUSTOM = 3

# --- files ------------------------------------------------------------------
DEFAULT_CONFIG = "/etc/wanhooks/wanhooks.yaml"
DEFAULT_RUN_DIR = "/run/wanhooks"
SYSCTL_RECORD = "sysctl-saved.json"

# --- metrics ----------------------------------------------------------------
# `metrics: true` listens here: loopback only (a router's counters are nobody
# else's business), on a port IANA leaves unassigned.
METRICS_ADDRESS = "127.0.0.1"
METRICS_PORT = 9737
# A scrape reuses a status document this young: a scraper hammering the endpoint costs
# the daemon one document a second at most (Prometheus scrapes every 15 s or so).
METRICS_CACHE_S = 1.0

# status: each link's share of the traffic over the last minute, from counters the
# daemon samples this often (one netlink dump: cheap; the window's edge is this coarse)
TRAFFIC_WINDOW_S = 60.0
TRAFFIC_SAMPLE_S = 5.0

# nftables: reading wanhooks' table is an `nft` process (about 5 ms); a round asks twice. A
# kernel object trusts its own last read or write this long, and the daemon re-reads the
# table this often, so another program's change to it is undone within that time (no
# rtnetlink event tells of it, and a round only comes with one).
FIREWALL_TRUST_S = 10.0
FIREWALL_VERIFY_S = 10.0
FIREWALL_RETRY_S = 5.0  # after nft failed: often enough to heal, rarely enough not to spin

# The daemon's rounds read a mirror of the kernel kept by its notifications
# (kernel/mirrored.py): it takes pending ones this often while no round does (so an idle
# daemon's socket never overruns on a busy host), and confirms the mirror against a full
# dump this often (a disagreement is a bug, logged; the round that follows mends it).
MIRROR_DRAIN_S = 1.0
MIRROR_CONFIRM_S = 60.0  # WANHOOKS_MIRROR_CONFIRM_S overrides it (the tests confirm every 2 s)

# --- the daemon's rounds ------------------------------------------------------------
# After an event, wait this long for the rest of its burst (a carrier loss arrives as the
# link, its nexthops and its routes) before the round: `wanhooks run --debounce-ms`.
DEBOUNCE_S = 0.005

# --- systemd (Type=notify) ------------------------------------------------------
# READY=1 goes out once a round has made the kernel match the plan.  If none has within
# this long (the kernel keeps refusing, a lock is held, nft hangs), it goes out anyway
# with a STATUS= naming what failed: a daemon that keeps retrying, answers the control
# socket and follows the links beats none -- and systemd's start timeout (90 s) would
# kill it and restart from scratch, which retries no better.  20 s: a start-up round is
# 2-200 ms, one whose nft hangs fails after 10 s; this is beyond both, well within 90 s.
READY_DEADLINE_S = 20.0
# A reload (control op or SIGHUP) answers after the first round with the new config has
# run, waiting at most this long for it (a round blocked on the run lock must not hold
# `systemctl reload` up); the client waits RELOAD_CLIENT_TIMEOUT_S for the answer.
RELOAD_ROUND_WAIT_S = 10.0
RELOAD_CLIENT_TIMEOUT_S = 30.0

# --- restore, don't fight (service/restore.py) ----------------------------------
# Another program deleting wanhooks' objects: restored at once up to FIGHT_LIMIT times in
# FIGHT_WINDOW_S (a manager's one sweep, an admin's mistake), then with a doubling delay.
FIGHT_LIMIT = 5
FIGHT_WINDOW_S = 10.0
FIGHT_BACKOFF_MIN_S = 1.0
FIGHT_BACKOFF_MAX_S = 30.0
FIGHT_QUIET_S = 60.0  # this long without a deletion ends the fight (longer than any wait)
