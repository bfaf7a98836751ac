"""The NetworkManager mirror is pure: fed recorded D-Bus bodies (Variants unwrapped)."""

from __future__ import annotations

from wanhooks.sources import nm_mirror
from wanhooks.sources.nm_mirror import Mirror

DEV = "/org/freedesktop/NetworkManager/Devices/3"
IP4 = "/org/freedesktop/NetworkManager/IP4Config/7"
DHCP4 = "/org/freedesktop/NetworkManager/DHCP4Config/2"

# GetAll(org.freedesktop.NetworkManager.Device) as NetworkManager 1.42 answered for a veth
DEVICE_PROPS = {
    "Udi": "/sys/devices/virtual/net/nmw1",
    "Interface": "nmw1",
    "IpInterface": "nmw1",
    "Driver": "veth",
    "State": 100,
    "StateReason": [100, 0],
    "Ip4Config": IP4,
    "Ip6Config": "/org/freedesktop/NetworkManager/IP6Config/8",
    "Dhcp4Config": "/",
    "DeviceType": 20,
    "Ip4Connectivity": 4,
    "Ip6Connectivity": 1,
    "Metered": 4,
}


def test_an_activated_device_with_its_gateway() -> None:
    mirror = nm_mirror.update_device(Mirror(), DEV, DEVICE_PROPS)
    mirror = nm_mirror.update_ip_config(mirror, IP4, {"Gateway": "100.64.11.1", "AddressData": []})
    (dev,) = mirror.view()
    assert (dev.name, dev.device_type, dev.gateway4, dev.gateway6) == ("nmw1", "veth", "100.64.11.1", None)
    assert (dev.connectivity4, dev.connectivity6, dev.metered) == ("full", "none", "guess-no")


def test_state_changes_and_unknown_properties() -> None:
    mirror = nm_mirror.update_device(Mirror(), DEV, DEVICE_PROPS)
    mirror = nm_mirror.update_device(mirror, DEV, {"State": 30, "SomethingNew": [1, 2]})  # disconnected
    assert mirror.view() == ()
    mirror = nm_mirror.update_device(mirror, DEV, {"State": "not a number"})  # ignored, not crashed
    assert mirror.devices[DEV].state == 30


def test_gateways_from_the_applied_profile_and_the_dhcp_lease() -> None:
    mirror = nm_mirror.update_device(Mirror(), DEV, {**DEVICE_PROPS, "Dhcp4Config": DHCP4})
    mirror = nm_mirror.update_ip_config(mirror, IP4, {"Gateway": ""})  # a route-table profile
    assert mirror.view()[0].gateway4 is None
    mirror = nm_mirror.update_dhcp4_config(mirror, DHCP4, {"Options": {"routers": "100.64.12.1 100.64.12.2"}})
    assert mirror.view()[0].gateway4 == "100.64.12.1"
    applied = {"ipv4": {"gateway": "100.64.11.1", "route-table": 1000}, "ipv6": {"method": "disabled"}}
    mirror = nm_mirror.update_applied(mirror, DEV, applied)
    assert mirror.view()[0].gateway4 == "100.64.11.1"
    assert nm_mirror.config_paths(mirror) >= {IP4, DHCP4}


def test_removed_devices_leave_the_view() -> None:
    mirror = nm_mirror.update_device(Mirror(), DEV, DEVICE_PROPS)
    assert nm_mirror.remove_device(mirror, DEV).view() == ()
