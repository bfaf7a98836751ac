"""NetworkManager over D-Bus: device states, gateways, connectivity, metered.

Used when org.freedesktop.NetworkManager is on the system bus
(DBUS_SYSTEM_BUS_ADDRESS is honoured).  Subscribe first, then snapshot, so
nothing falls between the two; signals for objects not seen yet are fetched
rather than dropped.  NetworkManager restarting (its bus name changes
owner) clears the mirror and takes a new snapshot; the bus going away is
retried with backoff.  rtnetlink keeps the daemon working meanwhile.

Who may speak (issue #13): a match rule's sender= filters only broadcasts.
A signal addressed to our own unique name reaches us whoever sent it, and
the stock system bus policy lets every user send signals.  So every signal
is screened (`screen`) on what the bus itself vouches for -- its sender --
and on its shape: NetworkManager's signals must come from the unique name
that owns org.freedesktop.NetworkManager now (asked with GetNameOwner, then
followed through NameOwnerChanged, which only the bus itself can send), with
the interface, signature and object path each member has.  The values are
checked again in nm_mirror.  Whatever goes wrong with a message is caught and
logged once a minute per kind, never a traceback per message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from dbus_next.aio.message_bus import MessageBus
from dbus_next.constants import BusType, MessageType
from dbus_next.errors import DBusError
from dbus_next.message import Message
from dbus_next.signature import Variant

from ..events import Event, ManagerChanged
from ..model import ManagedDevice
from ..service.tasks import Background
from . import nm_mirror
from .nm_mirror import Mirror

log = logging.getLogger("wanhooks.networkmanager")

NM = "org.freedesktop.NetworkManager"
NM_PATH = nm_mirror.NM_PATH
DEVICE = f"{NM}.Device"
IP_CONFIGS = (f"{NM}.IP4Config", f"{NM}.IP6Config")
DHCP4 = f"{NM}.DHCP4Config"
PROPS = "org.freedesktop.DBus.Properties"
DBUS = "org.freedesktop.DBus"
DBUS_PATH = "/org/freedesktop/DBus"
NO_OWNER = f"{DBUS}.Error.NameHasNoOwner"
UNEXPECTED_REPLY = "org.wanhooks.Error.UnexpectedReply"  # our own name for a reply we refuse
BACKOFF = (0.5, 1, 2, 5, 10, 30)

MATCH_RULES = (
    f"type='signal',sender='{NM}',interface='{PROPS}',member='PropertiesChanged'",
    f"type='signal',sender='{NM}',interface='{NM}',member='DeviceAdded'",
    f"type='signal',sender='{NM}',interface='{NM}',member='DeviceRemoved'",
    f"type='signal',sender='{NM}',interface='{DEVICE}',member='StateChanged'",
    f"type='signal',sender='{DBUS}',interface='{DBUS}',member='NameOwnerChanged',arg0='{NM}'",
)

# The signals followed from NetworkManager: member -> (interface, signature)
NM_SIGNALS = {
    "PropertiesChanged": (PROPS, "sa{sv}as"),
    "DeviceAdded": (NM, "o"),
    "DeviceRemoved": (NM, "o"),
    "StateChanged": (DEVICE, "uuu"),
}
# Why a signal was refused, when that is worth no more than a debug line: NetworkManager's
# own broadcasts can land in the moment between subscribing and learning its unique name.
NOT_YET = "NetworkManager's unique name is not known (yet)"
COMPLAINT_PERIOD_S = 60.0  # one log line per kind of refused or broken message per minute
COMPLAINT_KINDS_MAX = 64  # distinct kinds remembered (the kinds are ours, but bound them anyway)


@dataclass(frozen=True)
class Header:
    """A message's header fields: the sender is the bus's word (it overwrites whatever a
    client put there); the others are the sender's, only syntactically checked by the bus."""

    message_type: MessageType
    sender: str | None
    path: str | None
    interface: str | None
    member: str | None
    signature: str

    @staticmethod
    def of(msg: Message) -> Header:
        return Header(msg.message_type, msg.sender, msg.path, msg.interface, msg.member, msg.signature)


def screen(header: Header, nm_owner: str | None) -> str | None:
    """None when the message is a signal to act on; "" when it is none of ours (dropped
    quietly: NameAcquired, method replies); else why it is refused (our own words, never
    the message's).  nm_owner: NetworkManager's unique name now, None if unknown."""
    if header.message_type != MessageType.SIGNAL:
        return ""  # replies reach bus.call by serial; we serve no methods
    if header.member == "NameOwnerChanged":
        # only the bus can send as org.freedesktop.DBus: no client can take that name
        if header.sender != DBUS or header.interface != DBUS or header.path != DBUS_PATH:
            return "a NameOwnerChanged not from the bus"
        return None if header.signature == "sss" else "a NameOwnerChanged of the wrong signature"
    if header.sender == DBUS:
        return ""  # NameAcquired, NameLost: about our own names
    if nm_owner is None:
        return NOT_YET
    if header.sender != nm_owner:
        return "a signal not from NetworkManager"
    expected = NM_SIGNALS.get(header.member or "")
    if expected is None or header.interface != expected[0]:
        return ""  # NetworkManager says more than we follow
    if header.signature != expected[1]:
        return "a NetworkManager signal of the wrong signature"
    if not nm_mirror.nm_object_path(header.path):
        return "a NetworkManager signal from outside its objects"
    return None


class Complaints:
    """Log lines about messages we refuse or fail on: at most one per kind per period, the
    next one saying how many were held back -- whoever can send us messages must not be
    able to flood the log."""

    def __init__(
        self,
        logger: logging.Logger,
        period: float = COMPLAINT_PERIOD_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = logger
        self._period = period
        self._clock = clock
        self._seen: dict[str, tuple[float, int]] = {}  # kind -> (when last logged, held back since)

    def __call__(self, level: int, kind: str, detail: str = "") -> bool:
        """Log `kind` (and detail) unless it was logged within the period; True if logged."""
        now = self._clock()
        last = self._seen.get(kind)
        if last is not None and now - last[0] < self._period:
            self._seen[kind] = (last[0], last[1] + 1)
            return False
        held = last[1] if last is not None else 0
        if last is None and len(self._seen) >= COMPLAINT_KINDS_MAX:
            self._seen.pop(next(iter(self._seen)))  # the oldest kind goes
        self._seen[kind] = (now, 0)
        more = f" ({held} more like it since the last such line, not logged)" if held else ""
        self._log.log(level, "%s%s%s", kind, f": {detail}" if detail else "", more)
        return True


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
        self._tasks = Background(self._fetch_failed)  # fetches started by signals
        # NetworkManager's unique name (":1.5") while it runs: the only sender we believe
        self._nm_owner: str | None = None
        self._owner_changes = 0  # NameOwnerChanged signals for NetworkManager handled so far
        self._complain = Complaints(log)
        # A fetch reads NetworkManager over several awaited calls; what it read is older
        # than a change signalled meanwhile.  The signalled changes are kept (numbered)
        # while any fetch runs and applied again over its result (_fetch_ended), so none
        # is lost: NetworkManager signals every change, in order.
        self._signalled: list[tuple[int, Callable[[Mirror], Mirror]]] = []
        self._seq = 0  # signalled changes so far
        self._fetches = 0  # fetches in flight
        self._snapshots = 0  # snapshots in flight: a device fetched meanwhile is fetched again after
        self._fetched_in_snapshot: set[str] = set()

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
                self._nm_owner = None
                self._set(Mirror(), "the system bus went away")
                bus.disconnect()
            await asyncio.sleep(BACKOFF[0])

    async def _session(self, bus: MessageBus) -> None:
        for rule in MATCH_RULES:  # subscribe first ...
            await self._call(bus, DBUS, DBUS_PATH, DBUS, "AddMatch", "s", [rule])
        bus.add_message_handler(self._on_message)
        changes = self._owner_changes
        owner = await self._name_owner(bus)
        if self._owner_changes != changes:
            pass  # a NameOwnerChanged came meanwhile: newer than this answer, and acted upon
        elif owner:
            self._nm_owner = owner
            await self._snapshot(bus)  # ... then look
        else:
            log.info("NetworkManager is not running: waiting for it on the bus")
        await bus.wait_for_disconnect()

    async def _name_owner(self, bus: MessageBus) -> str | None:
        """The unique name owning NetworkManager's well-known name now, or None."""
        try:
            answer = await self._call(bus, DBUS, DBUS_PATH, DBUS, "GetNameOwner", "s", [NM])
        except DBusError as exc:
            if exc.type == NO_OWNER:
                return None
            raise
        return answer[0] if answer and isinstance(answer[0], str) and answer[0].startswith(":") else None

    async def _call(
        self,
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
        if reply is None:
            raise DBusError(UNEXPECTED_REPLY, f"no reply to {member}")
        # dbus-next matches a reply to its call by serial alone: the answer must also come from
        # whom we asked (the bus, or NetworkManager as we know it now)
        expected = DBUS if dest == DBUS else self._nm_owner
        if reply.sender != expected:
            raise DBusError(UNEXPECTED_REPLY, f"the reply to {member} came from {reply.sender!r}")
        if reply.message_type == MessageType.ERROR:
            raise DBusError(reply.error_name or UNEXPECTED_REPLY, repr(reply.body)[:200])
        return list(reply.body)

    async def _get_all(self, bus: MessageBus, path: str, iface: str) -> dict[str, Any]:
        body = await self._call(bus, NM, path, PROPS, "GetAll", "s", [iface])
        props = plain(body[0]) if body else {}
        return props if isinstance(props, dict) else {}

    async def _snapshot(self, bus: MessageBus) -> None:
        began = self._fetch_began()
        self._snapshots += 1
        mirror = Mirror()
        try:
            mirror = nm_mirror.update_manager(mirror, await self._get_all(bus, NM_PATH, NM))
            answer = await self._call(bus, NM, NM_PATH, NM, "GetDevices")
            paths = answer[0] if answer and isinstance(answer[0], list) else []
            for path in paths:
                if nm_mirror.nm_object_path(path):
                    mirror = await self._fetch_device(bus, mirror, path)
        finally:
            self._snapshots -= 1
            mirror = self._fetch_ended(began, mirror)
        again, self._fetched_in_snapshot = self._fetched_in_snapshot, set()
        self._set(mirror, "snapshot")
        for path in sorted(again):  # fetched meanwhile (added after GetDevices answered): again
            self._spawn(self._refresh_device(path))
        log.info("NetworkManager: %d devices, %d activated", len(mirror.devices), len(mirror.view()))

    async def _fetch_device(self, bus: MessageBus, mirror: Mirror, path: str) -> Mirror:
        try:
            mirror = nm_mirror.update_device(mirror, path, await self._get_all(bus, path, DEVICE))
            for config in nm_mirror.config_paths(mirror) - set(mirror.gateways):
                mirror = await self._fetch_config(bus, mirror, config)
            if mirror.devices[path].state == nm_mirror.NM_DEVICE_STATE_ACTIVATED:
                applied = await self._call(bus, NM, path, DEVICE, "GetAppliedConnection", "u", [0])
                mirror = nm_mirror.update_applied(mirror, path, plain(applied[0]) if applied else {})
        except DBusError as exc:  # the object went away meanwhile: tolerated
            log.debug("NetworkManager object %s: %s", path, exc)
        return mirror

    async def _fetch_config(self, bus: MessageBus, mirror: Mirror, config: str) -> Mirror:
        if "DHCP4Config" in config:
            return nm_mirror.update_dhcp4_config(mirror, config, await self._get_all(bus, config, DHCP4))
        family = 4 if "IP4Config" in config else 6
        iface = IP_CONFIGS[0] if family == 4 else IP_CONFIGS[1]
        return nm_mirror.update_ip_config(mirror, config, await self._get_all(bus, config, iface), family)

    def _set(self, mirror: Mirror, why: str, iface: str = "") -> None:
        before = self._mirror.view()
        self._mirror = mirror
        after = mirror.view()
        if after != before:
            self._publish(after)
            self._post(ManagerChanged(iface=iface or "*", detail=why))

    def _on_message(self, msg: Message) -> None:
        """Every message the bus hands us.  Never raises: dbus-next would log a traceback for
        each, and anyone on the bus can send us messages."""
        try:
            header = Header.of(msg)
            why = screen(header, self._nm_owner)
            if why is None:
                self._handle(header, list(msg.body))
            elif why:
                self._complain(
                    logging.DEBUG if why == NOT_YET else logging.WARNING,
                    f"ignored a D-Bus signal: {why}",
                    f"{str(header.member)[:64]!r} from {str(header.sender)[:64]!r}",
                )
        except Exception as exc:  # anything at all: see the docstring
            self._complain(
                logging.WARNING,
                f"could not handle a NetworkManager signal ({type(exc).__name__})",
                f"{str(msg.member)[:64]!r}: {str(exc)[:120]!r}",
            )

    def _handle(self, header: Header, body: list[Any]) -> None:
        """A signal screen() let through: its signature is the member's, so body has its shape."""
        member, path = header.member, header.path or ""
        if member == "NameOwnerChanged":
            name, _old, new_owner = body
            if name != NM:
                return
            self._owner_changes += 1
            if new_owner:
                self._nm_owner = new_owner
                log.info("NetworkManager (re)appeared on the bus: taking a new snapshot")
                self._spawn(self._resnapshot())
            else:
                self._nm_owner = None
                log.info("NetworkManager left the bus: forgetting its view")
                self._signalled_change(lambda m: Mirror(), "NetworkManager stopped")
        elif member in ("DeviceAdded", "DeviceRemoved"):
            device = body[0]
            if not nm_mirror.nm_object_path(device):
                return
            if member == "DeviceRemoved":
                self._signalled_change(lambda m: nm_mirror.remove_device(m, device), "device removed")
            else:
                self._spawn(self._refresh_device(device))
        elif member == "PropertiesChanged":
            changed = plain(body[1])
            if isinstance(body[0], str) and isinstance(changed, dict):
                self._properties_changed(path, body[0], changed)
        elif member == "StateChanged":
            self._spawn(self._refresh_device(path))

    def _properties_changed(self, path: str, iface: str, changed: dict[str, Any]) -> None:
        if iface == NM and path == NM_PATH:
            self._signalled_change(lambda m: nm_mirror.update_manager(m, changed), "NetworkManager settings")
            return
        if iface == DEVICE:
            if path not in self._mirror.devices or "State" in changed:
                # unknown object, or (de)activated: fetch it whole (applied connection too)
                self._spawn(self._refresh_device(path))
                return
            known = sorted(nm_mirror.DEVICE_PROPERTIES.intersection(changed))  # never NetworkManager's text
            self._signalled_change(
                lambda m: nm_mirror.update_device(m, path, changed),
                f"device {', '.join(known) or 'properties'} changed",
                path,
            )
            if nm_mirror.config_paths(self._mirror) - set(self._mirror.gateways):
                self._spawn(self._refresh_device(path))
        elif iface in IP_CONFIGS:
            family = 4 if iface == IP_CONFIGS[0] else 6
            self._signalled_change(
                lambda m: nm_mirror.update_ip_config(m, path, changed, family), "gateway changed"
            )
        elif iface == DHCP4:
            self._signalled_change(
                lambda m: nm_mirror.update_dhcp4_config(m, path, changed), "DHCP lease changed"
            )

    def _signalled_change(self, update: Callable[[Mirror], Mirror], why: str, device: str = "") -> None:
        """Apply a change NetworkManager signalled (about `device`, a path, when it is one
        device's); keep it while fetches run (see __init__)."""
        self._seq += 1
        if self._fetches:
            self._signalled.append((self._seq, update))
        mirror = update(self._mirror)
        dev = mirror.devices.get(device)
        self._set(mirror, why, (dev.ip_iface or dev.iface) if dev else "")

    def _fetch_began(self) -> int:
        self._fetches += 1
        return self._seq

    def _fetch_ended(self, began: int, result: Mirror) -> Mirror:
        """result with every change signalled since the fetch began applied over it."""
        for seq, update in self._signalled:
            if seq > began:
                result = update(result)
        self._fetches -= 1
        if not self._fetches:
            self._signalled.clear()
        return result

    async def _refresh_device(self, path: str) -> None:
        bus = self._bus
        if bus is None:
            return
        began = self._fetch_began()
        fetched = self._mirror
        try:
            fetched = await self._fetch_device(bus, self._mirror, path)
        finally:
            # other fetches (another device's) may have finished meanwhile: add this
            # device's part to the mirror as it is now, not to the one this fetch began from
            mirror = self._fetch_ended(began, nm_mirror.merge_device(self._mirror, fetched, path))
        if self._snapshots:
            self._fetched_in_snapshot.add(path)
        dev = mirror.devices.get(path)
        self._set(mirror, "device state", (dev.ip_iface or dev.iface) if dev else "")

    async def _resnapshot(self) -> None:
        if self._bus is not None:
            try:
                await self._snapshot(self._bus)
            except DBusError as exc:
                log.warning("NetworkManager snapshot failed: %s", exc)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.spawn(coro)

    def _fetch_failed(self, exc: BaseException) -> None:
        """Logged rate-limited here, not as asyncio's traceback."""
        self._complain(
            logging.WARNING, f"a NetworkManager fetch failed ({type(exc).__name__})", repr(str(exc)[:120])
        )
