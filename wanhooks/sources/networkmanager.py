"""NetworkManager over D-Bus: device states, gateways, connectivity, metered.

Used when org.freedesktop.NetworkManager is on the system bus
(DBUS_SYSTEM_BUS_ADDRESS is honoured).  Subscribe first, then snapshot, so
nothing falls between the two; signals for objects not seen yet are fetched
rather than dropped.  NetworkManager restarting (its bus name changes
owner) clears the mirror and takes a new snapshot; the bus going away is
retried with backoff.  rtnetlink keeps the daemon working meanwhile.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType, MessageType
from dbus_next.errors import DBusError
from dbus_next.message import Message
from dbus_next.signature import Variant

from ..events import Event, ManagerChanged
from ..model import ManagedDevice
from . import nm_mirror
from .nm_mirror import Mirror

log = logging.getLogger("wanhooks.networkmanager")

NM = "org.freedesktop.NetworkManager"
NM_PATH = "/org/freedesktop/NetworkManager"
DEVICE = f"{NM}.Device"
IP_CONFIGS = (f"{NM}.IP4Config", f"{NM}.IP6Config")
DHCP4 = f"{NM}.DHCP4Config"
ACTIVATED = 100
PROPS = "org.freedesktop.DBus.Properties"
DBUS = "org.freedesktop.DBus"
BACKOFF = (0.5, 1, 2, 5, 10, 30)

MATCH_RULES = (
    f"type='signal',sender='{NM}',interface='{PROPS}',member='PropertiesChanged'",
    f"type='signal',sender='{NM}',interface='{NM}',member='DeviceAdded'",
    f"type='signal',sender='{NM}',interface='{NM}',member='DeviceRemoved'",
    f"type='signal',sender='{NM}',interface='{DEVICE}',member='StateChanged'",
    f"type='signal',sender='{DBUS}',interface='{DBUS}',member='NameOwnerChanged',arg0='{NM}'",
)


def plain(value: Any) -> Any:
    """D-Bus Variants unwrapped, recursively."""
    if isinstance(value, Variant):
        return plain(value.value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


class NetworkManagerSource:
    def __init__(
        self, post: Callable[[Event], None], publish: Callable[[tuple[ManagedDevice, ...]], None]
    ) -> None:
        self._post = post
        self._publish = publish
        self._mirror = Mirror()
        self._bus: MessageBus | None = None
        self._fetching: set[asyncio.Future[Any]] = set()

    async def run(self) -> None:
        """Forever: connect, follow, and reconnect with backoff when the bus goes."""
        attempt = 0
        while True:
            try:
                bus = await MessageBus(bus_type=BusType.SYSTEM).connect()
            except (OSError, EOFError, DBusError) as exc:
                delay = BACKOFF[min(attempt, len(BACKOFF) - 1)]
                if attempt == 0:
                    log.info("no system bus (%s): following the kernel only; retrying", exc)
                attempt += 1
                await asyncio.sleep(delay)
                continue
            attempt = 0
            self._bus = bus
            try:
                await self._session(bus)
            except (OSError, EOFError, DBusError) as exc:
                log.warning("NetworkManager session ended: %s", exc)
            finally:
                self._bus = None
                self._set(Mirror(), "the system bus went away")
                bus.disconnect()
            await asyncio.sleep(BACKOFF[0])

    async def _session(self, bus: MessageBus) -> None:
        for rule in MATCH_RULES:  # subscribe first ...
            await self._call(bus, DBUS, "/org/freedesktop/DBus", DBUS, "AddMatch", "s", [rule])
        bus.add_message_handler(self._on_message)
        owner = await self._call(bus, DBUS, "/org/freedesktop/DBus", DBUS, "NameHasOwner", "s", [NM])
        if owner and owner[0]:
            await self._snapshot(bus)  # ... then look
        else:
            log.info("NetworkManager is not running: waiting for it on the bus")
        await bus.wait_for_disconnect()

    @staticmethod
    async def _call(
        bus: MessageBus,
        dest: str,
        path: str,
        iface: str,
        member: str,
        sig: str = "",
        body: list[Any] | None = None,
    ) -> list[Any]:
        reply = await bus.call(
            Message(
                destination=dest, path=path, interface=iface, member=member, signature=sig, body=body or []
            )
        )
        if reply is None or reply.message_type == MessageType.ERROR:
            raise DBusError(reply.error_name if reply else "no reply", str(reply.body if reply else ""))
        return list(reply.body)

    async def _get_all(self, bus: MessageBus, path: str, iface: str) -> dict[str, Any]:
        body = await self._call(bus, NM, path, PROPS, "GetAll", "s", [iface])
        return plain(body[0]) if body else {}

    async def _snapshot(self, bus: MessageBus) -> None:
        mirror = nm_mirror.update_manager(Mirror(), await self._get_all(bus, NM_PATH, NM))
        paths = (await self._call(bus, NM, NM_PATH, NM, "GetDevices"))[0]
        for path in paths:
            mirror = await self._fetch_device(bus, mirror, path)
        self._set(mirror, "snapshot")
        log.info("NetworkManager: %d devices, %d activated", len(mirror.devices), len(mirror.view()))

    async def _fetch_device(self, bus: MessageBus, mirror: Mirror, path: str) -> Mirror:
        try:
            mirror = nm_mirror.update_device(mirror, path, await self._get_all(bus, path, DEVICE))
            for config in nm_mirror.config_paths(mirror) - set(mirror.gateways):
                mirror = await self._fetch_config(bus, mirror, config)
            if mirror.devices[path].state == ACTIVATED:
                applied = await self._call(bus, NM, path, DEVICE, "GetAppliedConnection", "u", [0])
                mirror = nm_mirror.update_applied(mirror, path, plain(applied[0]) if applied else {})
        except DBusError as exc:  # the object went away meanwhile: tolerated
            log.debug("NetworkManager object %s: %s", path, exc)
        return mirror

    async def _fetch_config(self, bus: MessageBus, mirror: Mirror, config: str) -> Mirror:
        if "DHCP4Config" in config:
            return nm_mirror.update_dhcp4_config(mirror, config, await self._get_all(bus, config, DHCP4))
        iface = IP_CONFIGS[0] if "IP4Config" in config else IP_CONFIGS[1]
        return nm_mirror.update_ip_config(mirror, config, await self._get_all(bus, config, iface))

    def _set(self, mirror: Mirror, why: str, iface: str = "") -> None:
        before = self._mirror.view()
        self._mirror = mirror
        after = mirror.view()
        if after != before:
            self._publish(after)
            self._post(ManagerChanged(iface=iface or "*", detail=why))

    def _on_message(self, msg: Message) -> None:
        if msg.message_type != MessageType.SIGNAL:
            return
        if msg.member == "NameOwnerChanged" and msg.body and msg.body[0] == NM:
            new_owner = msg.body[2]
            if new_owner:
                log.info("NetworkManager (re)appeared on the bus: taking a new snapshot")
                self._spawn(self._resnapshot())
            else:
                log.info("NetworkManager left the bus: forgetting its view")
                self._set(Mirror(), "NetworkManager stopped")
            return
        if msg.member == "DeviceRemoved" and msg.body:
            self._set(nm_mirror.remove_device(self._mirror, str(msg.body[0])), "device removed")
            return
        if msg.member == "DeviceAdded" and msg.body:
            self._spawn(self._refresh_device(str(msg.body[0])))
            return
        if msg.member == "PropertiesChanged" and msg.body and msg.path:
            self._properties_changed(msg.path, str(msg.body[0]), plain(msg.body[1]))
        elif msg.member == "StateChanged" and msg.path:
            self._spawn(self._refresh_device(msg.path))

    def _properties_changed(self, path: str, iface: str, changed: dict[str, Any]) -> None:
        if iface == NM and path == NM_PATH:
            self._set(nm_mirror.update_manager(self._mirror, changed), "NetworkManager settings")
            return
        if iface == DEVICE:
            if path not in self._mirror.devices or "State" in changed:
                # unknown object, or (de)activated: fetch it whole (applied connection too)
                self._spawn(self._refresh_device(path))
                return
            mirror = nm_mirror.update_device(self._mirror, path, changed)
            missing = nm_mirror.config_paths(mirror) - set(mirror.gateways)
            name = mirror.devices[path].ip_iface or mirror.devices[path].iface
            self._set(mirror, f"device {', '.join(sorted(changed))} changed", name)
            if missing:
                self._spawn(self._refresh_device(path))
        elif iface in IP_CONFIGS:
            self._set(nm_mirror.update_ip_config(self._mirror, path, changed), "gateway changed")
        elif iface == DHCP4:
            self._set(nm_mirror.update_dhcp4_config(self._mirror, path, changed), "DHCP lease changed")

    async def _refresh_device(self, path: str) -> None:
        bus = self._bus
        if bus is None:
            return
        mirror = await self._fetch_device(bus, self._mirror, path)
        dev = mirror.devices.get(path)
        self._set(mirror, "device state", (dev.ip_iface or dev.iface) if dev else "")

    async def _resnapshot(self) -> None:
        if self._bus is not None:
            try:
                await self._snapshot(self._bus)
            except DBusError as exc:
                log.warning("NetworkManager snapshot failed: %s", exc)

    def _spawn(self, coro: Any) -> None:
        # keep a reference: the event loop holds tasks only weakly
        task = asyncio.ensure_future(coro)
        self._fetching.add(task)
        task.add_done_callback(self._fetching.discard)
