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
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

STATE_DIR = Path("/run/systemd/netif/links")
_TRUE = {"yes", "true", "on", "1", "y", "t"}
_FALSE = {"no", "false", "off", "0", "n", "f"}
# (section, key) as networkd spells them (unit files are case-sensitive); networkd 250
# renamed DHCPv6PrefixDelegation to DHCPPrefixDelegation and reads both
_PD_ON = (("Network", "DHCPPrefixDelegation"), ("Network", "DHCPv6PrefixDelegation"))
_UPLINK = (("DHCPPrefixDelegation", "UplinkInterface"), ("DHCPv6PrefixDelegation", "UplinkInterface"))

Settings = dict[tuple[str, str], list[str]]  # (section, key) -> every value given, in order
_Signature = tuple[tuple[str, int, int], ...]


def parse_unit(text: str, into: Settings | None = None) -> Settings:
    """A systemd unit file's settings, (section, key) -> the values given, in order (later
    files and lines override earlier ones for a single-valued key: `last` reads them so)."""
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
            settings.setdefault((section, key.strip()), []).append(value.strip())
    return settings


def last(
    settings: Settings, keys: Iterable[tuple[str, str]], valid: Callable[[str], bool] | None = None
) -> str | None:
    """A single-valued setting as systemd reads it: the last assignment, of the first key
    (of its spellings) given; an assignment the program refuses is ignored ("ignoring
    assignment"), so the one before it stands."""
    for key in keys:
        for value in reversed(settings.get(key, [])):
            if valid is None or valid(value):
                return value
    return None


def read_state(index: int, state_dir: Path = STATE_DIR) -> dict[str, str]:
    """A link's networkd state file as KEY -> value ({} when networkd does not manage it)."""
    try:
        text = (state_dir / str(index)).read_text(errors="surrogateescape")  # a path is bytes
    except OSError:
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
            paths.append(os.fsdecode(codecs.escape_decode(os.fsencode(part))[0]))
        except ValueError:
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


def _setting(settings: Settings, section: str, key: str, default: str) -> str:
    return (last(settings, [(section, key)]) or default).lower()


def _is_dhcp6_client(settings: Settings) -> bool:
    """Could networkd take a delegation on this link: DHCPv6 asked for, or RAs accepted (their
    M flag starts DHCPv6), and the delegated prefixes used.  Unset, networkd 250-255 accepts
    RAs unless the file's own IPForward= forwards IPv6 (the sysctl does not count).  Counting
    a link too many only makes `:auto` ambiguous; one too few could name a wrong uplink."""
    dhcp = _setting(settings, "Network", "DHCP", "no")
    forward = _setting(settings, "Network", "IPForward", "no")
    ra = _setting(settings, "Network", "IPv6AcceptRA", "no" if forward in _TRUE | {"ipv6"} else "yes")
    use_pd = _setting(settings, "DHCPv6", "UseDelegatedPrefix", "yes")
    # a LAN interface -- numbered from a delegation, or advertising itself as the router --
    # hears no ISP's RA: accepting them makes it no DHCPv6 client
    lan = _setting(settings, "Network", "IPv6SendRA", "no") in _TRUE or (
        (last(settings, _PD_ON) or "no").lower() in _TRUE
        and last(settings, _UPLINK, _uplink_setting) != ":self"
    )
    return (dhcp in _TRUE | {"ipv6", "both"} or (ra in _TRUE and not lan)) and use_pd not in _FALSE


def _uplink_setting(value: str) -> bool:
    """What networkd's UplinkInterface= accepts (else it ignores the assignment): :auto,
    :self, an ifindex, or an interface name, alternative names (up to 127 bytes) included."""
    if value in (":auto", ":self") or (value.isascii() and value.isdigit() and int(value) > 0):
        return True
    if not 0 < len(value.encode()) <= 127 or value in (".", ".."):
        return False
    return all(ord(ch) >= 32 and ord(ch) != 127 and ch not in ":/" and not ch.isspace() for ch in value)


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
        self._clients: list[str] | None = None  # this round's DHCPv6 clients among networkd's links

    def begin(self, names: Mapping[int, str]) -> None:
        self._cache = {index: cached for index, cached in self._cache.items() if index in names}
        self.notes = {}
        self._clients = None

    def uplink(
        self, index: int, name: str, names: Mapping[int, str], managed: Mapping[str, int]
    ) -> str | None:
        """The uplink networkd numbers `name` (ifindex `index`) from, or None.
        names: ifindex -> name of every link; managed: the managed links' name -> ifindex."""
        settings = self._settings(index)
        if settings is None:
            return None
        on = last(settings, _PD_ON)
        if on is None or on.lower() not in _TRUE:
            return None
        choice = last(settings, _UPLINK, _uplink_setting) or ":auto"
        if choice == ":self":
            return None  # a WAN numbering itself: not a LAN interface of another uplink
        if choice == ":auto":
            return self._auto(name, names, managed)
        if choice.isascii() and choice.isdigit():  # "²".isdigit(), and int() refuses it
            return names.get(int(choice))
        return choice

    def _auto(self, lan: str, names: Mapping[int, str], managed: Mapping[str, int]) -> str | None:
        if self._clients is None:  # once a round, however many LAN interfaces ask
            self._clients = sorted(
                name
                for index, name in names.items()
                if (settings := self._settings(index)) is not None and _is_dhcp6_client(settings)
            )
        clients = [name for name in self._clients if name != lan]
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
            found = os.stat(path)
            out.append((str(path), found.st_mtime_ns, found.st_ino))  # networkd writes by rename
        except OSError:
            out.append((str(path), -1, -1))
    return tuple(out)
