"""The configuration's keys as data: each one's type, limits, default and meaning.

The one source for the keys config/load.py accepts (each section's `names`),
the limits it enforces (below), and wanhooks.yaml(5) (`python -m wanhooks.manual`);
a unit test parses every key's example, so the manual cannot drift from the
parser.  Defaults are read from the model where the model holds them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import constants as c
from ..model import HEALTH_DEFAULTS, BalanceMode, Config, GroupKind, RunMode

# --- limits: what the parser enforces and the manual states --------------------
GATEWAY_HOLD_MAX_S = 60.0
# The durations of a health section: (most seconds, whether 0 itself is refused).
HEALTH_SECONDS = {
    "interval": (60.0, True),
    "heartbeat": (3600.0, False),
    "down_after": (600.0, True),
    "up_after": (3600.0, False),
    "hold_down": (86400.0, False),
    "max_rtt": (60.0, False),
    "loss_window": (3600.0, True),
}
BUDGET_MAX_MB = 100_000.0
PORT_MAX = 65535
PROBE_KINDS = ("icmp", "tcp", "dns")
NAT_MODES = ("none", "masquerade")
WHEN_DOWN = ("fallback", "fail")
PIN_PROTOCOLS = {"tcp": 6, "udp": 17, "sctp": 132, "icmp": 1, "icmpv6": 58}
CAPACITY_KEYS = ("down", "up")


@dataclass(frozen=True)
class Key:
    name: str
    type: str  # what may be written, as a reader would say it
    default: str  # what holds when the key is left out
    meaning: str
    example: str  # a value the parser accepts for this key alone (YAML, or a column's text)


@dataclass(frozen=True)
class Section:
    name: str  # where its keys are written, e.g. "links[]"
    title: str  # the manual's heading
    intro: str
    keys: tuple[Key, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(key.name for key in self.keys)


def _choices(kind: type[BalanceMode] | type[GroupKind] | type[RunMode]) -> str:
    return " | ".join(member.value for member in kind)


def _yes(value: bool) -> str:
    return "true" if value else "false"


def _seconds(name: str) -> str:
    most, zero_refused = HEALTH_SECONDS[name]
    low = "more than 0" if zero_refused else "0"
    if name == "down_after":
        low = "more than interval"
    return f"seconds, {low}, at most {most:g}" if zero_refused else f"seconds, {low} to {most:g}"


_WEIGHT = f"whole number {c.WEIGHT_MIN} to {c.WEIGHT_MAX}, or auto"


def _one_of(choices: tuple[str, ...] | dict[str, int]) -> str:
    return " | ".join(choices)


TOP = Section(
    name="",
    title="TOP-LEVEL KEYS",
    intro="A YAML mapping; only links is required.",
    keys=(
        Key("links", "list of link entries", "(required)",
            "The uplinks, each an interface name or a glob such as \"wl*\" (see LINK ENTRIES). "
            "An exact name wins over a glob; among globs the first match wins.",
            "[{interface: eth0}]"),
        Key("balance", _choices(BalanceMode), Config.balance.value,
            "What the kernel hashes to choose a link. per-connection: source, destination, protocol "
            "and ports (the best spread; one connection stays on one link). per-destination: source "
            "and destination address (one site stays on one link: the 2011 script's behaviour, and "
            "the default for a column file). per-client: the source address only (each LAN client "
            "sticks to one uplink).",
            "per-destination"),
        Key("group", _choices(GroupKind), Config.group.value,
            "The kind of multipath route. auto takes a resilient nexthop group where the kernel has "
            "one (Linux 5.13 and later), else a hash-threshold group, else a legacy multipath route. "
            "Forcing a kind the kernel lacks falls back, with a note in plan and status.",
            "resilient"),
        Key("mode", _choices(RunMode), Config.mode.value,
            "Who follows the links. daemon: `wanhooks run` (the wanhooks service) follows every "
            "change, and the dispatcher hooks only nudge it; without it running, the hooks do "
            "nothing. hooks-only: no resident daemon; each dispatcher hook runs a one-shot apply "
            "itself (no health probes, no link overrides).",
            "hooks-only"),
        Key("gateway_hold", f"seconds, 0 to {GATEWAY_HOLD_MAX_S:g}", f"{Config.gateway_hold:g}",
            "How long a gateway that vanished while carrier and address stay (a DHCP rebind, "
            "`nmcli device reapply`) is kept before the link leaves the balance.",
            "3"),
        Key("health", "mapping (see HEALTH)", "not probed",
            "Probe settings for every link, to find an ISP that died silently; a link's own "
            "health: overrides them key by key.",
            "{targets: [198.51.100.7]}"),
        Key("watchdog", "mapping: test_ips, enabled", "none",
            "The 2011 script's TESTIPS and WATCHDOG in YAML form, read as health targets. "
            "Not together with health:.",
            "{test_ips: [198.51.100.7], enabled: true}"),
        Key("metered_tier", f"whole number {c.METERED_TIER_MIN} to {c.TIER_MAX}", str(Config.metered_tier),
            "The tier of a link NetworkManager calls metered (a 3G stick, a phone) and whose entry "
            "sets none; 0 ignores the metered flag.",
            "3"),
        Key("require_full_connectivity", "true | false", _yes(Config.require_full_connectivity),
            "A device NetworkManager reports behind a captive portal, or with limited connectivity, "
            "carries no balanced traffic until its connectivity is FULL. Its table and source rule "
            "stay, so a portal can be answered through it.",
            "false"),
        Key("hooks_dir", "absolute path", Config.hooks_dir,
            "Executables run on every health transition, with WANHOOKS_LINK, WANHOOKS_FAMILY, "
            "WANHOOKS_OLD_STATE, WANHOOKS_NEW_STATE, WANHOOKS_REASON and WANHOOKS_HOOK in their "
            "environment. The directory, every directory above it and each hook must be root's and "
            "writable by no one else, or nothing runs. A missing directory means no hooks.",
            "/etc/wanhooks/transitions.d"),
        Key("flush_lower_tiers", "true | false", _yes(Config.flush_lower_tiers),
            "When a tier-1 link returns, end the connections still on lower tiers, so they move off "
            "the metered link (pinned ones stay).",
            "false"),
        Key("nat", _one_of(NAT_MODES), Config.nat,
            "masquerade: NAT what leaves by every managed link that has an address, whatever its "
            "health, in wanhooks' own nftables table (inet wanhooks).",
            "masquerade"),
        Key("sticky", "true | false", _yes(Config.sticky),
            "A connection stays on the link it started on, or arrived by: its conntrack mark (the "
            "top byte, 0xff000000) and an fwmark rule keep it there whatever the balance group does.",
            "false"),
        Key("weight", _WEIGHT, "1",
            "The weight of every link that gives none of its own.",
            "auto"),
        Key("resilient", "mapping (see RESILIENT GROUP TIMERS)", "chosen by sticky",
            "The resilient nexthop group's timers: how soon a returning or new link gets its share "
            "of new connections.",
            "{unbalanced_timer: 0}"),
        Key("mss_clamp", "true | false", _yes(Config.mss_clamp),
            "Clamp forwarded TCP SYNs' MSS to the route MTU (PPPoE, LTE).",
            "true"),
        Key("pins", f"list of pins (see PINS), at most {c.MAX_PINS}", "none",
            "Chosen traffic on a chosen link or tier, as ip rules; the first pin that matches wins.",
            "[{to: 203.0.113.0/24, link: eth0}]"),
        Key("nat66", "true | false", _yes(Config.nat66),
            "Masquerade IPv6 out of every link too (independent of nat:). A link's own delegated "
            "prefixes leaving by it keep their addresses; no delegated-prefix rules are installed.",
            "true"),
        Key("metrics", "true | false | \"address:port\"", "false",
            f"Serve Prometheus text on http://{c.METRICS_ADDRESS}:{c.METRICS_PORT}/metrics (true) or "
            "on the address given (\"[::1]:9737\" for IPv6). A wildcard address (0.0.0.0, ::) is "
            "refused: the endpoint has no authentication.",
            "\"127.0.0.1:9800\""),
    ),
)  # fmt: skip

LINK = Section(
    name="links[]",
    title="LINK ENTRIES",
    intro="Each item of links: is a mapping; only interface is required.",
    keys=(
        Key("interface", "interface name or glob", "(required)",
            "An exact name (eth1) or an fnmatch glob (\"wl*\", \"wwan*\", \"usb*\"). Only interfaces "
            "whose names are ASCII letters, digits and . _ - + @ are managed; another one a glob "
            "matches is left alone, with a note.",
            "eth1"),
        Key("weight", _WEIGHT, "the top-level weight, else 1",
            "The link's share of new connections: weights 1, 2, 1 send half to the second link. "
            "auto: the daemon measures the link's capacity from its own traffic (the rate it "
            "carries while the probes' round trip shows a queue) and weighs it by that, a change at "
            "most every 30 s and only when a share moves by 4 points or a tenth; no speed test is "
            "ever run. Beside auto links a number counts as that many Mbit/s.",
            "auto"),
        Key("capacity", "a rate (20mbit, 500kbit, 1gbit), or {down: RATE, up: RATE}", "none",
            "With weight: auto: the link's rate as sold. The estimate starts there, never exceeds "
            "it, and never falls below a tenth of it.",
            "{down: 20mbit, up: 2mbit}"),
        Key("gateway", "address, or a list of one IPv4 and one IPv6", "learned",
            "Left out, the default route the network manager put in the main table for the device "
            "(the lowest metric) is used, and followed when DHCP changes it.",
            "198.51.100.1"),
        Key("network", "prefix, or a list of one IPv4 and one IPv6", "learned",
            "The link's connected prefix; left out, learned from the link's address.",
            "198.51.100.0/24"),
        Key("health", "mapping (see HEALTH)", "the top-level health:",
            "This link's own probe settings, over the top-level ones, key by key.",
            "{targets: [203.0.113.53], interval: 1, down_after: 5}"),
        Key("tier", f"whole number {c.TIER_MIN} to {c.TIER_MAX}", "1, or metered_tier when metered",
            "Only the best tier with a usable link carries traffic: a tier-2 link is a standby.",
            "2"),
        Key("delegated", f"IPv6 prefix or list, /{c.DELEGATED_MIN_LENGTH} to /{c.DELEGATED_MAX_LENGTH}",
            "none",
            "What this ISP's DHCPv6 prefix delegation gave the LAN: traffic from it leaves by this "
            "link (from <prefix> lookup <its table>). Prefixes may not overlap between links.",
            "\"2001:db8:1100::/56\""),
        Key("delegated_to", "interface name or list", "none",
            "LAN interfaces numbered from this ISP's delegation by whatever DHCPv6 client you run: "
            "the prefixes of their dynamic global addresses are learned as this link's delegated "
            "prefixes, and followed as they change. Needed only where networkd or NetworkManager "
            "do not say (see IPv6 in the README); what they say comes second to it.",
            "[lan1]"),
        Key("tunnel_mark", f"mark 0x1 to {c.TUNNEL_MARK_MASK:#x}", "none",
            f"For a tunnel used as a WAN: the fwmark it puts on its own encapsulated packets (wg set "
            f"wg0 fwmark ..., OpenVPN --mark); they skip wanhooks' rules for main's routes (rule "
            f"{c.PRIO_TUNNEL}).",
            "0xca6c"),
        Key("nat_address", "IPv4 address", "none",
            "NAT what leaves by this link to this address -- the WAN's shared address that "
            "keepalived moves between the two routers of a pair -- not to the link's own, so a "
            "connection's public address survives the move. The link carries balanced traffic only "
            "while the address is on it (status: waiting for its shared address); its source rule "
            "covers the address either way. Implies NAT for the link, whatever nat: says.",
            "198.51.100.10"),
        Key("id", f"whole number {c.LINK_ID_MIN} to {c.LINK_ID_MAX}", "from the interface name",
            "The link's identity where it leaves this router: its sticky connections' conntrack "
            "mark, which conntrackd copies to the other router of a high-availability pair. Give "
            "each link the same id on both routers (the interface name alone does, where both name "
            "it the same); ids are unique, and only an exact interface can have one.",
            "1"),
    ),
)  # fmt: skip


def _health_default(name: str) -> str:
    value = getattr(HEALTH_DEFAULTS, name)
    if isinstance(value, bool):
        return _yes(value)
    return f"{value:g}" if isinstance(value, float) else str(value)


HEALTH = Section(
    name="health",
    title="HEALTH",
    intro=(
        "Top-level health: (every link) or a link's own; every key optional. A link fails when "
        "silent_targets of its targets have not answered for down_after, and returns after "
        "answering for hold_down. Its table and source rule stay, so it is still probed."
    ),
    keys=(
        Key("targets", "address or list of addresses, either family", "none: not probed",
            "What to probe, bound to the link tested (its device and address); each family is "
            "judged on its own. [] probes nothing.",
            "[198.51.100.7, \"2001:db8::7\"]"),
        Key("interval", _seconds("interval"), _health_default("interval"),
            "Between probes to each target while a link is checked: new, recovering, or "
            "suspected (its traffic or heartbeat went unanswered).", "0.5"),
        Key("heartbeat", _seconds("heartbeat"), _health_default("heartbeat"),
            "Between an idle up link's echoes, one target in turn; a link whose traffic is "
            "heard from beyond sends none. 0: every target every interval, always.", "5"),
        Key("down_after", _seconds("down_after"), _health_default("down_after"),
            "No reply from the targets for this long: the link fails.", "2"),
        Key("up_after", _seconds("up_after"), _health_default("up_after"),
            "A new link must answer this long before it takes traffic.", "2"),
        Key("hold_down", _seconds("hold_down"), _health_default("hold_down"),
            "A failed link must answer this long before it returns; one that flaps never does "
            "until it is stable.", "30"),
        Key("silent_targets", "whole number, 1 up to the number of targets", "all of them",
            "How many targets must go silent for the link to fail.", "1"),
        Key("enabled", "true | false", _health_default("enabled"),
            "false: not probed, whatever the targets.", "false"),
        Key("budget_mb_per_day", "megabytes, more than 0", _health_default("budget_mb_per_day"),
            "Probe traffic a day allowed on a metered or standby (tier 2 and up) link: steady "
            "heartbeats, and fast bursts when one goes unanswered.", "10"),
        Key("kind", _one_of(PROBE_KINDS), _health_default("kind"),
            "icmp: an echo. tcp: a connection attempt to port (a SYN-ACK or a RST answers). dns: a "
            "query for query to port (any response with its id answers).", "tcp"),
        Key("port", f"1 to {PORT_MAX} (tcp and dns only)", "443 (tcp), 53 (dns)",
            "The port probed.", "8443"),
        Key("query", "domain name (dns only)", f"\"{HEALTH_DEFAULTS.query}\" (type NS)",
            "The name asked for.", "example.org"),
        Key("max_rtt", _seconds("max_rtt"), f"{_health_default('max_rtt')} (off)",
            "A smoothed round trip above it fails the link.", "0.5"),
        Key("max_loss", "percent, 0 to 100", f"{_health_default('max_loss')} (off)",
            "The share of probes lost over loss_window that fails the link (counted once 10 or more "
            "probes are old enough to judge). Loss needs a steady stream of echoes: such a link is "
            "probed every interval, as with heartbeat: 0.", "20"),
        Key("loss_window", _seconds("loss_window"), _health_default("loss_window"),
            "The window max_loss is counted over.", "30"),
        Key("passive", "true | false", _health_default("passive"),
            "Traffic heard from beyond the link (replies on established connections, counted in "
            "wanhooks' nftables table) proves it alive, and traffic sent with nothing heard for "
            "0.25 s makes the probes hurry. false: probes alone, every interval.", "false"),
    ),
)  # fmt: skip

PIN = Section(
    name="pins[]",
    title="PINS",
    intro=(
        "Each item of pins: selects traffic (at least one of to, from, proto) and names exactly one "
        "target (link or tier)."
    ),
    keys=(
        Key("to", "address or prefix, or a list, either family", "any",
            "Destinations.", "[203.0.113.0/24]"),
        Key("from", "address or prefix, or a list, either family", "any",
            "Sources: LAN clients. An address pins only its own family.", "192.168.1.50"),
        Key("proto", _one_of(PIN_PROTOCOLS), "any", "The IP protocol.", "udp"),
        Key("port", "port or range such as 5060-5061 (needs tcp, udp or sctp)", "any",
            "Destination ports.", "\"5060-5061\""),
        Key("link", "interface name or glob", "none",
            "The first matching link able to carry traffic, in config order; a standby link may "
            "carry pinned traffic, a failed, disabled or draining one may not.", "eth0"),
        Key("tier", f"whole number {c.TIER_MIN} to {c.TIER_MAX}", "none",
            "That tier's links, weighted, through a table of their own.", "2"),
        Key("when_down", _one_of(WHEN_DOWN), "fallback",
            "When the target cannot carry traffic. fallback: the pin's rule is withdrawn and its "
            "traffic takes the balance. fail: an unreachable rule, so clients get an error at once.",
            "fail"),
    ),
)  # fmt: skip

RESILIENT = Section(
    name="resilient",
    title="RESILIENT GROUP TIMERS",
    intro=(
        "Whole seconds. A link short of its weight's share of the group's hash buckets (it "
        "returned, joined, or its weight rose) takes buckets that have been idle for idle_timer, "
        "and once the group has been short for unbalanced_timer, busy ones too. On a busy router "
        "no bucket is ever idle, so the forced move is what brings a returning link back. With "
        "sticky connections an established connection follows its mark, not the group: moving a "
        "bucket breaks nothing, so both timers default to "
        f"{c.RES_TIMERS_STICKY.idle_s} s. Without them the connections in a moved bucket move too "
        f"(a NATed one breaks): {c.RES_TIMERS_UNSTICKY.idle_s} s and {c.RES_TIMERS_UNSTICKY.unbalanced_s} s."
    ),
    keys=(
        Key("idle_timer", f"1 to {c.RES_TIMER_MAX_S}", "1 (sticky), 5 (not sticky)",
            "A bucket no new connection used for this long may move.", "5"),
        Key("unbalanced_timer", f"0 to {c.RES_TIMER_MAX_S}", "1 (sticky), 30 (not sticky)",
            "A group short of balance this long moves busy buckets too; 0 never does (a returning "
            "link on a busy router may then wait for ever).", "0"),
    ),
)  # fmt: skip

WATCHDOG = Section(
    name="watchdog",
    title="WATCHDOG",
    intro="The 2011 script's TESTIPS and WATCHDOG, in YAML; read as the health section they mean.",
    keys=(
        Key("test_ips", "address or list of addresses", "none",
            "Pinged through every link: the health targets.", "[198.51.100.7]"),
        Key("enabled", "true | false", "true when there are test_ips",
            "false keeps the addresses but probes nothing.", "false"),
    ),
)  # fmt: skip

COLUMNS = Section(
    name="column file",
    title="THE 2011 COLUMN FORMAT",
    intro=(
        "A generic-balancer.sh variable block works wherever a config is accepted: shell "
        "assignments with one whitespace-separated column per link, read as text and never run. "
        "\"-\" in a column leaves that value out. `wanhooks convert FILE` prints it as YAML."
    ),
    keys=(
        Key("WANIFACE", "interface names or globs", "(required)", "One column per link.", "\"eth0\""),
        Key("GATEWAYS", "an address per column, or -", "learned", "As a link's gateway.", "\"192.0.2.1\""),
        Key("NETWORKS", "a prefix per column, or -", "learned", "As a link's network.", "\"192.0.2.0/24\""),
        Key("WEIGHTS", f"a weight per column ({c.WEIGHT_MIN} to {c.WEIGHT_MAX}), or -", "1",
            "As a link's weight.", "\"2\""),
        Key("TIERS", f"a tier per column ({c.TIER_MIN} to {c.TIER_MAX}), or -", "1",
            "As a link's tier.", "\"2\""),
        Key("TESTIPS", "addresses", "none", "The watchdog's targets: the health targets.",
            "\"198.51.100.7\""),
        Key("WATCHDOG", "yes | no (1/0, true/false, on/off)", "yes when TESTIPS are given",
            "Off keeps TESTIPS but probes nothing.", "\"no\""),
        Key("BALANCE", _choices(BalanceMode), "per-destination",
            "As balance:; without it a column file balances per destination, as the 2011 script "
            "did (its multipath route kept each destination on one link).", "\"per-connection\""),
    ),
)  # fmt: skip

SECTIONS = (TOP, LINK, HEALTH, PIN, RESILIENT, WATCHDOG, COLUMNS)
