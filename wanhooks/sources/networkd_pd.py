"""Which uplink systemd-networkd numbers a LAN interface from (DHCPPrefixDelegation=).

networkd says it in two places a reader may use: the link's state file,
/run/systemd/netif/links/<ifindex> -- read by libsystemd's sd_network_link_
get_network_file(), which is how networkctl learns NETWORK_FILE= -- and the
.network file (with its drop-ins) that names the uplink:

    [Network]
    DHCPPrefixDelegation=yes
    [DHCPPrefixDelegation]
    UplinkInterface=wan1        # a name, an ifindex, :self or :auto (the default)

networkd 252 exports the delegated prefix itself on neither D-Bus nor in its
state files (DHCPv6Client.Prefixes is v255's); the addresses it assigns are in
the kernel, which is where wanhooks reads them (plan/delegations.py).

`:auto` is networkd's own choice among its links with a DHCPv6 lease; it does
not say which.  wanhooks answers only when that choice cannot be wrong: one
managed link is networkd's DHCPv6 client.  Otherwise it says once how to tell it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

log = logging.getLogger("wanhooks")

STATE_DIR = Path("/run/systemd/netif/links")
_TRUE = {"yes", "true", "on", "1", "y", "t"}
_FALSE = {"no", "false", "off", "0", "n", "f"}
# Settings as (section, key); networkd 250 renamed DHCPv6PrefixDelegation to DHCPPrefixDelegation
_PD_ON = (("network", "dhcpprefixdelegation"), ("network", "dhcpv6prefixdelegation"))
_UPLINK = (("dhcpprefixdelegation", "uplinkinterface"), ("dhcpv6prefixdelegation", "uplinkinterface"))

Settings = dict[tuple[str, str], str]


def parse_unit(text: str, into: Settings | None = None) -> Settings:
    """A systemd unit file's settings, (section, key) in lower case -> the last value given
    (later files and lines override earlier ones, as systemd reads single-valued keys)."""
    settings: Settings = {} if into is None else into
    section = ""
    pending = ""
    for raw in text.splitlines():
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):  # a continuation: joined with a space, as systemd does
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1].strip().lower()
            continue
        key, sep, value = line.partition("=")
        if sep:
            settings[(section, key.strip().lower())] = value.strip()
    return settings


def read_state(index: int, state_dir: Path = STATE_DIR) -> dict[str, str]:
    """A link's networkd state file as KEY -> value ({} when networkd does not manage it)."""
    try:
        text = (state_dir / str(index)).read_text()
    except OSError:
        return {}
    state: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not key.startswith("#"):
            state[key.strip()] = value.strip()
    return state


def network_settings(state: Mapping[str, str]) -> Settings | None:
    """The settings of the .network file (and drop-ins, in order) a state file names."""
    main = state.get("NETWORK_FILE", "")
    if not main:
        return None
    settings: Settings = {}
    for path in [main, *_words(state.get("NETWORK_FILE_DROPINS", ""))]:
        try:
            parse_unit(Path(path).read_text(), settings)
        except OSError:
            if path == main:
                return None
    return settings


def _words(text: str) -> list[str]:
    return [w.strip('"') for w in text.split() if w.strip('"')]


def _first(settings: Settings, keys: Iterable[tuple[str, str]]) -> str | None:
    for key in keys:
        if key in settings:
            return settings[key]
    return None


def _is_dhcp6_client(settings: Settings) -> bool:
    """Could networkd take a delegation on this link: DHCPv6 on, delegated prefixes used."""
    dhcp = settings.get(("network", "dhcp"), "no").lower()
    use_pd = settings.get(("dhcpv6", "usedelegatedprefix"), "yes").lower()
    ra = settings.get(("network", "ipv6acceptra"), "yes").lower()  # an RA's M/O flags start DHCPv6 too
    return (dhcp in ("yes", "ipv6", "true", "both") or ra not in _FALSE) and use_pd not in _FALSE


class NetworkdUplinks:
    """Answers "which uplink delegated this LAN interface's prefixes" from networkd's files.

    Reading costs a stat and, when a file changed, a parse: asked only for LAN
    interfaces that hold dynamic global IPv6 addresses.
    """

    def __init__(self, state_dir: Path = STATE_DIR) -> None:
        self.state_dir = state_dir
        # ifindex -> (the files read, their signature then, the settings they gave)
        self._cache: dict[int, tuple[list[Path], _Signature, Settings | None]] = {}
        self._told: set[str] = set()

    def available(self) -> bool:
        return self.state_dir.is_dir()

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
            return self._auto(name, managed)
        if choice.isdigit():
            return names.get(int(choice))
        return choice

    def _auto(self, lan: str, managed: Mapping[str, int]) -> str | None:
        clients = sorted(
            wan
            for wan, index in managed.items()
            if (s := self._settings(index)) is not None and _is_dhcp6_client(s)
        )
        if len(clients) == 1:
            return clients[0]
        if lan not in self._told:
            self._told.add(lan)
            which = ", ".join(clients) or "none of the links"
            log.warning(
                "%s: networkd numbers it from UplinkInterface=:auto, and networkd's DHCPv6 may run "
                "on %s: set UplinkInterface= in its .network file (or delegated_to: in wanhooks' "
                "config) to say which ISP's prefix it carries", lan, which,
            )  # fmt: skip
        return None

    def _settings(self, index: int) -> Settings | None:
        cached = self._cache.get(index)
        if cached is not None and _signature(cached[0]) == cached[1]:
            return cached[2]
        state = read_state(index, self.state_dir)
        units = [state.get("NETWORK_FILE", ""), *_words(state.get("NETWORK_FILE_DROPINS", ""))]
        paths = [self.state_dir / str(index), *(Path(p) for p in units if p)]
        signature = _signature(paths)  # before reading: a change while reading is seen next time
        settings = network_settings(state)
        self._cache[index] = (paths, signature, settings)
        return settings


_Signature = tuple[tuple[str, int], ...]


def _signature(paths: Iterable[Path]) -> _Signature:
    out = []
    for path in paths:
        try:
            out.append((str(path), os.stat(path).st_mtime_ns))
        except OSError:
            out.append((str(path), -1))
    return tuple(out)
