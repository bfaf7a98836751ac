"""Read and check the wanhooks configuration.

Two formats are accepted, told apart by their content, never by file name.

YAML, the native format (/etc/wanhooks/wanhooks.yaml)::

    links:
      - {interface: eth1, weight: 2, gateway: 198.51.100.1}
      - interface: "wl*"
    health: {targets: [198.51.100.7, "2001:db8::7"]}

Every key -- its type, limits, default and meaning -- is in config/schema.py,
which this module takes its key lists and limits from and the manual
(wanhooks.yaml(5)) is made from.

A link's health keys override the top-level ones, which override the
defaults (HealthConfig.resolved).  ``watchdog: {test_ips: [...], enabled: ...}``,
the seed's TESTIPS/WATCHDOG in YAML, is still read (as health targets) but
may not be given together with ``health:``.

The column file of the 2011 generic-balancer.sh: shell assignments with one
whitespace-separated column per link.  It is read as text, never run::

    WANIFACE=" vlan101 vlan100"
    GATEWAYS=" 192.168.1.1 -"     # "-": not given (the link learns it)
    NETWORKS=" 192.168.1.0/24 -"
    WEIGHTS=" 1 2"
    TIERS=" 1 -"                  # optional: as YAML's tier
    TESTIPS="198.51.100.7"        # optional: ping watchdog targets
    WATCHDOG="yes"                # optional: yes/no, 1/0, true/false, on/off
    BALANCE="per-connection"      # optional: as YAML's balance (default: per-destination)

Without BALANCE a column file balances per destination, as the 2011 script did
(its multipath route kept each destination on one link).  TESTIPS and WATCHDOG
become the top-level health section: the targets, with enabled: false when
WATCHDOG is off.

A file with a WANIFACE assignment is a column file (and then every other
non-comment line must be an assignment too); anything else is read as YAML.
Every problem becomes a ConfigError that names the file, the line and the key.
"""

from __future__ import annotations

import difflib
import fnmatch
import ipaddress
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import yaml
from yaml.error import MarkedYAMLError, YAMLError
from yaml.events import AliasEvent
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.reader import Reader, ReaderError

from wanhooks import constants as c
from wanhooks.model import (
    BalanceMode,
    Capacity,
    Config,
    GroupKind,
    HealthConfig,
    IPAddress,
    IPNetwork,
    LinkConfig,
    Pin,
    RunMode,
    SeedWatchdog,
    is_glob,
)
from wanhooks.plan.names import ifname_problem

from . import schema
from .schema import (
    BUDGET_MAX_MB,
    CAPACITY_KEYS,
    GATEWAY_HOLD_MAX_S,
    HEALTH_SECONDS,
    NAT_MODES,
    PIN_PROTOCOLS,
    PORT_MAX,
    PROBE_KINDS,
    WHEN_DOWN,
)

__all__ = ["ConfigError", "load_config", "parse_config", "to_yaml", "unknown_link"]

# A config is a few hundred bytes; the bound keeps a wrong path (a disk image,
# /dev/zero) from being read into memory and through the pure-Python parser.
MAX_CONFIG_BYTES = 1 << 20
# The deepest legitimate node is 4 levels down (links, a link, a gateway list,
# an address).  The bound stops PyYAML's recursive composer long before
# Python's recursion limit.
MAX_DEPTH = 16
WEIGHT_MIN, WEIGHT_MAX = c.WEIGHT_MIN, c.WEIGHT_MAX
# Each section's keys come from the schema (config/schema.py), which the manual is made from.
TOP_KEYS = schema.TOP.names
RESILIENT_KEYS = schema.RESILIENT.names
PIN_KEYS = schema.PIN.names
LINK_KEYS = schema.LINK.names
WATCHDOG_KEYS = schema.WATCHDOG.names
HEALTH_KEYS = schema.HEALTH.names
PORTED_PROTOCOLS = (6, 17, 132)
CAPACITY_UNITS = {"kbit": 1e3, "mbit": 1e6, "gbit": 1e9}
CAPACITY_MAX_BPS = 1e12
TUNNEL_MARK_MAX = c.TUNNEL_MARK_MASK  # the sticky byte is wanhooks' own
HOOKS_DIR_MAX = 4096  # PATH_MAX
DNS_NAME_MAX = 253  # RFC 1035: 255 octets on the wire
DNS_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
# More digits than any list of targets in a 1 MiB file could need; keeps int() small.
SILENT_TARGETS_DIGITS = 6
SEED_VARIABLES = schema.COLUMNS.names
SEED_COLUMNS = ("GATEWAYS", "NETWORKS", "WEIGHTS", "TIERS")
NOT_GIVEN = "-"  # a seed column that leaves its value out
SWITCH_WORDS = {
    "yes": True,
    "true": True,
    "on": True,
    "1": True,
    "no": False,
    "false": False,
    "off": False,
    "0": False,
}

# A column file without BALANCE balances as generic-balancer.sh did: per destination.
SEED_BALANCE = BalanceMode.PER_DESTINATION
# What `convert` says above the balance line, so the choice is the reader's.
BALANCE_NOTES = {
    BalanceMode.PER_DESTINATION: (
        "# per-destination: one site stays on one link, as the 2011 script balanced (its multipath\n"
        "# route kept each destination on one link); per-connection spreads the load better."
    ),
}

FORMAT_HINT = "expected a YAML config or a generic-balancer.sh column file (WANIFACE=...)"

_STR = "tag:yaml.org,2002:str"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_BOOL = "tag:yaml.org,2002:bool"
_NULL = "tag:yaml.org,2002:null"

_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)")
_WANIFACE_LINE = re.compile(r"\s*(?:export\s+)?WANIFACE=")
# Characters that only mean something to a shell; outside quotes we refuse them
# rather than guess what the 2011 script's shell would have done.
_SHELL_SYNTAX = ";&|<>(){}"
_DECIMAL = re.compile(r"[-+]?(?:0|[1-9][0-9]*)")
# Scalars to_yaml may write unquoted (still checked against YAML's resolver).
_PLAIN = re.compile(r"[A-Za-z0-9/](?:[A-Za-z0-9_./-]*[A-Za-z0-9_./])?")


# --------------------------------------------------------------------------
# The error
# --------------------------------------------------------------------------


class ConfigError(Exception):
    """A problem in a config file, located for the user: ``path:line: key: message``."""

    def __init__(self, path: str, line: int, key: str, message: str) -> None:
        super().__init__(path, line, key, message)
        self.path = path
        self.line = line  # 1-based; 0 when the problem is the whole file
        self.key = key  # "links[2].weight", "WEIGHTS[3]", or "" for the whole file
        self.message = message

    def __str__(self) -> str:
        # Escaped so that a hostile value can never forge a second output line.
        return _escape(f"{self.path}:{self.line}: {self.key}: {self.message}")


@dataclass(frozen=True)
class _Where:
    """Where a value came from, so a check can say so when it fails."""

    path: str
    line: int
    key: str

    def error(self, message: str) -> ConfigError:
        return ConfigError(self.path, self.line, self.key, message)


def _escape(text: str) -> str:
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _show(text: str, limit: int = 40) -> str:
    """User text quoted for a message, escaped and cut short."""
    if len(text) > limit:
        text = text[:limit] + "..."
    return "'" + _escape(text) + "'"


def _did_you_mean(word: str, choices: Sequence[str]) -> str:
    """': did you mean 'x'?' when a choice is close to word, else ''."""
    if len(word) > 64:  # difflib is quadratic; nobody mistypes 'weight' that badly
        return ""
    by_lower = {choice.lower(): choice for choice in choices}
    matches = difflib.get_close_matches(word.lower(), list(by_lower), n=1)
    return f": did you mean {_show(by_lower[matches[0]])}?" if matches else ""


# --------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------


def load_config(path: str) -> Config:
    """Read, recognise, parse and check the config file at path."""
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(path, 0, "", "no such file") from None
    except PermissionError:
        raise ConfigError(path, 0, "", "permission denied") from None
    except IsADirectoryError:
        raise ConfigError(path, 0, "", "is a directory, not a file") from None
    except (OSError, ValueError) as err:  # ValueError: a NUL in the path
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise ConfigError(path, 0, "", f"cannot read: {reason.lower()}") from None
    return parse_config(data, path)


def parse_config(text: bytes | str, path: str) -> Config:
    """Parse and check config content; path is only used in messages and Config.path."""
    content = _decode(text, path)
    if not content.strip():
        raise ConfigError(path, 0, "", f"the file is empty: {FORMAT_HINT}")
    if any(_WANIFACE_LINE.match(line) for line in content.split("\n")):
        return _config_from_seed(content, path)
    return _config_from_yaml(content, path)


def to_yaml(config: Config) -> str:
    """The config in wanhooks' YAML format, for `wanhooks convert`."""
    lines = [
        f"# Converted by `wanhooks convert` from {_escape(config.path)}.",
        "# The same settings as that file, in wanhooks' YAML format.",
        "",
        "links:" if config.links else "links: []",
    ]
    for link in config.links:
        lines += _link_yaml(link)
    if config.balance in BALANCE_NOTES:
        lines.append(BALANCE_NOTES[config.balance])
    lines.append(f"balance: {config.balance.value}")
    lines.append(f"group: {config.group.value}")
    lines.append(f"gateway_hold: {_number(config.gateway_hold)}")
    # The newer settings only when they differ from the default, to keep converted files short.
    newer = {
        "mode": config.mode.value,
        "metered_tier": str(config.metered_tier),
        "require_full_connectivity": _yaml_boolean(config.require_full_connectivity),
        "hooks_dir": _yaml_scalar(config.hooks_dir),
        "flush_lower_tiers": _yaml_boolean(config.flush_lower_tiers),
        "nat": config.nat,
        "sticky": _yaml_boolean(config.sticky),
        "mss_clamp": _yaml_boolean(config.mss_clamp),
        "nat66": _yaml_boolean(config.nat66),
        "metrics": (
            f'"{config.metrics[0]}:{config.metrics[1]}"'
            if config.metrics and ":" not in config.metrics[0]
            else f'"[{config.metrics[0]}]:{config.metrics[1]}"'
            if config.metrics
            else "false"
        ),
    }
    lines += [
        f"{name}: {text}" for name, text in newer.items() if getattr(config, name) != getattr(Config, name)
    ]
    if config.resilient_timers is not None:
        idle, unbalanced = config.resilient_timers
        lines.append(f"resilient: {{idle_timer: {idle}, unbalanced_timer: {unbalanced}}}")
    if config.pins:
        lines += ["pins:"] + [f"  - {_pin_yaml(pin)}" for pin in config.pins]
    if config.health != HealthConfig():
        # Parsing health: gives back the same seed_watchdog (_watchdog_of_health).
        lines += _health_yaml(config.health, "")
    else:
        # Only a Config built by hand has a watchdog but no health; watchdog:
        # reads back as the health section the seed's settings mean.
        lines += _watchdog_yaml(config.seed_watchdog)
    return "\n".join(lines) + "\n"


def unknown_link(config: Config, name: str) -> str | None:
    """Why `link disable|drain NAME` names no link the config manages (an exact entry, or a
    name a glob matches, as plan.match_entry decides), or None when one does."""
    from wanhooks.plan.planner import match_entry  # the planner's own matching; imported only when asked

    if match_entry(config, name) is not None:
        return None
    known = ", ".join(_escape(entry.interface) for entry in config.links)
    return f"{_show(name)} is none of the links {_escape(config.path)} manages ({known})"


# --------------------------------------------------------------------------
# Bytes to text
# --------------------------------------------------------------------------


def _decode(data: bytes | str, path: str) -> str:
    """Text of the file, or a ConfigError for anything that is not a small text file."""
    if isinstance(data, str):
        if len(data) > MAX_CONFIG_BYTES:
            raise _too_large(path)
        # surrogatepass: a lone surrogate then fails the UTF-8 check below, with its line.
        data = data.encode("utf-8", "surrogatepass")
    if len(data) > MAX_CONFIG_BYTES:
        raise _too_large(path)
    nul = data.find(b"\0")
    if nul >= 0:
        raise ConfigError(path, _byte_line(data, nul), "", "not a text file: it contains a NUL byte")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        byte = data[err.start]
        raise ConfigError(
            path, _byte_line(data, err.start), "", f"not a text file: invalid UTF-8 (byte 0x{byte:02x})"
        ) from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n")
    # YAML's own rule for printable text, applied to both formats alike.
    bad = Reader.NON_PRINTABLE.search(text)
    if bad:
        line = text.count("\n", 0, bad.start()) + 1
        code = ord(bad.group())
        raise ConfigError(path, line, "", f"not a text file: it contains the control character U+{code:04X}")
    return text


def _too_large(path: str) -> ConfigError:
    return ConfigError(path, 0, "", f"the file is larger than {MAX_CONFIG_BYTES // 1024} KiB: not a config")


def _byte_line(data: bytes, offset: int) -> int:
    return data.count(b"\n", 0, offset) + 1


# --------------------------------------------------------------------------
# Checks shared by both formats (values arrive as text)
# --------------------------------------------------------------------------


@dataclass
class _Draft:
    """One link's checked values, before the cross-field checks."""

    interface: str
    interface_at: _Where
    line: int
    weight: int = 1
    gateways: list[tuple[IPAddress, _Where]] = field(default_factory=list)
    networks: list[tuple[IPNetwork, _Where]] = field(default_factory=list)
    health: HealthConfig | None = None
    tier: int | None = None
    delegated: tuple[ipaddress.IPv6Network, ...] = ()
    delegated_to: list[tuple[str, _Where]] = field(default_factory=list)
    tunnel_mark: int | None = None
    weight_given: bool = False
    auto_weight: bool = False
    capacity: Capacity | None = None
    capacity_at: _Where | None = None
    link_id: int | None = None
    link_id_at: _Where | None = None
    nat_address: ipaddress.IPv4Address | None = None


def _check_interface(name: str, where: _Where, *, glob: bool = True) -> str:
    """The rules of the kernel's dev_valid_name(), with glob characters allowed (or not: one
    exact name, as a LAN interface of delegated_to: is)."""
    problem = ifname_problem(name, glob=glob)
    if problem:
        raise where.error(problem)
    return name


def _weight_from_text(text: str, where: _Where) -> int:
    # Decimal only: "010" is 8 to YAML 1.1 and to iproute2's strtoul(.., 0).
    if not _DECIMAL.fullmatch(text):
        raise where.error(
            f"weight must be a whole number from {WEIGHT_MIN} to {WEIGHT_MAX}, not {_show(text)}"
        )
    if len(text) > 8:  # out of range anyway; also keeps int() away from huge strings
        raise where.error(f"weight {_show(text)} is out of range: give {WEIGHT_MIN} to {WEIGHT_MAX}")
    return _check_weight(int(text), where)


def _check_weight(weight: int, where: _Where) -> int:
    if weight == 0:
        raise where.error(
            f"weight 0 is not allowed: remove the link or give it a weight of {WEIGHT_MIN} to {WEIGHT_MAX}"
        )
    if not WEIGHT_MIN <= weight <= WEIGHT_MAX:
        raise where.error(f"weight {weight} is out of range: give {WEIGHT_MIN} to {WEIGHT_MAX}")
    return weight


def _whole_from_text(text: str, where: _Where, what: str, low: int, high: int) -> int:
    """A small whole number low..high (tier, metered_tier), written in decimal."""
    if not _DECIMAL.fullmatch(text):
        raise where.error(f"{what} must be a whole number from {low} to {high}, not {_show(text)}")
    if len(text) > 8:  # out of range anyway; also keeps int() away from huge strings
        raise where.error(f"{what} {_show(text)} is out of range: give {low} to {high}")
    number = int(text)
    if not low <= number <= high:
        raise where.error(f"{what} {number} is out of range: give {low} to {high}")
    return number


def _tier_from_text(text: str, where: _Where) -> int:
    return _whole_from_text(text, where, "tier", c.TIER_MIN, c.TIER_MAX)


def _check_hooks_dir(text: str, where: _Where) -> str:
    """An absolute directory path; it need not exist (a missing directory means no hooks)."""
    if not text.startswith("/"):
        raise where.error(f"hooks_dir must be an absolute path (starting with '/'), not {_show(text)}")
    if "\0" in text:
        raise where.error("hooks_dir must not contain a NUL character")
    if "\n" in text:
        raise where.error("hooks_dir must not contain a newline")
    if len(text) > HOOKS_DIR_MAX:
        raise where.error(f"hooks_dir is {len(text)} characters long: at most {HOOKS_DIR_MAX}")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a "\ud800" escape: no file name has one
        raise where.error(f"hooks_dir {_show(text)} is not valid Unicode text") from None
    return text


def _parse_address(text: str, where: _Where, what: str) -> IPAddress:
    """A unicast address (what: 'gateway', 'test address') or a ConfigError."""
    if "%" in text:
        raise where.error(f"{what} {_show(text)} has a zone (%...): leave it out, the link is the zone")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise where.error(f"{what} {_show(text)} is not an IP address") from None
    problem = _unusable(address)
    if problem:
        raise where.error(f"{what} {address} is {problem}: not usable as a {what}")
    return address


def _unusable(address: IPAddress) -> str:
    if address.is_unspecified:
        return "the unspecified address"
    if address.is_multicast or address == ipaddress.IPv4Address("255.255.255.255"):
        return "a multicast or broadcast address"
    if address.is_loopback:
        return "a loopback address"
    return ""


def _parse_network(text: str, where: _Where) -> IPNetwork:
    if "%" in text:
        raise where.error(f"network {_show(text)} has a zone (%...): leave it out")
    if "/" not in text:
        return _network_without_length(text, where)
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise where.error(f"network {_show(text)} is not a prefix such as 198.51.100.0/24") from None
    if loose.prefixlen == 0:
        raise where.error(f"network {loose} covers every address: give the link's own network")
    try:
        return ipaddress.ip_network(text)
    except ValueError:
        raise where.error(f"network {_show(text)} has host bits set: did you mean {loose}?") from None


def _network_without_length(text: str, where: _Where) -> IPNetwork:
    # A bare address is almost always a forgotten "/24"; a /32 link network never makes sense.
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise where.error(f"network {_show(text)} is not a prefix such as 198.51.100.0/24") from None
    example = "/24" if address.version == 4 else "/64"
    raise where.error(f"network {_show(text)} has no prefix length (such as {address}{example})")


def _finish_link(draft: _Draft, seen: dict[str, int]) -> LinkConfig:
    """Cross-field checks of one link, then the LinkConfig; seen maps interface -> first line."""
    if draft.interface in seen:
        raise draft.interface_at.error(
            f"interface {_show(draft.interface)} is already given by the link at line {seen[draft.interface]}"
        )
    seen[draft.interface] = draft.line
    gateway4, gateway6 = _split_gateways(draft.gateways)
    network4, network6 = _split_networks(draft.networks)
    for gateway, where in draft.gateways:
        _check_inside(gateway, network4 if gateway.version == 4 else network6, where)
    return LinkConfig(
        interface=draft.interface,
        weight=draft.weight,
        gateway4=gateway4,
        gateway6=gateway6,
        network4=network4,
        network6=network6,
        line=draft.line,
        health=draft.health,
        tier=draft.tier,
        delegated=draft.delegated,
        delegated_to=tuple(name for name, _at in draft.delegated_to),
        tunnel_mark=draft.tunnel_mark,
        auto_weight=draft.auto_weight,
        capacity=draft.capacity,
        link_id=draft.link_id,
        nat_address=draft.nat_address,
    )


def _split_gateways(
    items: list[tuple[IPAddress, _Where]],
) -> tuple[ipaddress.IPv4Address | None, ipaddress.IPv6Address | None]:
    v4: ipaddress.IPv4Address | None = None
    v6: ipaddress.IPv6Address | None = None
    for address, where in items:
        if isinstance(address, ipaddress.IPv4Address):
            v4 = _only_one(v4, address, where, "gateway")
        else:
            v6 = _only_one(v6, address, where, "gateway")
    return v4, v6


def _split_networks(
    items: list[tuple[IPNetwork, _Where]],
) -> tuple[ipaddress.IPv4Network | None, ipaddress.IPv6Network | None]:
    v4: ipaddress.IPv4Network | None = None
    v6: ipaddress.IPv6Network | None = None
    for network, where in items:
        if isinstance(network, ipaddress.IPv4Network):
            v4 = _only_one(v4, network, where, "network")
        else:
            v6 = _only_one(v6, network, where, "network")
    return v4, v6


_Value = TypeVar("_Value", bound="IPAddress | IPNetwork")


def _only_one(previous: _Value | None, new: _Value, where: _Where, what: str) -> _Value:
    if previous is not None:
        raise where.error(
            f"two IPv{new.version} {what}s ({previous} and {new}): give at most one IPv4 and one IPv6"
        )
    return new


def _check_inside(gateway: IPAddress, network: IPNetwork | None, where: _Where) -> None:
    # An IPv6 router is normally reached at its link-local address (RFC 4861
    # router advertisements), which is never inside the link's global prefix.
    if network is None or (gateway.version == 6 and gateway.is_link_local):
        return
    if gateway not in network:
        raise where.error(f"gateway {gateway} is not inside network {network}")


_Choice = TypeVar("_Choice", BalanceMode, GroupKind, RunMode)


def _parse_choice(text: str, kind: type[_Choice], where: _Where, what: str) -> _Choice:
    values = [member.value for member in kind]
    if text in values:
        return kind(text)
    allowed = ", ".join(values)
    raise where.error(f"{what} {_show(text)} is not one of {allowed}{_did_you_mean(text, values)}")


def _watchdog(test_ips: tuple[IPAddress, ...], enabled: bool | None, where: _Where) -> SeedWatchdog:
    """SeedWatchdog; enabled=None (not said) means on exactly when there is something to ping."""
    if enabled is None:
        enabled = bool(test_ips)
    if enabled and not test_ips:
        raise where.error("the watchdog is on but there are no test addresses to ping")
    return SeedWatchdog(test_ips=test_ips, enabled=enabled)


# --------------------------------------------------------------------------
# YAML
# --------------------------------------------------------------------------


class _AliasNode(ScalarNode):
    """Stands where the document had an alias (*name); wanhooks refuses those."""


class _TooDeepError(Exception):
    """Raised inside the composer; _compose turns it into a ConfigError."""

    def __init__(self, line: int) -> None:
        super().__init__(line)
        self.line = line


class _Loader(yaml.SafeLoader):
    """SafeLoader's composer with nesting bounded and aliases never expanded.

    An alias normally becomes a second reference to its anchor's node, so
    nested aliases ("billion laughs") make a small file a huge tree to walk.
    Here an alias becomes a placeholder that the checks reject by name.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if self.check_event(AliasEvent):
            event = self.get_event()  # type: ignore[no-untyped-call]  # untyped in types-PyYAML
            return _AliasNode("!alias", str(event.anchor), event.start_mark, event.end_mark)
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise _TooDeepError(mark.line + 1 if mark else 0)
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _compose(text: str, path: str) -> Node | None:
    loader = _Loader(text)
    try:
        return loader.get_single_node()
    except _TooDeepError as err:
        raise ConfigError(path, err.line, "", f"nested more than {MAX_DEPTH} levels deep") from None
    except MarkedYAMLError as err:
        raise _yaml_error(err, path) from None
    except ReaderError as err:
        line = text.count("\n", 0, int(err.position)) + 1
        raise ConfigError(path, line, "", f"not a text file: {err.reason}") from None
    except YAMLError as err:
        raise ConfigError(path, 0, "", f"YAML error: {err}") from None
    except Exception as err:
        # PyYAML is not ours: whatever it raises, the user gets a message, not a traceback.
        raise ConfigError(path, 0, "", f"cannot read the file as YAML ({type(err).__name__})") from None
    finally:
        loader.dispose()


def _yaml_error(err: MarkedYAMLError, path: str) -> ConfigError:
    mark = err.problem_mark or err.context_mark
    line = mark.line + 1 if mark else 0
    problem = err.problem or err.context or "not valid YAML"
    if err.problem and err.context:
        problem = f"{problem} ({err.context})"
    return ConfigError(path, line, "", f"YAML syntax error: {problem}")


def _line(node: Node) -> int:
    return node.start_mark.line + 1 if node.start_mark else 0


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _kind(node: Node) -> str:
    """What a node is, for 'must be X, not Y' messages."""
    if isinstance(node, SequenceNode):
        return "a list"
    if isinstance(node, MappingNode):
        return "a mapping"
    text = str(node.value)
    if node.tag == _NULL:
        return "empty"
    if node.tag == _BOOL:
        return f"the boolean {_show(text)}"
    if node.tag in (_INT, _FLOAT):
        return f"the number {_show(text)}"
    if node.tag == _STR:
        return f"the string {_show(text)}"
    return f"{_show(text)} (tagged {_show(node.tag)})"


def _config_from_yaml(text: str, path: str) -> Config:
    root = _compose(text, path)
    if root is None:
        raise ConfigError(path, 0, "", f"the file holds only comments: {FORMAT_HINT}")
    _reject_aliases(root, "", path)
    if not isinstance(root, MappingNode):
        kind = _kind(root)
        raise ConfigError(
            path, _line(root), "", f"the top level must be a mapping with 'links', not {kind}: {FORMAT_HINT}"
        )
    # Keys are scalars by the time they are looked up here (_items checks first).
    key_lines = {str(key.value): _line(key) for key, _ in root.value if isinstance(key, ScalarNode)}
    given: dict[str, Any] = {}
    for name, value in _items(root, "", TOP_KEYS, path):
        other = {"health": "watchdog", "watchdog": "health"}.get(name, "")
        if other in given:
            raise ConfigError(
                path,
                key_lines[name],
                name,
                f"{other}: is already given at line {key_lines[other]}: "
                "give health:, watchdog: is the 2011 script's form",
            )
        given[name] = _TOP_PARSERS[name](value, _Where(path, _line(value), name))
    if "links" not in given:
        raise ConfigError(
            path, _line(root), "links", "links is required: list the uplinks, as '- interface: eth1'"
        )
    default_auto, default_weight = given.get("weight", (False, None))
    links = _with_weights(given["links"], default_weight, default_auto)
    watchdog: SeedWatchdog | None = given.get("watchdog")
    if watchdog is not None:
        health, top = _health_of_watchdog(watchdog), "watchdog"
    else:
        health, top = given.get("health", HealthConfig()), "health"
        watchdog = _watchdog_of_health(health)
    pins: tuple[Pin, ...] = given.get("pins", ())
    _check_links_health(links, health, top, path)
    _check_delegated(links, path)
    _check_pin_targets(pins, links, path)
    sticky = given.get("sticky", Config.sticky)
    return Config(
        links=links,
        balance=given.get("balance", BalanceMode.PER_CONNECTION),
        group=given.get("group", GroupKind.AUTO),
        path=path,
        seed_watchdog=watchdog,
        gateway_hold=given.get("gateway_hold", Config.gateway_hold),
        health=health,
        metered_tier=given.get("metered_tier", Config.metered_tier),
        require_full_connectivity=given.get("require_full_connectivity", Config.require_full_connectivity),
        hooks_dir=given.get("hooks_dir", Config.hooks_dir),
        flush_lower_tiers=given.get("flush_lower_tiers", Config.flush_lower_tiers),
        nat=given.get("nat", Config.nat),
        sticky=sticky,
        mss_clamp=given.get("mss_clamp", Config.mss_clamp),
        nat66=given.get("nat66", Config.nat66),
        pins=pins,
        metrics=given.get("metrics"),
        mode=given.get("mode", Config.mode),
        resilient_timers=_resolved_timers(given.get("resilient", {}), sticky),
    )


def _yaml_nat(node: Node, where: _Where) -> str:
    nat = _yaml_string(node, where, "nat")
    if nat not in NAT_MODES:
        raise where.error(f"unknown nat mode {_show(nat)}: choose {', '.join(NAT_MODES)}")
    return nat


def _yaml_top_weight(node: Node, where: _Where) -> tuple[bool, int | None]:
    """The weight of links that give none: (auto, the number when not auto)."""
    auto = _is_auto(node)
    return auto, None if auto else _yaml_weight(node, where)


def _choice_of(kind: type[_Choice]) -> Callable[[Node, _Where], _Choice]:
    def parse(node: Node, where: _Where) -> _Choice:
        return _parse_choice(_yaml_string(node, where, where.key), kind, where, where.key)

    return parse


def _yaml_timers(node: Node, where: _Where, path: str) -> dict[str, int]:
    """resilient: {idle_timer: S, unbalanced_timer: S}, whole seconds; either may be left out."""
    if not isinstance(node, MappingNode):
        raise where.error(
            f"resilient must be a mapping of idle_timer and unbalanced_timer, not {_kind(node)}"
        )
    timers = {}
    for name, value in _items(node, "resilient", RESILIENT_KEYS, path):
        low = 1 if name == "idle_timer" else 0  # an unbalanced_timer of 0 never forces a busy bucket
        timers[name] = _yaml_whole(
            value, _Where(path, _line(value), f"resilient.{name}"), name, low, c.RES_TIMER_MAX_S
        )
    return timers


def _resolved_timers(given: dict[str, int], sticky: bool) -> c.ResilientTimers | None:
    """The timers the config sets, the one it leaves out taken from sticky's default; None if none."""
    if not given:
        return None
    default = c.RES_TIMERS_STICKY if sticky else c.RES_TIMERS_UNSTICKY
    return c.ResilientTimers(
        idle_s=given.get("idle_timer", default.idle_s),
        unbalanced_s=given.get("unbalanced_timer", default.unbalanced_s),
    )


def _yaml_seconds(
    node: Node,
    where: _Where,
    maximum: float,
    *,
    above_zero: bool = False,
    unit: str = "s",
    what: str = "seconds",
) -> float:
    """A duration in seconds: a plain number 0..maximum (no booleans, no strings).

    above_zero: 0 itself is refused too (a probe interval of 0 s is no interval).
    """
    text = node.value if isinstance(node, ScalarNode) else None
    if not isinstance(node, ScalarNode) or node.tag not in (
        "tag:yaml.org,2002:int",
        "tag:yaml.org,2002:float",
    ):
        raise ConfigError(
            where.path, where.line, where.key, f"expected a number of {what}, not {_kind(node)}"
        )
    try:
        seconds = float(str(text))
    except ValueError:
        raise ConfigError(
            where.path, where.line, where.key, f"expected a number of {what}, not {_show(str(text))}"
        ) from None
    if above_zero and not 0 < seconds <= maximum:
        raise where.error(f"{_number(seconds)} {unit} is out of range: more than 0, at most {maximum:g}")
    if not 0 <= seconds <= maximum:
        raise ConfigError(
            where.path, where.line, where.key, f"{seconds:g} {unit} is out of range: 0 to {maximum:g}"
        )
    return seconds


def _reject_aliases(node: Node, key: str, path: str) -> None:
    """Refuse aliases anywhere, naming where they are (depth is bounded by MAX_DEPTH)."""
    if isinstance(node, _AliasNode):
        alias = _escape(str(node.value))
        raise ConfigError(
            path, _line(node), key, f"YAML aliases (*{alias}) are not supported: write the value out"
        )
    if isinstance(node, SequenceNode):
        for index, item in enumerate(node.value, 1):
            _reject_aliases(item, f"{key}[{index}]", path)
    elif isinstance(node, MappingNode):
        for key_node, value_node in node.value:
            _reject_aliases(key_node, key, path)
            name = str(key_node.value) if isinstance(key_node, ScalarNode) else "?"
            _reject_aliases(value_node, _join(key, name), path)


def _items(mapping: MappingNode, prefix: str, known: Sequence[str], path: str) -> Iterator[tuple[str, Node]]:
    """(key, value node) pairs in file order, refusing odd, unknown and repeated keys.

    A generator, so that the caller checks each value before the next key and
    the first problem reported is the first one in the file.
    """
    first_line: dict[str, int] = {}
    for key_node, value_node in mapping.value:
        if not isinstance(key_node, ScalarNode):
            raise ConfigError(path, _line(key_node), prefix, "a key must be a word, not a list or mapping")
        name = str(key_node.value)
        where = _Where(path, _line(key_node), _join(prefix, name))
        if name in first_line:
            raise where.error(f"duplicate key {_show(name)} (first given at line {first_line[name]})")
        if name not in known:
            hint = _did_you_mean(name, known) or f" (known keys: {', '.join(known)})"
            raise where.error(f"unknown key {_show(name)}{hint}")
        first_line[name] = where.line
        yield name, value_node


def _yaml_string(node: Node, where: _Where, what: str) -> str:
    if isinstance(node, ScalarNode) and node.tag == _STR:
        return str(node.value)
    hint = ": put it in quotes" if isinstance(node, ScalarNode) and node.tag in (_INT, _FLOAT, _BOOL) else ""
    raise where.error(f"{what} must be a string, not {_kind(node)}{hint}")


def _yaml_links(node: Node, where: _Where) -> list[tuple[LinkConfig, _Draft]]:
    """Each link, with its draft (did it give a weight, where is its capacity) for _with_weights."""
    if not isinstance(node, SequenceNode):
        raise where.error(f"links must be a list of links ('- interface: eth1'), not {_kind(node)}")
    if not node.value:
        raise where.error("links is empty: give at least one link")
    seen: dict[str, int] = {}
    ids: dict[int, tuple[str, int]] = {}  # id -> (interface, line)
    links = []
    for index, item in enumerate(node.value, 1):
        draft = _yaml_link(item, _Where(where.path, _line(item), f"links[{index}]"))
        if draft.link_id is not None and draft.link_id_at is not None:
            if draft.link_id in ids:
                other, line = ids[draft.link_id]
                raise draft.link_id_at.error(
                    f"id {draft.link_id} is already {other}'s (line {line}): each link needs an id of its own"
                )
            ids[draft.link_id] = (draft.interface, draft.line)
        links.append((_finish_link(draft, seen), draft))
    _check_delegated_to([draft for _, draft in links])
    return links


def _check_delegated_to(drafts: Sequence[_Draft]) -> None:
    """Each LAN interface takes one ISP's delegation, and is not itself a WAN of the config."""
    owner: dict[str, str] = {}
    for draft in drafts:
        if draft.delegated_to and is_glob(draft.interface):
            raise draft.delegated_to[0][1].error(
                f"a glob ({_show(draft.interface)}) matches many links, and a LAN interface takes one "
                "ISP's prefix: give delegated_to on an entry of its own for that interface"
            )
        for name, at in draft.delegated_to:
            if name in owner:
                raise at.error(
                    f"{name} is already numbered from {owner[name]}'s delegation: a LAN interface "
                    "takes one ISP's prefix (give each ISP a LAN interface of its own)"
                )
            wan = next((d.interface for d in drafts if fnmatch.fnmatchcase(name, d.interface)), None)
            if wan is not None:
                shown_wan = "" if wan == name else f" (as {_show(wan)})"
                raise at.error(f"{name} is a link of this config{shown_wan}, not a LAN interface")
            owner[name] = draft.interface


def _with_weights(
    links: list[tuple[LinkConfig, _Draft]], default_weight: int | None, default_auto: bool
) -> tuple[LinkConfig, ...]:
    """The links, one without a weight of its own taking the top-level `weight:`."""
    done = []
    for link, draft in links:
        if not draft.weight_given:
            link = replace(link, weight=default_weight or link.weight, auto_weight=default_auto)
        if draft.capacity_at is not None and not link.auto_weight:
            raise draft.capacity_at.error(
                f"capacity is read only with weight: auto (this link's weight is {link.weight}): "
                "give weight: auto, or remove capacity"
            )
        done.append(link)
    return tuple(done)


def _is_auto(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == _STR and str(node.value).strip().lower() == "auto"


def _yaml_capacity(node: Node, where: _Where) -> Capacity:
    """capacity: 20mbit (both ways) or {down: 20mbit, up: 2mbit}."""
    if isinstance(node, MappingNode):
        rates = {}
        for name, value in _items(node, where.key, CAPACITY_KEYS, where.path):
            rates[name] = _rate(value, _Where(where.path, _line(value), f"{where.key}.{name}"))
        if not rates:
            raise where.error("capacity gives no rate: give down:, up: or both, or one rate for both ways")
        return Capacity(down_bps=rates.get("down"), up_bps=rates.get("up"))
    rate = _rate(node, where)
    return Capacity(down_bps=rate, up_bps=rate)


def _rate(node: Node, where: _Where) -> float:
    """A rate as tc writes one: 500kbit, 20mbit, 1.5gbit (bits a second; "/s" may follow)."""
    text = str(node.value).strip() if isinstance(node, ScalarNode) else ""
    found = re.fullmatch(r"([0-9]+(?:\.[0-9]+)?)\s*([kmgKMG]bit)(?:/s)?", text)
    if not isinstance(node, ScalarNode) or found is None:
        shown = _show(text) if isinstance(node, ScalarNode) else _kind(node)
        raise where.error(
            f"capacity must be a rate such as 20mbit, 500kbit or 1gbit (or down:/up: rates), not {shown}"
        )
    bps = float(found.group(1)) * CAPACITY_UNITS[found.group(2).lower()]
    if not 0 < bps <= CAPACITY_MAX_BPS:
        raise where.error(f"capacity {_show(text)} is out of range: give more than 0 and at most 1000gbit")
    return bps


def _yaml_link(node: Node, where: _Where) -> _Draft:
    if not isinstance(node, MappingNode):
        is_word = isinstance(node, ScalarNode) and node.tag == _STR
        hint = ": did you mean '- interface: ...'?" if is_word else ""
        raise where.error(f"a link must be a mapping with an interface, not {_kind(node)}{hint}")
    draft = _Draft(interface="", interface_at=where, line=where.line)
    have_interface = False
    for name, value in _items(node, where.key, LINK_KEYS, where.path):
        value_at = _Where(where.path, _line(value), f"{where.key}.{name}")
        if name == "interface":
            draft.interface = _check_interface(_yaml_string(value, value_at, name), value_at)
            draft.interface_at = value_at
            have_interface = True
        elif name == "weight":
            draft.weight_given = True
            if _is_auto(value):
                draft.auto_weight = True
            else:
                draft.weight = _yaml_weight(value, value_at)
        elif name == "capacity":
            draft.capacity, draft.capacity_at = _yaml_capacity(value, value_at), value_at
        elif name == "tier":
            draft.tier = _yaml_whole(value, value_at, name, c.TIER_MIN, c.TIER_MAX)
        elif name == "gateway":
            texts = _yaml_texts(value, value_at, name)
            draft.gateways = [(_parse_address(text, at, "gateway"), at) for text, at in texts]
        elif name == "health":
            draft.health = _yaml_health(value, value_at)
        elif name == "delegated":
            draft.delegated = tuple(_delegated(t, at) for t, at in _yaml_texts(value, value_at, name))
        elif name == "delegated_to":
            draft.delegated_to = [
                (_check_interface(t, at, glob=False), at) for t, at in _yaml_texts(value, value_at, name)
            ]
        elif name == "tunnel_mark":
            draft.tunnel_mark = _yaml_mark(value, value_at)
        elif name == "nat_address":
            address = _parse_address(_yaml_string(value, value_at, name), value_at, "nat_address")
            if not isinstance(address, ipaddress.IPv4Address):
                raise value_at.error(f"nat_address {address} is IPv6: only an IPv4 address is NATed to")
            draft.nat_address = address
        elif name == "id":
            draft.link_id = _yaml_whole(value, value_at, name, c.LINK_ID_MIN, c.LINK_ID_MAX)
            draft.link_id_at = value_at
        else:
            texts = _yaml_texts(value, value_at, name)
            draft.networks = [(_parse_network(text, at), at) for text, at in texts]
    if not have_interface:
        missing = _Where(where.path, where.line, f"{where.key}.interface")
        raise missing.error("missing: every link needs an interface")
    if draft.link_id_at is not None and is_glob(draft.interface):
        raise draft.link_id_at.error(
            f"a glob ({_show(draft.interface)}) matches many links, and an id names one: "
            "give the id on an entry of its own for that interface"
        )
    return draft


def _yaml_listen(node: Node, where: _Where) -> tuple[str, int] | None:
    """metrics: true (127.0.0.1:9737), false, or "address:port" ("[::1]:9737" for IPv6)."""
    if isinstance(node, ScalarNode) and node.tag == _BOOL:
        return (c.METRICS_ADDRESS, c.METRICS_PORT) if _yaml_bool(node, where) else None
    text = _yaml_string(node, where, "metrics").strip()
    found = re.fullmatch(r"\[?([0-9A-Fa-f:.]+?)\]?:([0-9]{1,5})", text)
    if found is None:
        raise where.error(f"metrics must be true, false or address:port (127.0.0.1:9737), not {_show(text)}")
    try:
        address = ipaddress.ip_address(found.group(1))
    except ValueError:
        raise where.error(f"metrics address {_show(found.group(1))} is not an IP address") from None
    # The endpoint has no authentication and shows the routing state (links,
    # health, gateways, traffic): listening on every address would show it to
    # every network the host is on, the WANs included.  ::ffff:0.0.0.0 is the
    # IPv4 wildcard on a dual-stack socket.
    mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
    if address.is_unspecified or (mapped is not None and mapped.is_unspecified):
        raise where.error(
            f"metrics address {address} listens on every address, the WANs included, and the endpoint "
            "has no authentication: give a specific address (127.0.0.1, or the LAN address)"
        )
    port = int(found.group(2))
    if not 1 <= port <= 65535:
        raise where.error(f"metrics port {port} is not 1-65535")
    return str(address), port


def _yaml_pins(node: Node, where: _Where) -> tuple[Pin, ...]:
    if not isinstance(node, SequenceNode):
        raise where.error(f"pins must be a list ('- {{to: 198.51.100.0/24, link: eth1}}'), not {_kind(node)}")
    if len(node.value) > c.MAX_PINS:
        raise where.error(f"{len(node.value)} pins: at most {c.MAX_PINS} (one rule priority each)")
    return tuple(
        _yaml_pin(item, _Where(where.path, _line(item), f"pins[{index}]"))
        for index, item in enumerate(node.value, 1)
    )


def _yaml_pin(node: Node, where: _Where) -> Pin:
    """One pin: what it selects (to, from, proto, port), where it goes (link or tier), when_down."""
    if not isinstance(node, MappingNode):
        raise where.error(
            f"a pin must be a mapping such as {{to: 198.51.100.0/24, link: eth1}}, not {_kind(node)}"
        )
    pin = Pin(line=where.line)
    port_at: _Where | None = None
    for name, value in _items(node, where.key, PIN_KEYS, where.path):
        at = _Where(where.path, _line(value), f"{where.key}.{name}")
        if name in ("to", "from"):
            prefixes = tuple(_pin_prefix(text, w) for text, w in _yaml_texts(value, at, name))
            pin = replace(pin, to=prefixes) if name == "to" else replace(pin, sources=prefixes)
        elif name == "proto":
            proto = _yaml_string(value, at, name).lower()
            if proto not in PIN_PROTOCOLS:
                raise at.error(f"unknown protocol {_show(proto)}: choose {', '.join(PIN_PROTOCOLS)}")
            pin = replace(pin, proto=PIN_PROTOCOLS[proto])
        elif name == "port":
            pin, port_at = replace(pin, ports=_pin_ports(value, at)), at
        elif name == "link":
            pin = replace(pin, link=_check_interface(_yaml_string(value, at, name), at))
        elif name == "tier":
            pin = replace(pin, tier=_yaml_whole(value, at, name, c.TIER_MIN, c.TIER_MAX))
        else:
            pin = replace(pin, fail_closed=_parse_when_down(_yaml_string(value, at, name), at))
    if (pin.link is None) == (pin.tier is None):
        raise where.error("a pin needs exactly one of link: (an interface) and tier: (1-5)")
    if not (pin.to or pin.sources or pin.proto is not None):
        raise where.error("a pin must select something: give to:, from:, or proto: (and port:)")
    if port_at is not None and pin.proto not in PORTED_PROTOCOLS:
        raise port_at.error("port: needs proto: tcp, udp or sctp")
    families = {p.version for p in pin.to} & {p.version for p in pin.sources}
    if pin.to and pin.sources and not families:
        raise where.error("to: and from: share no address family: the pin could never match")
    if pin.proto in (1, 58) and any(p.version != (4 if pin.proto == 1 else 6) for p in pin.to + pin.sources):
        raise where.error("proto: icmp is IPv4's and icmpv6 is IPv6's: the prefixes must match it")
    return pin


def _check_pin_targets(pins: Sequence[Pin], links: Sequence[LinkConfig], path: str) -> None:
    """A pin's link must be one the config manages (a name, or a glob some entry can match)."""
    for index, pin in enumerate(pins, 1):
        name = pin.link
        if name is None or any(
            entry.interface == name
            or fnmatch.fnmatchcase(entry.interface, name)
            or (entry.is_glob and fnmatch.fnmatchcase(name, entry.interface))
            or (entry.is_glob and is_glob(name))
            for entry in links
        ):
            continue
        known = ", ".join(entry.interface for entry in links)
        raise ConfigError(
            path, pin.line, f"pins[{index}].link", f"{_show(name)} is none of the links ({known})"
        )


def _check_delegated(links: Sequence[LinkConfig], path: str) -> None:
    """Delegated prefixes never overlap: each source prefix must name one ISP.

    Two prefixes overlap only when one contains the other, so each prefix is
    checked against those before it with set lookups, not pairwise (3,000
    prefixes took seconds that way): is one of its own supernets among them,
    or is it a supernet of one of them?  Only the lengths the config uses are
    looked at, so that is a few lookups a prefix.  The error is the one the
    pairwise check gave: the first prefix, in file order, that overlaps an
    earlier one, and the first earlier one it overlaps.
    """
    ordered = [(index, entry, prefix) for index, entry in enumerate(links, 1) for prefix in entry.delegated]
    lengths = sorted({prefix.prefixlen for _, _, prefix in ordered})
    bits = ipaddress.IPV6LENGTH
    # (length, the address's top `length` bits): a prefix as a hashable pair of ints
    earlier: set[tuple[int, int]] = set()  # every prefix seen so far
    covered: set[tuple[int, int]] = set()  # their supernets, at each length in `lengths` (themselves too)
    for position, (index, entry, prefix) in enumerate(ordered):
        value, length = int(prefix.network_address), prefix.prefixlen
        if (length, value >> (bits - length)) in covered or any(
            (shorter, value >> (bits - shorter)) in earlier for shorter in lengths if shorter <= length
        ):
            other, owner = next(
                (p, e.interface) for _, e, p in ordered[:position] if prefix.overlaps(p)
            )  # once, on the way out: linear
            raise ConfigError(
                path, entry.line, f"links[{index}].delegated", f"{prefix} overlaps {other} ({owner})"
            )
        earlier.add((length, value >> (bits - length)))
        covered.update((shorter, value >> (bits - shorter)) for shorter in lengths if shorter <= length)


def _pin_prefix(text: str, where: _Where) -> IPNetwork:
    try:
        return ipaddress.ip_network(text)  # a bare address is a /32 or /128: one client or host
    except ValueError:
        pass
    try:
        loose = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise where.error(f"{_show(text)} is not an address or prefix such as 198.51.100.0/24") from None
    raise where.error(f"{_show(text)} has host bits set: did you mean {loose}?")


def _pin_ports(node: Node, where: _Where) -> tuple[int, int]:
    text = str(node.value).strip() if isinstance(node, ScalarNode) and node.tag in (_INT, _STR) else ""
    found = re.fullmatch(r"([0-9]{1,5})(?:\s*-\s*([0-9]{1,5}))?", text)
    if found is None:
        raise where.error(f"port must be a port or a range such as 5060-5061, not {_kind(node)}")
    first = int(found.group(1))
    last = int(found.group(2)) if found.group(2) else first
    if not 1 <= first <= last <= 65535:
        raise where.error(f"port {_show(text)}: ports are 1-65535, the first no greater than the last")
    return first, last


def _pin_yaml(pin: Pin) -> str:
    """One pin as a YAML flow mapping."""
    names = {number: name for name, number in PIN_PROTOCOLS.items()}
    parts = []
    if pin.to:
        parts.append("to: [" + ", ".join(f"'{p}'" for p in pin.to) + "]")
    if pin.sources:
        parts.append("from: [" + ", ".join(f"'{p}'" for p in pin.sources) + "]")
    if pin.proto is not None:
        parts.append(f"proto: {names[pin.proto]}")
    if pin.ports is not None:
        first, last = pin.ports
        parts.append(f"port: {first}" if first == last else f"port: '{first}-{last}'")
    parts.append(f"link: {_yaml_scalar(pin.link)}" if pin.link is not None else f"tier: {pin.tier}")
    if pin.fail_closed:
        parts.append("when_down: fail")
    return "{" + ", ".join(parts) + "}"


def _parse_when_down(text: str, where: _Where) -> bool:
    if text not in WHEN_DOWN:
        raise where.error(
            f"unknown when_down {_show(text)}: choose fallback (take the balance) or fail (refuse)"
        )
    return text == "fail"


def _yaml_mark(node: Node, where: _Where) -> int:
    """A firewall mark, decimal or 0x-hex as `wg` and `ip rule` print it, clear of the sticky byte."""
    text = str(node.value).strip() if isinstance(node, ScalarNode) and node.tag in (_INT, _STR) else ""
    try:
        mark = int(text.replace("_", ""), 0)
    except ValueError:
        raise where.error(f"tunnel_mark must be a mark such as 0xca6c, not {_kind(node)}") from None
    if not 1 <= mark <= TUNNEL_MARK_MAX:
        raise where.error(
            f"tunnel_mark {_show(text)}: must be 0x1-{TUNNEL_MARK_MAX:#x} "
            f"(the top byte, {c.STICKY_MARK_MASK:#x}, carries wanhooks' sticky connections)"
        )
    return mark


def _delegated(text: str, where: _Where) -> ipaddress.IPv6Network:
    """A prefix the ISP delegated: IPv6, and no longer than /64 (a LAN needs a /64)."""
    prefix = _pin_prefix(text, where)
    if not isinstance(prefix, ipaddress.IPv6Network):
        raise where.error(f"delegated {prefix} is IPv4: prefix delegation is IPv6's (e.g. 2001:db8:1::/56)")
    if not c.delegable(prefix.prefixlen):
        raise where.error(
            f"delegated {prefix}: an ISP delegates a /{c.DELEGATED_MIN_LENGTH} to a "
            f"/{c.DELEGATED_MAX_LENGTH} (give the prefix your DHCPv6-PD lease shows)"
        )
    return prefix


def _yaml_weight(node: Node, where: _Where) -> int:
    if isinstance(node, ScalarNode) and node.tag == _INT:
        return _weight_from_text(str(node.value), where)
    hint = ""
    if isinstance(node, ScalarNode) and node.tag == _STR and _DECIMAL.fullmatch(str(node.value).strip()):
        hint = ": write it without quotes"
    raise where.error(
        f"weight must be an integer from {WEIGHT_MIN} to {WEIGHT_MAX}, or auto, not {_kind(node)}{hint}"
    )


def _yaml_whole(node: Node, where: _Where, what: str, low: int, high: int) -> int:
    """A plain YAML integer low..high: no booleans, floats or quoted numbers."""
    if isinstance(node, ScalarNode) and node.tag == _INT:
        return _whole_from_text(str(node.value), where, what, low, high)
    hint = ""
    if isinstance(node, ScalarNode) and node.tag == _STR and _DECIMAL.fullmatch(str(node.value).strip()):
        hint = ": write it without quotes"
    raise where.error(f"{what} must be a whole number from {low} to {high}, not {_kind(node)}{hint}")


def _yaml_texts(node: Node, where: _Where, what: str) -> list[tuple[str, _Where]]:
    """The text of an address-like value given alone or as a list, each with its place."""
    if not isinstance(node, SequenceNode):
        return [(_yaml_address_text(node, where, what), where)]
    if not node.value:
        raise where.error(f"{what} is an empty list: leave the key out instead")
    texts = []
    for index, item in enumerate(node.value, 1):
        item_at = _Where(where.path, _line(item), f"{where.key}[{index}]")
        texts.append((_yaml_address_text(item, item_at, what), item_at))
    return texts


def _yaml_address_text(node: Node, where: _Where, what: str) -> str:
    # Plain IPv6 text such as 1:2:3:4:5:6:7:8 resolves to a YAML 1.1
    # sexagesimal int, so addresses are taken from the text, whatever its tag.
    if isinstance(node, ScalarNode) and node.tag in (_STR, _INT, _FLOAT):
        return str(node.value)
    raise where.error(f"{what} must be an address or a list of addresses, not {_kind(node)}")


def _yaml_watchdog(node: Node, where: _Where) -> SeedWatchdog:
    if not isinstance(node, MappingNode):
        raise where.error(f"watchdog must be a mapping with test_ips and enabled, not {_kind(node)}")
    test_ips: tuple[IPAddress, ...] = ()
    enabled: bool | None = None
    enabled_at = where
    for name, value in _items(node, "watchdog", WATCHDOG_KEYS, where.path):
        value_at = _Where(where.path, _line(value), f"watchdog.{name}")
        if name == "enabled":
            enabled, enabled_at = _yaml_bool(value, value_at), value_at
        else:
            texts = _yaml_texts(value, value_at, "test address")
            test_ips = tuple(_parse_address(t, w, "test address") for t, w in texts)
    return _watchdog(test_ips, enabled, enabled_at)


def _yaml_bool(node: Node, where: _Where) -> bool:
    # .get: an explicit "!!bool maybe" has the bool tag but no meaning.
    value = SWITCH_WORDS.get(str(node.value).lower()) if isinstance(node, ScalarNode) else None
    if node.tag == _BOOL and value is not None:
        return value
    raise where.error(f"must be true or false, not {_kind(node)}")


def _yaml_health(node: Node, where: _Where) -> HealthConfig:
    """A health section (top level or a link's): every key optional, checked within itself."""
    if not isinstance(node, MappingNode):
        raise where.error(
            f"health must be a mapping of probe settings (targets: [...], interval: ...), not {_kind(node)}"
        )
    targets: tuple[IPAddress, ...] | None = None
    seconds: dict[str, float] = {}
    silent_targets: int | None = None
    flags: dict[str, bool] = {}
    budget: float | None = None
    max_loss: float | None = None
    kind: str | None = None
    port: int | None = None
    query: str | None = None
    placed: dict[str, _Where] = {}
    for name, value in _items(node, where.key, HEALTH_KEYS, where.path):
        value_at = placed[name] = _Where(where.path, _line(value), f"{where.key}.{name}")
        if name == "targets":
            targets = _yaml_targets(value, value_at)
        elif name == "silent_targets":
            silent_targets = _yaml_silent_targets(value, value_at)
        elif name in ("enabled", "passive"):
            flags[name] = _yaml_bool(value, value_at)
        elif name == "budget_mb_per_day":
            budget = _yaml_seconds(
                value, value_at, BUDGET_MAX_MB, above_zero=True, unit="MB", what="megabytes"
            )
        elif name == "max_loss":
            max_loss = _yaml_seconds(value, value_at, 100.0, unit="%", what="percent")
        elif name == "kind":
            kind = _yaml_string(value, value_at, "kind")
            if kind not in PROBE_KINDS:
                raise value_at.error(f"unknown probe kind {_show(kind)}: choose {', '.join(PROBE_KINDS)}")
        elif name == "port":
            port = _yaml_whole(value, value_at, "port", 1, PORT_MAX)
        elif name == "query":
            query = _dns_name(_yaml_string(value, value_at, "query"), value_at)
        else:
            maximum, above_zero = HEALTH_SECONDS[name]
            seconds[name] = _yaml_seconds(value, value_at, maximum, above_zero=above_zero)
    interval, down_after = seconds.get("interval"), seconds.get("down_after")
    if interval is not None and down_after is not None and down_after <= interval:
        raise placed["down_after"].error(
            f"down_after {_number(down_after)} s must be longer than the probe interval {_number(interval)} s"
        )
    if targets and silent_targets is not None and silent_targets > len(targets):
        raise placed["silent_targets"].error(
            f"silent_targets {silent_targets} is more than the {_targets(len(targets))} given"
        )
    for name, needs in (("port", ("tcp", "dns")), ("query", ("dns",))):
        if name in placed and kind is not None and kind not in needs:
            raise placed[name].error(f"{name} applies to {' and '.join(needs)} probes, not to kind {kind}")
    return HealthConfig(
        targets=targets,
        interval=interval,
        heartbeat=seconds.get("heartbeat"),
        down_after=down_after,
        up_after=seconds.get("up_after"),
        hold_down=seconds.get("hold_down"),
        silent_targets=silent_targets,
        enabled=flags.get("enabled"),
        budget_mb_per_day=budget,
        kind=kind,
        port=port,
        query=query,
        max_rtt=seconds.get("max_rtt"),
        max_loss=max_loss,
        loss_window=seconds.get("loss_window"),
        passive=flags.get("passive"),
    )


def _dns_name(text: str, where: _Where) -> str:
    """A domain name to ask for: "." or dot-separated labels of letters, digits, - and _."""
    name = text.strip()
    if name == ".":
        return name
    labels = name.rstrip(".").split(".")
    if len(name) > DNS_NAME_MAX or not all(DNS_LABEL.fullmatch(label) for label in labels):
        raise where.error(
            f"query {_show(text)} is not a domain name (labels of letters, digits, '-' and '_', "
            f"1-63 characters each, {DNS_NAME_MAX} in all; '.' asks for the root)"
        )
    return name


def _yaml_targets(node: Node, where: _Where) -> tuple[IPAddress, ...]:
    """Probe targets: an address or a list of them, each once; [] means none (do not probe)."""
    if isinstance(node, SequenceNode) and not node.value:
        return ()
    first: dict[IPAddress, str] = {}
    for text, at in _yaml_texts(node, where, "target"):
        address = _parse_address(text, at, "target")
        if address in first:
            raise at.error(f"duplicate target {address}: it is already {first[address]}")
        first[address] = at.key.rsplit(".", 1)[-1]
    return tuple(first)


def _yaml_silent_targets(node: Node, where: _Where) -> int:
    if isinstance(node, ScalarNode) and node.tag == _INT:
        text = str(node.value)
        if not _DECIMAL.fullmatch(text):
            raise where.error(f"silent_targets must be a whole number, not {_show(text)}")
        if len(text) > SILENT_TARGETS_DIGITS:
            raise where.error(f"silent_targets {_show(text)} is more than any list of targets holds")
        count = int(text)
        if count < 1:
            raise where.error(
                f"silent_targets {count} is too few: give 1 or more (leave it out to mean all targets)"
            )
        return count
    hint = ""
    if isinstance(node, ScalarNode) and node.tag == _STR and _DECIMAL.fullmatch(str(node.value).strip()):
        hint = ": write it without quotes"
    raise where.error(f"silent_targets must be a whole number of targets, 1 or more, not {_kind(node)}{hint}")


def _check_links_health(links: Sequence[LinkConfig], top: HealthConfig, top_name: str, path: str) -> None:
    """The rules of one section, again for what each link ends up with (HealthConfig.resolved)."""
    for index, link in enumerate(links, 1):
        own = link.health or HealthConfig()
        health = own.resolved(top)
        if not health.targets or not health.enabled:
            continue  # not probed: nothing to judge
        where = _Where(path, link.line, f"links[{index}].health")
        sources = {name: _health_source(name, own, top, top_name) for name in HEALTH_KEYS}
        interval, down_after = health.interval, health.down_after
        if interval is not None and down_after is not None and down_after <= interval:
            raise where.error(
                f"down_after {_number(down_after)} s ({sources['down_after']}) must be longer than "
                f"the probe interval {_number(interval)} s ({sources['interval']})"
            )
        if health.silent_targets is not None and health.silent_targets > len(health.targets):
            raise where.error(
                f"silent_targets {health.silent_targets} ({sources['silent_targets']}) is more than "
                f"the {_targets(len(health.targets))} ({sources['targets']})"
            )
        for name, needs in (("port", ("tcp", "dns")), ("query", ("dns",))):
            if getattr(own, name) is None and getattr(top, name) is None:
                continue
            if health.kind not in needs:
                raise where.error(
                    f"{name} ({sources[name]}) applies to {' and '.join(needs)} probes, "
                    f"not to kind {health.kind} ({sources['kind']})"
                )


def _health_source(name: str, own: HealthConfig, top: HealthConfig, top_name: str) -> str:
    """Where a link's resolved health value came from, for messages."""
    if getattr(own, name) is not None:
        return "set here"
    return f"from {top_name}" if getattr(top, name) is not None else "the default"


def _targets(count: int) -> str:
    return f"{count} target" if count == 1 else f"{count} targets"


def _health_of_watchdog(watchdog: SeedWatchdog) -> HealthConfig:
    """The health section the seed's TESTIPS/WATCHDOG (or YAML's watchdog:) mean.

    The 2011 script pinged every test address through every link; the
    prober does the same with the targets.
    """
    if watchdog.enabled:
        return HealthConfig(targets=watchdog.test_ips)
    return HealthConfig(targets=watchdog.test_ips or None, enabled=False)


def _watchdog_of_health(health: HealthConfig) -> SeedWatchdog:
    """seed_watchdog for a config with health: the inverse of _health_of_watchdog."""
    test_ips = health.targets or ()
    return SeedWatchdog(test_ips=test_ips, enabled=bool(test_ips) and health.enabled is not False)


# --------------------------------------------------------------------------
# The seed's column file
# --------------------------------------------------------------------------


@dataclass(frozen=True)
class _Assignment:
    value: str
    line: int


def _config_from_seed(text: str, path: str) -> Config:
    found = _seed_assignments(text, path)
    if "WANIFACE" not in found:  # unreachable through parse_config, kept for safety
        raise ConfigError(path, 0, "WANIFACE", "WANIFACE is required")
    wan = found["WANIFACE"]
    interfaces = wan.value.split()
    if not interfaces:
        raise ConfigError(path, wan.line, "WANIFACE", "WANIFACE lists no interfaces")
    columns = {name: _seed_columns(name, found.get(name), len(interfaces), path) for name in SEED_COLUMNS}
    wan_columns = _Columns(interfaces, wan.line)
    seen: dict[str, int] = {}
    links = tuple(
        _finish_link(_seed_link(index, wan_columns, columns, path), seen) for index in range(len(interfaces))
    )
    balance = SEED_BALANCE  # the 2011 script's: its multipath route kept each destination on one link
    if "BALANCE" in found:
        assignment = found["BALANCE"]
        where = _Where(path, assignment.line, "BALANCE")
        balance = _parse_choice(assignment.value.strip(), BalanceMode, where, "BALANCE")
    watchdog = _seed_watchdog(found.get("TESTIPS"), found.get("WATCHDOG"), path)
    health = HealthConfig()
    if "TESTIPS" in found or "WATCHDOG" in found:
        health = _health_of_watchdog(watchdog)
    return Config(links=links, balance=balance, path=path, seed_watchdog=watchdog, health=health)


def _seed_assignments(text: str, path: str) -> dict[str, _Assignment]:
    """NAME -> value of every assignment; empty values count as not given."""
    found: dict[str, _Assignment] = {}
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.split("\n"), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _ASSIGNMENT.fullmatch(line)
        if match is None:
            raise ConfigError(
                path,
                number,
                "",
                "not a NAME=value assignment: a generic-balancer.sh column file may only "
                'assign variables (WANIFACE="eth1 eth2", GATEWAYS=..., ...)',
            )
        name, raw = match.groups()
        where = _Where(path, number, name)
        if name not in SEED_VARIABLES:
            hint = _did_you_mean(name, SEED_VARIABLES) or f" (known: {', '.join(SEED_VARIABLES)})"
            raise where.error(f"unknown variable {_show(name)}{hint}")
        if name in first_line:
            raise where.error(f"{name} is assigned twice (first at line {first_line[name]})")
        first_line[name] = number
        value = _shell_value(raw, where)
        if value.strip() or name == "WANIFACE":
            found[name] = _Assignment(value, number)
    return found


def _shell_value(raw: str, where: _Where) -> str:
    """What sh would assign for NAME=raw, refusing anything that needs a shell to decide."""
    parts: list[str] = []
    index = 0
    while index < len(raw):
        char = raw[index]
        if char in "\"'":
            end = raw.find(char, index + 1)
            if end < 0:
                raise where.error(
                    f"unterminated quote ({char}): a value must close its quote on the same line"
                )
            parts.append(_check_literal(raw[index + 1 : end], where))
            index = end + 1
        elif char.isspace() or char == "#":
            break
        elif char in _SHELL_SYNTAX:
            raise where.error(f"shell syntax {char!r} is not supported: quote the value")
        else:
            parts.append(_check_literal(char, where))
            index += 1
    rest = raw[index:].strip()
    if rest and not rest.startswith("#"):
        raise where.error(f"unexpected {_show(rest)} after the value: quote a value that holds spaces")
    return "".join(parts)


def _check_literal(text: str, where: _Where) -> str:
    # '$' and '`' are refused even inside single quotes, where sh would keep
    # them literally: no valid value contains them, and a config that looks
    # like it expands something must not be read as if it did not.
    if "$" in text or "`" in text:
        raise where.error("shell expansion ($, `...`, $(...)) is not supported: write the value out")
    if "\\" in text:
        raise where.error("backslash escapes are not supported: write the value out")
    return text


@dataclass(frozen=True)
class _Columns:
    values: list[str]
    line: int


def _seed_columns(name: str, assignment: _Assignment | None, count: int, path: str) -> _Columns | None:
    if assignment is None:
        return None
    values = assignment.value.split()
    if len(values) != count:
        noun = "column" if len(values) == 1 else "columns"
        where = _Where(path, assignment.line, name)
        raise where.error(f"{name} has {len(values)} {noun} but WANIFACE has {count}")
    return _Columns(values, assignment.line)


def _seed_link(index: int, wan: _Columns, columns: dict[str, _Columns | None], path: str) -> _Draft:
    """Link number index (0-based) from the columns; its line is the WANIFACE line."""

    def at(name: str, line: int) -> _Where:
        return _Where(path, line, f"{name}[{index + 1}]")

    interface_at = at("WANIFACE", wan.line)
    interface = wan.values[index]
    if interface == NOT_GIVEN:
        raise interface_at.error("WANIFACE must name an interface: '-' is only for the other columns")
    draft = _Draft(_check_interface(interface, interface_at), interface_at, wan.line)
    weights, gateways, networks = columns["WEIGHTS"], columns["GATEWAYS"], columns["NETWORKS"]
    if weights and weights.values[index] != NOT_GIVEN:
        draft.weight = _weight_from_text(weights.values[index], at("WEIGHTS", weights.line))
    tiers = columns["TIERS"]
    if tiers and tiers.values[index] != NOT_GIVEN:
        draft.tier = _tier_from_text(tiers.values[index], at("TIERS", tiers.line))
    if gateways and gateways.values[index] != NOT_GIVEN:
        where = at("GATEWAYS", gateways.line)
        draft.gateways = [(_parse_address(gateways.values[index], where, "gateway"), where)]
    if networks and networks.values[index] != NOT_GIVEN:
        where = at("NETWORKS", networks.line)
        draft.networks = [(_parse_network(networks.values[index], where), where)]
    return draft


def _seed_watchdog(testips: _Assignment | None, switch: _Assignment | None, path: str) -> SeedWatchdog:
    test_ips: tuple[IPAddress, ...] = ()
    if testips is not None:
        test_ips = tuple(
            _parse_address(text, _Where(path, testips.line, f"TESTIPS[{number}]"), "test address")
            for number, text in enumerate(testips.value.split(), 1)
        )
    enabled: bool | None = None
    where = _Where(path, testips.line if testips else 0, "TESTIPS")
    if switch is not None:
        where = _Where(path, switch.line, "WATCHDOG")
        word = switch.value.strip().lower()
        if word not in SWITCH_WORDS:
            allowed = ", ".join(SWITCH_WORDS)
            raise where.error(f"WATCHDOG {_show(switch.value.strip())} is not one of {allowed}")
        enabled = SWITCH_WORDS[word]
    return _watchdog(test_ips, enabled, where)


# --------------------------------------------------------------------------
# Writing YAML
# --------------------------------------------------------------------------


def _link_yaml(link: LinkConfig) -> list[str]:
    weight = "auto" if link.auto_weight else str(link.weight)
    lines = [f"  - interface: {_yaml_scalar(link.interface)}", f"    weight: {weight}"]
    if link.capacity is not None:
        lines.append(f"    capacity: {_capacity_yaml(link.capacity)}")
    gateways = [str(a) for a in (link.gateway4, link.gateway6) if a is not None]
    if gateways:
        lines.append(f"    gateway: {_yaml_one_or_list(gateways)}")
    networks = [str(n) for n in (link.network4, link.network6) if n is not None]
    if networks:
        lines.append(f"    network: {_yaml_one_or_list(networks)}")
    if link.tier is not None:
        lines.append(f"    tier: {link.tier}")
    if link.delegated:
        lines.append(f"    delegated: {_yaml_one_or_list([str(p) for p in link.delegated])}")
    if link.delegated_to:
        lines.append(f"    delegated_to: {_yaml_one_or_list(list(link.delegated_to))}")
    if link.tunnel_mark is not None:
        lines.append(f"    tunnel_mark: {link.tunnel_mark:#x}")
    if link.link_id is not None:
        lines.append(f"    id: {link.link_id}")
    if link.nat_address is not None:
        lines.append(f"    nat_address: {link.nat_address}")
    if link.health is not None:
        lines += _health_yaml(link.health, "    ")
    return lines


def _capacity_yaml(capacity: Capacity) -> str:
    def rate(bps: float) -> str:
        for unit, size in sorted(CAPACITY_UNITS.items(), key=lambda item: -item[1]):
            if bps >= size:
                return f"{bps / size:.12g}{unit}"  # 12 digits: read back as the same rate
        return f"{bps / 1e3:.12g}kbit"

    if capacity.down_bps == capacity.up_bps and capacity.down_bps is not None:
        return rate(capacity.down_bps)
    given = {"down": capacity.down_bps, "up": capacity.up_bps}
    return "{" + ", ".join(f"{name}: {rate(bps)}" for name, bps in given.items() if bps is not None) + "}"


def _health_yaml(health: HealthConfig, indent: str) -> list[str]:
    """A health section's lines: only the keys that are set, as parse_config reads them back."""
    body = []
    if health.targets is not None:
        body.append(f"targets: {_yaml_list([str(a) for a in health.targets])}")
    numbers = {
        "interval": health.interval,
        "heartbeat": health.heartbeat,
        "down_after": health.down_after,
        "up_after": health.up_after,
        "hold_down": health.hold_down,
        "max_rtt": health.max_rtt,
        "max_loss": health.max_loss,
        "loss_window": health.loss_window,
        "budget_mb_per_day": health.budget_mb_per_day,
    }
    body += [f"{name}: {_number(value)}" for name, value in numbers.items() if value is not None]
    plain = {
        "silent_targets": health.silent_targets,
        "kind": health.kind,
        "port": health.port,
        "query": _yaml_scalar(health.query) if health.query is not None else None,
    }
    body += [f"{name}: {value}" for name, value in plain.items() if value is not None]
    flags = {"enabled": health.enabled, "passive": health.passive}
    body += [f"{name}: {_yaml_boolean(value)}" for name, value in flags.items() if value is not None]
    if not body:
        return [f"{indent}health: {{}}"]
    return [f"{indent}health:"] + [f"{indent}  {line}" for line in body]


def _watchdog_yaml(watchdog: SeedWatchdog) -> list[str]:
    if watchdog == SeedWatchdog():
        return []
    lines = ["watchdog:"]
    if watchdog.test_ips:
        lines.append(f"  test_ips: {_yaml_list([str(a) for a in watchdog.test_ips])}")
    lines.append(f"  enabled: {_yaml_boolean(watchdog.enabled)}")
    return lines


def _yaml_boolean(value: bool) -> str:
    return "true" if value else "false"


def _number(value: float) -> str:
    """A number of seconds, shortest first, as text that YAML 1.1 reads back as the same number."""
    text = f"{value:g}"
    if float(text) != value:
        text = repr(float(value))
    mantissa, exponent, power = text.partition("e")
    if exponent and "." not in mantissa:
        text = f"{mantissa}.0e{power}"  # YAML 1.1 reads 1e-05 as a string, 1.0e-05 as a float
    return text


def _yaml_one_or_list(texts: list[str]) -> str:
    return _yaml_scalar(texts[0]) if len(texts) == 1 else _yaml_list(texts)


def _yaml_list(texts: list[str]) -> str:
    return "[" + ", ".join(_yaml_scalar(text) for text in texts) + "]"


def _yaml_scalar(text: str) -> str:
    """text as a YAML scalar that reads back as the same string: plain when safe, else quoted."""
    if _PLAIN.fullmatch(text) and yaml.safe_load(text) == text:
        return text
    # A JSON string is a valid YAML double-quoted scalar; DEL, the one character JSON leaves
    # raw that YAML will not read unescaped, is escaped too.
    return json.dumps(text).replace("\x7f", "\\u007f")


# Each top-level key (config/schema.py's TOP) and what reads its value.  Here, at the end:
# the readers are defined above.
_TOP_PARSERS: dict[str, Callable[[Node, _Where], Any]] = {
    "links": _yaml_links,
    "balance": _choice_of(BalanceMode),
    "group": _choice_of(GroupKind),
    "mode": _choice_of(RunMode),
    "gateway_hold": lambda node, where: _yaml_seconds(node, where, GATEWAY_HOLD_MAX_S),
    "health": _yaml_health,
    "watchdog": _yaml_watchdog,
    "metered_tier": lambda node, where: _yaml_whole(
        node, where, "metered_tier", c.METERED_TIER_MIN, c.TIER_MAX
    ),
    "require_full_connectivity": _yaml_bool,
    "hooks_dir": lambda node, where: _check_hooks_dir(_yaml_string(node, where, "hooks_dir"), where),
    "flush_lower_tiers": _yaml_bool,
    "nat": _yaml_nat,
    "sticky": _yaml_bool,
    "weight": _yaml_top_weight,
    "resilient": lambda node, where: _yaml_timers(node, where, where.path),
    "mss_clamp": _yaml_bool,
    "pins": _yaml_pins,
    "nat66": _yaml_bool,
    "metrics": _yaml_listen,
}
