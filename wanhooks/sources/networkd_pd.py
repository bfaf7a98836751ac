"""Which uplink systemd-networkd numbers a LAN interface from (DHCPPrefixDelegation=).

networkd says it in two places a reader may use: the link's state file,
/run/systemd/netif/links/<ifindex> -- read by libsystemd's sd_network_link_
get_network_file(), which is how networkctl learns NETWORK_FILE= -- and the
.network file (with its drop-ins) that names the uplink:

    [Network]
    DHCPPrefixDelegation=yes
    [DHCPPrefixDelegation]
    UplinkInterface=wan1

UplinkInterface= takes a name, an ifindex, `:self` or `:auto` (the default).
networkd 252 exports the delegated prefix itself on neither D-Bus nor in its
state files (DHCPv6Client.Prefixes is v255's); the addresses it assigns are in
the kernel, which is where wanhooks reads them (plan/delegations.py).

`:auto` is networkd's own choice among its links with a DHCPv6 lease; it does
not say which.  wanhooks answers only when that choice cannot be wrong: one
of networkd's links is a DHCPv6 client, and it is a managed link.  Otherwise
`notes` says how to tell it (the daemon logs each note once).
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from ..plan.names import ifname_problem

STATE_DIR = Path("/run/systemd/netif/links")
_TRUE = {"yes", "true", "on", "1", "y", "t"}
_FALSE = {"no", "false", "off", "0", "n", "f"}
# (section, key) as networkd spells them (unit files are case-sensitive); networkd 250
# renamed DHCPv6PrefixDelegation to DHCPPrefixDelegation and reads both
_PD_ON = (("Network", "DHCPPrefixDelegation"), ("Network", "DHCPv6PrefixDelegation"))
_UPLINK = (("DHCPPrefixDelegation", "UplinkInterface"), ("DHCPv6PrefixDelegation", "UplinkInterface"))

Settings = dict[tuple[str, str], str]
_Signature = tuple[tuple[str, int], ...]


def parse_unit(text: str, into: Settings | None = None) -> Settings:
    """A systemd unit file's settings, (section, key) -> the last value given (later files
    and lines override earlier ones, as systemd reads single-valued keys)."""
    settings: Settings = {} if into is None else into
    section = ""
    pending = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if pending and stripped[:1] in ("#", ";"):
            continue  # a comment inside a continued value is skipped (systemd.syntax(7))
        line = pending + stripped
        pending = ""
        if line.endswith("\\"):  # a continuation: joined with a space, as systemd does
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip()
            continue
        key, sep, value = line.partition("=")
        if sep:
            settings[(section, key.strip())] = value.strip()
    return settings


def read_state(index: int, state_dir: Path = STATE_DIR) -> dict[str, str]:
    """A link's networkd state file as KEY -> value ({} when networkd does not manage it)."""
    try:
        text = (state_dir / str(index)).read_text()
    except (OSError, UnicodeDecodeError):
        return {}
    state: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            state[key.strip()] = value.strip()
    return state


def unit_paths(state: Mapping[str, str]) -> list[Path]:
    """The .network file a state file names, then its drop-ins in the order networkd read
    them.  NETWORK_FILE_DROPINS is one quoted string, the paths joined by ':' with a ':' or
    a backslash inside a path C-escaped (networkd's xescape)."""
    main = state.get("NETWORK_FILE", "")
    if not main:
        return []
    dropins = state.get("NETWORK_FILE_DROPINS", "").strip().strip('"')
    paths = [main]
    for part in dropins.split(":") if dropins else []:
        try:
            paths.append(codecs.escape_decode(part.encode())[0].decode())
        except (ValueError, UnicodeDecodeError):
            continue  # not what networkd writes: that drop-in is not read
    return [Path(p) for p in paths if p]


def network_settings(paths: list[Path]) -> Settings | None:
    """The settings of a .network file and its drop-ins (None: the file cannot be read)."""
    if not paths:
        return None
    settings: Settings = {}
    for path in paths:
        try:
            parse_unit(path.read_text(), settings)
        except (OSError, UnicodeDecodeError):
            if path == paths[0]:
                return None
    return settings


def _first(settings: Settings, keys: Iterable[tuple[str, str]]) -> str | None:
    for key in keys:
        if key in settings:
            return settings[key]
    return None


def _is_dhcp6_client(settings: Settings) -> bool:
    """Could networkd take a delegation on this link: DHCPv6 asked for, or RAs accepted (their
    M/O flags start DHCPv6; networkd's default is off on a router, which forwards), and the
    delegated prefixes used."""
    dhcp = settings.get(("Network", "DHCP"), "no").lower()
    ra = settings.get(("Network", "IPv6AcceptRA"), "no").lower()
    use_pd = settings.get(("DHCPv6", "UseDelegatedPrefix"), "yes").lower()
    return (dhcp in ("yes", "ipv6", "true", "both") or ra in _TRUE) and use_pd not in _FALSE


class NetworkdUplinks:
    """Answers "which uplink delegated this LAN interface's prefixes" from networkd's files.

    Reading costs a stat and, when a file changed, a parse: asked only for LAN
    interfaces that hold dynamic global IPv6 addresses.  `begin(names)` starts a
    round: what is kept of links gone is dropped, and `notes` starts afresh.
    """

    def __init__(self, state_dir: Path = STATE_DIR) -> None:
        self.state_dir = state_dir
        # ifindex -> (the files read, their signature then, the settings they gave)
        self._cache: dict[int, tuple[list[Path], _Signature, Settings | None]] = {}
        self.notes: dict[str, str] = {}  # LAN interface -> why networkd's answer is not used

    def begin(self, names: Mapping[int, str]) -> None:
        self._cache = {index: cached for index, cached in self._cache.items() if index in names}
        self.notes = {}

    def uplink(
        self, index: int, name: str, names: Mapping[int, str], managed: Mapping[str, int]
    ) -> str | None:
        """The uplink networkd numbers `name` (ifindex `index`) from, or None.
        names: ifindex -> name of every link; managed: the managed links' name -> ifindex."""
        settings = self._settings(index)
        if settings is None:
            return None
        on = _first(settings, _PD_ON)
        if on is None or on.lower() not in _TRUE:
            return None
        choice = (_first(settings, _UPLINK) or ":auto").strip()
        if choice == ":self":
            return None  # a WAN numbering itself: not a LAN interface of another uplink
        if choice == ":auto":
            return self._auto(name, names, managed)
        if choice.isdigit():
            return names.get(int(choice))
        if ifname_problem(choice) is not None:  # networkd refuses it too: it delegates nothing
            self.notes[name] = f"{name}: networkd's UplinkInterface={choice!r} names no interface"
            return None
        return choice

    def _auto(self, lan: str, names: Mapping[int, str], managed: Mapping[str, int]) -> str | None:
        clients = sorted(
            name
            for index, name in names.items()
            if name != lan and (settings := self._settings(index)) is not None and _is_dhcp6_client(settings)
        )
        if len(clients) == 1 and clients[0] in managed:
            return clients[0]
        which = ", ".join(clients) or "none of its links"
        self.notes[lan] = (
            f"{lan}: networkd numbers it from UplinkInterface=:auto, and networkd's DHCPv6 may run on "
            f"{which}: set UplinkInterface= in its .network file (or delegated_to: in wanhooks' config) "
            "to say which ISP's prefix it carries"
        )
        return None

    def _settings(self, index: int) -> Settings | None:
        cached = self._cache.get(index)
        if cached is not None and _signature(cached[0]) == cached[1]:
            return cached[2]
        state_path = self.state_dir / str(index)
        before = _signature([state_path])
        state = read_state(index, self.state_dir)
        paths = [state_path, *unit_paths(state)]
        signature = before + _signature(paths[1:])  # before reading: a change meanwhile is seen next time
        settings = network_settings(paths[1:])
        self._cache[index] = (paths, signature, settings)
        return settings


def _signature(paths: Iterable[Path]) -> _Signature:
    out = []
    for path in paths:
        try:
            out.append((str(path), os.stat(path).st_mtime_ns))
        except OSError:
            out.append((str(path), -1))
    return tuple(out)
