"""A plain mirror of what NetworkManager says about its devices (pure: tested with recorded bodies).

Only what wanhooks uses: each device's interface, type, state, the gateways
of its IPv4/IPv6 configs (these exist also for profiles whose routes are not
in main: never-default, a route table of their own), its connectivity and
whether it is metered.  Updates take D-Bus property dicts with the Variants
already unwrapped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from ..model import ManagedDevice

NM_DEVICE_STATE_ACTIVATED = 100
# NMConnectivityState
CONNECTIVITY = {0: "unknown", 1: "none", 2: "portal", 3: "limited", 4: "full"}
# NMMetered
METERED = {0: "unknown", 1: "yes", 2: "no", 3: "guess-yes", 4: "guess-no"}
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
                )
            )
        return tuple(out)


_DEVICE_PROPS = {
    "Interface": "iface",
    "IpInterface": "ip_iface",
    "DeviceType": "device_type",
    "State": "state",
    "Ip4Config": "ip4_config",
    "Ip6Config": "ip6_config",
    "Ip4Connectivity": "connectivity4",
    "Ip6Connectivity": "connectivity6",
    "Metered": "metered",
    "Dhcp4Config": "dhcp4_config",
}


def update_device(mirror: Mirror, path: str, props: dict[str, Any]) -> Mirror:
    """Apply a device's properties (a GetAll answer or a PropertiesChanged body)."""
    device = mirror.devices.get(path, Device(path=path))
    changes = {
        field_name: props[prop]
        for prop, field_name in _DEVICE_PROPS.items()
        if prop in props and isinstance(props[prop], type(getattr(device, field_name)))
    }
    if not changes:
        return mirror if path in mirror.devices else replace(mirror, devices={**mirror.devices, path: device})
    return replace(mirror, devices={**mirror.devices, path: replace(device, **changes)})


def update_ip_config(mirror: Mirror, path: str, props: dict[str, Any]) -> Mirror:
    gateway = props.get("Gateway")
    if not isinstance(gateway, str):
        return mirror
    return replace(mirror, gateways={**mirror.gateways, path: gateway})


def update_dhcp4_config(mirror: Mirror, path: str, props: dict[str, Any]) -> Mirror:
    """A DHCP lease's router (option 3): the gateway of a never-default DHCP profile."""
    options = props.get("Options")
    if not isinstance(options, dict):
        return mirror
    routers = options.get("routers", "")
    first = routers.split()[0] if isinstance(routers, str) and routers.split() else ""
    return replace(mirror, gateways={**mirror.gateways, path: first})


def update_applied(mirror: Mirror, path: str, settings: dict[str, Any]) -> Mirror:
    """The applied connection's ipv4/ipv6 gateway settings."""
    device = mirror.devices.get(path)
    if device is None:
        return mirror
    gateways = []
    for family in ("ipv4", "ipv6"):
        section = settings.get(family)
        gateway = section.get("gateway") if isinstance(section, dict) else None
        gateways.append(gateway if isinstance(gateway, str) else "")
    changed = replace(device, applied4=gateways[0], applied6=gateways[1])
    return replace(mirror, devices={**mirror.devices, path: changed})


def update_manager(mirror: Mirror, props: dict[str, Any]) -> Mirror:
    """Properties of NetworkManager itself (a GetAll answer or a PropertiesChanged body)."""
    enabled = props.get("ConnectivityCheckEnabled")
    if not isinstance(enabled, bool):
        return mirror
    return replace(mirror, connectivity_checked=enabled)


def remove_device(mirror: Mirror, path: str) -> Mirror:
    devices = dict(mirror.devices)
    devices.pop(path, None)
    return replace(mirror, devices=devices)


def config_paths(mirror: Mirror) -> set[str]:
    """IP config objects the devices point at (whose gateways we need)."""
    paths = (p for d in mirror.devices.values() for p in (d.ip4_config, d.ip6_config, d.dhcp4_config))
    return {p for p in paths if p and p != "/"}
