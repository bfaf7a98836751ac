"""The NetworkManager mirror is pure: fed recorded D-Bus bodies (Variants unwrapped).

Also what decides which D-Bus messages reach it (networkmanager.screen) and
that a forged or malformed one changes nothing and costs one log line a
minute at most (issue #13, H2); tests/test_dbus_security.py does the same
against a real bus.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from dbus_next.constants import MessageType
from dbus_next.errors import DBusError
from dbus_next.message import Message
from dbus_next.signature import Variant
from hypothesis import given, settings
from hypothesis import strategies as st

from wanhooks.events import Event
from wanhooks.model import ManagedDevice
from wanhooks.sources import networkmanager as nmsrc
from wanhooks.sources import nm_mirror
from wanhooks.sources.networkmanager import Header, screen
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
    mirror = nm_mirror.update_ip_config(mirror, IP4, {"Gateway": "100.64.11.1", "AddressData": []}, 4)
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
    mirror = nm_mirror.update_ip_config(mirror, IP4, {"Gateway": ""}, 4)  # a route-table profile
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


# -- values are checked before they are kept ------------------------------------------------


def active() -> Mirror:
    mirror = nm_mirror.update_device(Mirror(), DEV, DEVICE_PROPS)
    return nm_mirror.update_ip_config(mirror, IP4, {"Gateway": "100.64.11.1"}, 4)


@pytest.mark.parametrize(
    "gateway",
    ["fd00::1", "203.0.113.66 dev lo", "100.64.11.1\nround 99: forged", "224.0.0.1", "127.0.0.1",
     "100.64.11.1%nmw1", "not an address", 1684015169, None, ["100.64.11.9"], b"100.64.11.9"],
)  # fmt: skip
def test_a_gateway_that_is_no_ipv4_address_is_ignored(gateway: object) -> None:
    mirror = nm_mirror.update_ip_config(active(), IP4, {"Gateway": gateway}, 4)
    assert mirror.view()[0].gateway4 == "100.64.11.1"


def test_gateways_are_kept_in_canonical_form_and_per_family() -> None:
    ip6 = DEVICE_PROPS["Ip6Config"]
    mirror = nm_mirror.update_ip_config(active(), ip6, {"Gateway": "FD00:0:0::1"}, 6)
    assert mirror.view()[0].gateway6 == "fd00::1"
    assert nm_mirror.update_ip_config(mirror, ip6, {"Gateway": "100.64.11.1"}, 6) == mirror
    assert nm_mirror.update_ip_config(mirror, IP4, {"Gateway": "0.0.0.0"}, 4).view()[0].gateway4 is None


def test_dhcp_routers_and_applied_gateways_are_checked() -> None:
    mirror = nm_mirror.update_device(Mirror(), DEV, {**DEVICE_PROPS, "Ip4Config": "/", "Dhcp4Config": DHCP4})
    assert nm_mirror.update_dhcp4_config(mirror, DHCP4, {"Options": {"routers": "evil\nline"}}) == mirror
    assert nm_mirror.update_dhcp4_config(mirror, DHCP4, {"Options": "junk"}) == mirror
    applied = {"ipv4": {"gateway": "fd00::1"}, "ipv6": {"gateway": "100.64.11.1"}}  # families swapped
    device = nm_mirror.update_applied(mirror, DEV, applied).devices[DEV]
    assert (device.applied4, device.applied6) == ("", "")
    assert nm_mirror.update_applied(mirror, DEV, "junk") == mirror  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ("IpInterface", "nmw1\nround 99: forged"), ("IpInterface", "../../etc"),
        ("IpInterface", "x" * 16), ("Interface", "nm w1"),
    ],
)  # fmt: skip
def test_an_interface_name_wanhooks_could_not_manage_never_reaches_the_view(prop: str, value: str) -> None:
    mirror = nm_mirror.update_device(active(), DEV, {"Interface": "", "IpInterface": "", prop: value})
    assert mirror.view() == ()  # the device has no usable name now: not the old one either
    assert "\n" not in repr(mirror.devices[DEV]) and value not in repr(mirror.devices[DEV])


@pytest.mark.parametrize(
    ("prop", "value"),
    [
        ("Ip4Connectivity", 5), ("Ip4Connectivity", -1), ("Ip4Connectivity", True), ("Ip4Connectivity", "2"),
        ("Metered", 7), ("Metered", 1.0), ("State", 2**32), ("State", "100"), ("DeviceType", -2),
        ("Ip4Config", "/org/freedesktop/Other/IP4Config/1"), ("Ip4Config", 7),
        ("Ip4Config", "/org/freedesktop/NetworkManager/IP4Config/7\n"),
        ("Dhcp4Config", "/org/freedesktop/NetworkManagerX"),
    ],
)  # fmt: skip
def test_a_value_of_the_wrong_type_or_range_is_dropped_and_the_rest_applies(prop: str, value: object) -> None:
    before = active()
    mirror = nm_mirror.update_device(before, DEV, {prop: value, "Ip6Connectivity": 4})
    (dev,) = mirror.view()
    assert dev == ManagedDevice(**{**before.view()[0].__dict__, "connectivity6": "full"})


def test_objects_outside_networkmanager_are_never_mirrored() -> None:
    assert nm_mirror.update_device(Mirror(), "/org/evil/Devices/1", DEVICE_PROPS) == Mirror()
    assert (
        nm_mirror.update_ip_config(Mirror(), "/org/evil/IP4Config/1", {"Gateway": "100.64.11.1"}, 4)
        == Mirror()
    )
    assert nm_mirror.nm_object_path("/org/freedesktop/NetworkManager")
    assert not nm_mirror.nm_object_path("/org/freedesktop/NetworkManagerEvil/1")


plain_values = st.none() | st.booleans() | st.integers() | st.floats() | st.text() | st.binary()
bodies = st.recursive(
    plain_values, lambda inner: st.lists(inner) | st.dictionaries(st.text(), inner), max_leaves=8
)
device_props = st.dictionaries(st.sampled_from([*nm_mirror.DEVICE_PROPERTIES, "Other"]), bodies)


@settings(max_examples=100, deadline=None)
@given(props=device_props, gateway=bodies, options=bodies, applied=bodies)
def test_no_body_makes_the_mirror_raise_or_keep_a_bad_value(
    props: dict[str, Any], gateway: Any, options: Any, applied: Any
) -> None:
    mirror = nm_mirror.update_device(active(), DEV, props)
    mirror = nm_mirror.update_ip_config(mirror, IP4, {"Gateway": gateway}, 4)
    mirror = nm_mirror.update_dhcp4_config(mirror, DHCP4, {"Options": options})
    mirror = nm_mirror.update_applied(mirror, DEV, applied)
    mirror = nm_mirror.update_manager(mirror, props)
    for dev in mirror.view():
        assert dev.name.isprintable() and dev.name.isascii()
        assert dev.connectivity4 in nm_mirror.CONNECTIVITY.values()
        assert dev.metered in nm_mirror.METERED.values()
        for gw in (dev.gateway4, dev.gateway6):
            assert gw is None or gw.isprintable()


def test_a_device_fetched_meanwhile_is_kept_when_another_fetch_finishes() -> None:
    dev2 = "/org/freedesktop/NetworkManager/Devices/4"
    start = Mirror()
    one = nm_mirror.update_device(start, DEV, DEVICE_PROPS)  # a fetch of DEV finished first
    other = nm_mirror.update_device(
        start,
        dev2,
        {
            **DEVICE_PROPS,
            "Interface": "nmw2",
            "IpInterface": "nmw2",
            "Ip4Config": "/org/freedesktop/NetworkManager/IP4Config/9",
        },
    )
    other = nm_mirror.update_ip_config(
        other, "/org/freedesktop/NetworkManager/IP4Config/9", {"Gateway": "100.64.12.1"}, 4
    )
    merged = nm_mirror.merge_device(one, other, dev2)
    assert set(merged.devices) == {DEV, dev2}
    assert merged.gateways["/org/freedesktop/NetworkManager/IP4Config/9"] == "100.64.12.1"


# -- which messages are believed ----------------------------------------------------------------

NM_OWNER = ":1.5"
DEV_IFACE = f"{nmsrc.NM}.Device"


def header(
    member: str = "PropertiesChanged", sender: str = NM_OWNER, path: str = IP4,
    interface: str = nmsrc.PROPS, signature: str = "sa{sv}as", kind: MessageType = MessageType.SIGNAL,
) -> Header:  # fmt: skip
    return Header(kind, sender, path, interface, member, signature)


OWNER_CHANGED = header("NameOwnerChanged", nmsrc.DBUS, nmsrc.DBUS_PATH, nmsrc.DBUS, "sss")


@pytest.mark.parametrize(
    "h",
    [
        header(), header(path=DEV), header(path=nmsrc.NM_PATH),
        header("DeviceAdded", interface=nmsrc.NM, path=nmsrc.NM_PATH, signature="o"),
        header("DeviceRemoved", interface=nmsrc.NM, path=nmsrc.NM_PATH, signature="o"),
        header("StateChanged", interface=DEV_IFACE, path=DEV, signature="uuu"),
        OWNER_CHANGED,
    ],
)  # fmt: skip
def test_networkmanagers_signals_and_the_bus_owner_changes_are_accepted(h: Header) -> None:
    assert screen(h, NM_OWNER) is None


@pytest.mark.parametrize(
    "h",
    [
        header(sender=":1.66"),  # anyone else, unicast to us
        header(sender=nmsrc.NM),  # a well-known name is never a sender: the bus puts the unique one
        header(signature="sa{sv}"), header(signature="s"), header(signature=""),
        header(path="/org/freedesktop/NetworkManagerX"), header(path="/"),
        header("DeviceRemoved", interface=nmsrc.NM, path=nmsrc.NM_PATH, signature="u"),
        header("StateChanged", interface=DEV_IFACE, path=DEV, signature="s"),
        header("NameOwnerChanged", ":1.66", nmsrc.DBUS_PATH, nmsrc.DBUS, "sss"),  # forged by a client
        header("NameOwnerChanged", NM_OWNER, nmsrc.DBUS_PATH, nmsrc.DBUS, "sss"),  # even by NetworkManager
        header("NameOwnerChanged", nmsrc.DBUS, nmsrc.DBUS_PATH, nmsrc.DBUS, "s"),
        header("NameOwnerChanged", nmsrc.DBUS, "/elsewhere", nmsrc.DBUS, "sss"),
    ],
)  # fmt: skip
def test_forged_and_malformed_signals_are_refused_with_a_reason(h: Header) -> None:
    assert screen(h, NM_OWNER)


def test_signals_we_do_not_follow_are_dropped_quietly() -> None:
    assert screen(header("NameAcquired", nmsrc.DBUS, nmsrc.DBUS_PATH, nmsrc.DBUS, "s"), NM_OWNER) == ""
    assert screen(header("StateChanged", interface=nmsrc.NM, signature="u"), NM_OWNER) == ""
    assert screen(header(kind=MessageType.METHOD_RETURN, sender=":1.66"), NM_OWNER) == ""
    assert screen(header(), None) == nmsrc.NOT_YET  # before GetNameOwner answered: refused


# -- the handler: forged changes nothing, broken is caught and logged once a minute ------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def source() -> tuple[nmsrc.NetworkManagerSource, list[Event], Clock]:
    events: list[Event] = []
    src = nmsrc.NetworkManagerSource(events.append, lambda view: None)
    clock = Clock()
    src._complain = nmsrc.Complaints(nmsrc.log, clock=clock)
    src._nm_owner = NM_OWNER
    src._mirror = active()
    return src, events, clock


def gateway_signal(sender: str, gateway: Any = "203.0.113.66", signature: str = "sa{sv}as") -> Message:
    body = [f"{nmsrc.NM}.IP4Config", {"Gateway": Variant("s", gateway)}, []]
    return Message(
        message_type=MessageType.SIGNAL, path=IP4, interface=nmsrc.PROPS, member="PropertiesChanged",
        signature=signature, body=body, sender=sender,
    )  # fmt: skip


def test_a_forged_gateway_changes_nothing_and_a_real_one_is_followed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    src, events, _ = source()
    caplog.set_level(logging.DEBUG, "wanhooks.networkmanager")
    for _ in range(100):
        src._on_message(gateway_signal(":1.66"))
    assert src._mirror.view()[0].gateway4 == "100.64.11.1" and events == []
    assert len(caplog.records) == 1 and "not from NetworkManager" in caplog.records[0].getMessage()
    src._on_message(gateway_signal(NM_OWNER, "100.64.11.254"))
    assert src._mirror.view()[0].gateway4 == "100.64.11.254"


def test_a_forged_name_owner_change_keeps_the_view() -> None:
    src, _, _ = source()

    def gone(sender: str) -> Message:  # NetworkManager leaving the bus, as told by sender
        return Message(
            message_type=MessageType.SIGNAL, path=nmsrc.DBUS_PATH, interface=nmsrc.DBUS,
            member="NameOwnerChanged", signature="sss", body=[nmsrc.NM, NM_OWNER, ""], sender=sender,
        )  # fmt: skip

    src._on_message(gone(":1.66"))
    assert src._nm_owner == NM_OWNER and len(src._mirror.view()) == 1
    src._on_message(gone(nmsrc.DBUS))
    assert src._nm_owner is None and src._mirror.view() == ()


def test_a_body_that_breaks_the_handler_is_logged_once_a_minute_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    src, _, clock = source()
    caplog.set_level(logging.DEBUG)
    broken = Message(
        message_type=MessageType.SIGNAL,
        path=IP4,
        interface=nmsrc.PROPS,
        member="PropertiesChanged",
        signature="sa{sv}as",
        body=[],
        sender=NM_OWNER,
    )  # fmt: skip (a real bus checks bodies against signatures: only a bug could get here)
    for _ in range(50):
        src._on_message(broken)  # does not raise
    clock.now += 61
    src._on_message(broken)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "could not handle" in lines[0] and "49 more like it since" in lines[1]
    assert all(r.exc_info is None for r in caplog.records)
    assert src._mirror.view()[0].gateway4 == "100.64.11.1"


def test_complaints_are_limited_per_kind() -> None:
    logged: list[str] = []

    class Sink(logging.Logger):
        def log(self, level: int, msg: object, *args: object, **kwargs: Any) -> None:
            logged.append(str(msg) % args)

    clock = Clock()
    complain = nmsrc.Complaints(Sink("t"), period=60, clock=clock)
    assert complain(logging.WARNING, "a") and complain(logging.WARNING, "b")
    assert not complain(logging.WARNING, "a")
    for i in range(nmsrc.COMPLAINT_KINDS_MAX * 2):  # many kinds: memory stays bounded
        complain(logging.WARNING, f"k{i}")
    assert len(complain._seen) <= nmsrc.COMPLAINT_KINDS_MAX


def test_a_reply_from_anyone_but_whom_we_asked_is_refused() -> None:
    """dbus-next pairs a reply with its call by serial alone: _call checks the sender too."""

    class Bus:
        def __init__(self, sender: str) -> None:
            self.sender = sender

        async def call(self, msg: Message) -> Message:
            return Message(
                message_type=MessageType.METHOD_RETURN, reply_serial=1, sender=self.sender,
                signature="a{sv}", body=[{"Gateway": Variant("s", "100.64.11.9")}],
            )  # fmt: skip

    src, _, _ = source()

    def get_all(sender: str) -> Any:
        return asyncio.run(src._get_all(Bus(sender), IP4, f"{nmsrc.NM}.IP4Config"))  # type: ignore[arg-type]

    assert get_all(NM_OWNER) == {"Gateway": "100.64.11.9"}
    for impostor in (":1.66", nmsrc.DBUS):
        with pytest.raises(DBusError):
            get_all(impostor)
    src._nm_owner = None  # NetworkManager gone: nobody answers for it
    with pytest.raises(DBusError):
        get_all(NM_OWNER)


# -- changes signalled while a fetch awaits NetworkManager are not lost ------------------------


def signal(path: str, iface: str, changed: dict[str, Any]) -> Message:
    body = [iface, {k: Variant("u", v) for k, v in changed.items()}, []]
    return Message(
        message_type=MessageType.SIGNAL, path=path, interface=nmsrc.PROPS, member="PropertiesChanged",
        signature="sa{sv}as", body=body, sender=NM_OWNER,
    )  # fmt: skip


class ScriptedBus:
    """NetworkManager's answers, and signals it sends while a given call is awaited."""

    def __init__(self, src: nmsrc.NetworkManagerSource, meanwhile: dict[str, list[Message]]) -> None:
        self.src, self.meanwhile = src, meanwhile
        self.devices = [DEV]
        self.state: dict[str, dict[str, Any]] = {
            nmsrc.NM_PATH: {"ConnectivityCheckEnabled": True},
            DEV: dict(DEVICE_PROPS),
            IP4: {"Gateway": "100.64.11.1"},
        }
        self.hold = ""  # the call answered only once every other fetch is done
        src._bus = object()  # type: ignore[assignment]
        src._get_all = self.get_all  # type: ignore[method-assign]
        src._call = self.call  # type: ignore[method-assign]

    async def answer(self, key: str) -> None:
        await asyncio.sleep(0)  # the call is on its way: the event loop runs other work
        for msg in self.meanwhile.pop(key, []):
            if msg.member == "PropertiesChanged":  # NetworkManager's state changed, then it said so
                self.state[msg.path] = {**self.state[msg.path], **nmsrc.plain(msg.body[1])}
            self.src._on_message(msg)
        if key == self.hold:
            while self.src._tasks:
                await asyncio.sleep(0)

    async def get_all(self, bus: object, path: str, iface: str) -> dict[str, Any]:
        await self.answer(f"GetAll {path}")
        return dict(self.state.get(path, {}))

    async def call(self, bus: object, dest: str, path: str, iface: str, member: str, *args: Any) -> list[Any]:
        await self.answer(f"{member} {path}")
        return [self.devices] if member == "GetDevices" else [{}]


METERED_NOW = signal(DEV, f"{nmsrc.NM}.Device", {"Metered": 1})  # yes: was guess-no


def test_a_device_change_signalled_while_its_fetch_awaits_is_kept() -> None:
    src, _, _ = source()
    ScriptedBus(src, {f"GetAppliedConnection {DEV}": [METERED_NOW]})
    asyncio.run(src._refresh_device(DEV))
    assert src._mirror.view()[0].metered == "yes"
    assert src._signalled == [] and src._fetches == 0  # nothing kept once no fetch runs


async def settled(src: nmsrc.NetworkManagerSource, work: Any) -> None:
    """Run work, then every fetch it spawned."""
    await work
    while src._tasks:
        await asyncio.gather(*src._tasks)


def test_a_change_signalled_during_a_snapshot_is_kept() -> None:
    src, _, _ = source()
    src._mirror = Mirror()
    gateway = signal(IP4, f"{nmsrc.NM}.IP4Config", {})
    gateway.body[1] = {"Gateway": Variant("s", "100.64.11.254")}
    ScriptedBus(src, {f"GetAppliedConnection {DEV}": [METERED_NOW, gateway]})
    asyncio.run(settled(src, src._snapshot(object())))  # type: ignore[arg-type]
    (device,) = src._mirror.view()
    assert device.metered == "yes" and device.gateway4 == "100.64.11.254"


def test_a_device_fetched_during_a_snapshot_is_fetched_again_after_it() -> None:
    """GetDevices answered before the device appeared; the device's own fetch (its
    DeviceAdded) finished while the snapshot still ran: the snapshot does not drop it."""
    src, _, _ = source()
    src._mirror = Mirror()
    bus = ScriptedBus(src, {})
    bus.devices = []
    fetched: list[str] = []
    refresh = src._refresh_device

    async def counted(path: str) -> None:
        fetched.append(path)
        await refresh(path)

    src._refresh_device = counted  # type: ignore[method-assign]
    added = Message(
        message_type=MessageType.SIGNAL, path=nmsrc.NM_PATH, interface=nmsrc.NM, member="DeviceAdded",
        signature="o", body=[DEV], sender=NM_OWNER,
    )  # fmt: skip
    bus.meanwhile[f"GetDevices {nmsrc.NM_PATH}"] = [added]
    bus.hold = f"GetDevices {nmsrc.NM_PATH}"  # answered only once the device's fetch is done
    asyncio.run(settled(src, src._snapshot(object())))  # type: ignore[arg-type]
    assert fetched == [DEV, DEV]  # once while the snapshot ran, once after it
    assert [d.name for d in src._mirror.view()] == ["nmw1"]
