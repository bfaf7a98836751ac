"""A plain mirror of what NetworkManager says about its devices (pure: tested with recorded bodies).

Only what wanhooks uses: each device's interface, type, state, the gateways
of its IPv4/IPv6 configs (these exist also for profiles whose routes are not
in main: never-default, a route table of their own), its connectivity and
whether it is metered.  Updates take D-Bus property dicts with the Variants
already unwrapped.

Every value is checked before it is kept (issue #13): the signals that
carry them are screened by sender (networkmanager.screen), but a value that
goes into the kernel (a gateway), a log line (an interface name) or a
decision (connectivity, metered) should not depend on that alone.  A value
of the wrong type or out of range is dropped and the rest of the update
still applies; nothing here raises on what a D-Bus body holds.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ..model import ManagedDevice
from ..plan.names import ifname_problem

NM_DEVICE_STATE_ACTIVATED = 100
# NMConnectivityState
CONNECTIVITY = {0: "unknown", 1: "none", 2: "portal", 3: "limited", 4: "full"}
# NMMetered
METERED = {0: "unknown", 1: "yes", 2: "no", 3: "guess-yes", 4: "guess-no"}
UINT32_MAX = 2**32 - 1
NM_PATH = "/org/freedesktop/NetworkManager"
# NetworkManager's own objects only; D-Bus object path characters only
_NM_OBJECT = re.compile(r"/org/freedesktop/NetworkManager(/[A-Za-z0-9_]+)*")
DEVICE_TYPES = {
    1: "ethernet", 2: "wifi", 8: "modem", 13: "bridge", 14: "generic", 16: "tun", 20: "veth", 29: "wireguard",
}  # fmt: skip


@dataclass(frozen=True)
class Device:
    path: str
    iface: str = ""
    ip_iface: str = ""
    device_type: int = 0
    state: int = 0
    ip4_config: str = "/"
    ip6_config: str = "/"
    connectivity4: int = 0
    connectivity6: int = 0
    metered: int = 0
    dhcp4_config: str = "/"
    # The profile's own gateways (GetAppliedConnection): NetworkManager leaves
    # IP4Config.Gateway empty for a never-default profile, but the profile has one.
    applied4: str = ""
    applied6: str = ""
    shared6: bool = False  # the applied profile's ipv6.method is "shared"


@dataclass(frozen=True)
class Mirror:
    devices: dict[str, Device] = field(default_factory=dict)
    gateways: dict[str, str] = field(default_factory=dict)  # IP config path -> gateway ("" if none)
    connectivity_checked: bool = False  # NetworkManager's ConnectivityCheckEnabled

    def view(self) -> tuple[ManagedDevice, ...]:
        """What the planner gets: one entry per device NetworkManager has activated."""
        out = []
        for dev in sorted(self.devices.values(), key=lambda d: d.path):
            name = dev.ip_iface or dev.iface
            if not name or dev.state != NM_DEVICE_STATE_ACTIVATED:
                continue
            out.append(
                ManagedDevice(
                    name=name,
                    device_type=DEVICE_TYPES.get(dev.device_type, str(dev.device_type)),
                    gateway4=self.gateways.get(dev.ip4_config, "")
                    or dev.applied4
                    or self.gateways.get(dev.dhcp4_config, "")
                    or None,
                    gateway6=self.gateways.get(dev.ip6_config, "") or dev.applied6 or None,
                    connectivity4=CONNECTIVITY.get(dev.connectivity4, "unknown"),
                    connectivity6=CONNECTIVITY.get(dev.connectivity6, "unknown"),
                    metered=METERED.get(dev.metered, "unknown"),
                    connectivity_checked=self.connectivity_checked,
                    shared6=dev.shared6,
                )
            )
        return tuple(out)


def nm_object_path(value: object) -> bool:
    """NetworkManager's root object or one under it (never another service's, never junk)."""
    return isinstance(value, str) and _NM_OBJECT.fullmatch(value) is not None


def _config_path(value: object) -> str | None:
    """A device's IP/DHCP config: "/" (none) or one of NetworkManager's objects."""
    return value if isinstance(value, str) and (value == "/" or nm_object_path(value)) else None


def _uint32(value: object) -> int | None:
    # type(), not isinstance: a bool is an int to Python, never a D-Bus uint32
    return value if type(value) is int and 0 <= value <= UINT32_MAX else None


def _enum(value: object, known: dict[int, str]) -> int | None:
    return value if type(value) is int and value in known else None


def _ifname(value: object) -> str | None:
    """An interface name wanhooks could manage, or "" (the device has none we can use).

    A string that is no such name (a newline, a '/', 16 characters) becomes ""
    rather than being dropped: the device no longer has its old name, and
    that name may now be another link's."""
    if not isinstance(value, str):
        return None
    return value if value == "" or ifname_problem(value) is None else ""


_DEVICE_PROPS: dict[str, tuple[str, Callable[[object], Any]]] = {
    "Interface": ("iface", _ifname),
    "IpInterface": ("ip_iface", _ifname),
    "DeviceType": ("device_type", _uint32),
    "State": ("state", _uint32),
    "Ip4Config": ("ip4_config", _config_path),
    "Ip6Config": ("ip6_config", _config_path),
    "Ip4Connectivity": ("connectivity4", lambda v: _enum(v, CONNECTIVITY)),
    "Ip6Connectivity": ("connectivity6", lambda v: _enum(v, CONNECTIVITY)),
    "Metered": ("metered", lambda v: _enum(v, METERED)),
    "Dhcp4Config": ("dhcp4_config", _config_path),
}
DEVICE_PROPERTIES = frozenset(_DEVICE_PROPS)


def gateway(value: object, family: int) -> str | None:
    """A gateway NetworkManager reports, checked: "" for none, the address in its canonical
    form, or None when it is no gateway of that family (junk, the other family, a scope id,
    multicast, loopback) -- the caller then ignores it."""
    if not isinstance(value, str) or "%" in value:
        return None
    if value == "":
        return ""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if address.version != family or address.is_multicast or address.is_loopback:
        return None
    return "" if address.is_unspecified else str(address)


def update_device(mirror: Mirror, path: str, props: dict[str, Any]) -> Mirror:
    """Apply a device's properties (a GetAll answer or a PropertiesChanged body)."""
    if not nm_object_path(path) or not isinstance(props, dict):
        return mirror
    device = mirror.devices.get(path, Device(path=path))
    changes = {}
    for prop, (field_name, clean) in _DEVICE_PROPS.items():
        value = clean(props[prop]) if prop in props else None
        if value is not None:
            changes[field_name] = value
    if not changes:
        return mirror if path in mirror.devices else replace(mirror, devices={**mirror.devices, path: device})
    return replace(mirror, devices={**mirror.devices, path: replace(device, **changes)})


def update_ip_config(mirror: Mirror, path: str, props: dict[str, Any], family: int) -> Mirror:
    """An IP4Config (family 4) or IP6Config (6) object's Gateway."""
    found = gateway(props.get("Gateway"), family) if isinstance(props, dict) else None
    if found is None or not nm_object_path(path):
        return mirror
    return replace(mirror, gateways={**mirror.gateways, path: found})


def update_dhcp4_config(mirror: Mirror, path: str, props: dict[str, Any]) -> Mirror:
    """A DHCP lease's router (option 3): the gateway of a never-default DHCP profile."""
    options = props.get("Options") if isinstance(props, dict) else None
    if not isinstance(options, dict) or not nm_object_path(path):
        return mirror
    routers = options.get("routers", "")
    first = gateway(routers.split()[0] if isinstance(routers, str) and routers.split() else "", 4)
    if first is None:
        return mirror
    return replace(mirror, gateways={**mirror.gateways, path: first})


def update_applied(mirror: Mirror, path: str, settings: dict[str, Any]) -> Mirror:
    """The applied connection's ipv4/ipv6 gateway settings, and whether its IPv6 is shared."""
    device = mirror.devices.get(path)
    if device is None or not isinstance(settings, dict):
        return mirror
    gateways = []
    for name, family in (("ipv4", 4), ("ipv6", 6)):
        section = settings.get(name)
        found = gateway(section.get("gateway"), family) if isinstance(section, dict) else None
        gateways.append(found or "")  # the whole profile is read each time: no usable one is none
    ipv6 = settings.get("ipv6")
    shared6 = isinstance(ipv6, dict) and ipv6.get("method") == "shared"
    changed = replace(device, applied4=gateways[0], applied6=gateways[1], shared6=shared6)
    return replace(mirror, devices={**mirror.devices, path: changed})


def update_manager(mirror: Mirror, props: dict[str, Any]) -> Mirror:
    """Properties of NetworkManager itself (a GetAll answer or a PropertiesChanged body)."""
    enabled = props.get("ConnectivityCheckEnabled") if isinstance(props, dict) else None
    if not isinstance(enabled, bool):
        return mirror
    return replace(mirror, connectivity_checked=enabled)


def remove_device(mirror: Mirror, path: str) -> Mirror:
    devices = dict(mirror.devices)
    devices.pop(path, None)
    return replace(mirror, devices=devices)


def merge_device(current: Mirror, fetched: Mirror, path: str) -> Mirror:
    """`current` with device `path` and its configs' gateways as `fetched` has them.

    fetched began as an older copy of current: its other devices are stale.  A
    config's gateway current already holds was set by a signal while the fetch
    ran (a fetch asks only for configs it does not know), so current's stands."""
    device = fetched.devices.get(path)
    if device is None:
        return current
    configs = (device.ip4_config, device.ip6_config, device.dhcp4_config)
    gateways = {p: fetched.gateways[p] for p in configs if p in fetched.gateways}
    return replace(
        current,
        devices={**current.devices, path: device},
        gateways={**gateways, **current.gateways},
    )


def config_paths(mirror: Mirror) -> set[str]:
    """IP config objects the devices point at (whose gateways we need)."""
    paths = (p for d in mirror.devices.values() for p in (d.ip4_config, d.ip6_config, d.dhcp4_config))
    return {p for p in paths if p and p != "/"}
