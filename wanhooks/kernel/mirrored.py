"""The daemon's kernel: LinuxKernel whose reads come from a Mirror (mirror.py) kept current
by rtnetlink notifications, so a round costs what changed, not what exists.

The subscription is opened before anything is dumped, so no change falls between
a dump and the notifications that follow it; replaying a notification the dump
already shows changes nothing (each one says what an object is now, or that it is
gone).  Reads first take every pending notification (a write's own notification is
queued before the write's ack: after a write, the next read sees it), then read
again, with dumps filtered to them, whatever those notifications left in doubt.

A full dump confirms the mirror -- at start-up, after a buffer overrun or an
unreadable message (notifications were lost), after a write the kernel refused,
and every MIRROR_CONFIRM_S -- and replaces it.  A disagreement where nothing was
lost is a bug in the rules of mirror.py: it is logged with what differed.
"""

from __future__ import annotations

import errno
import logging
import struct
import time
from collections.abc import Callable, Sequence

from pyroute2.netlink.rtnl.ifaddrmsg import ifaddrmsg
from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

from .. import constants as c
from ..model import Address, KernelFeatures, MainDefault, Nexthop, NexthopGroup, Observed, Op, OpResult, Owned
from ..router import nft
from . import codec, wire
from .linux import PROC_SYS, LinuxKernel
from .messages import RTM_GETNEXTHOP, nhmsg, rtmsg_nh
from .mirror import Dirty, Mirror, differences
from .netlink import (
    LAYOUTS,
    RTM_GETADDR,
    RTM_GETLINK,
    NetlinkError,
    subscribe,
)

log = logging.getLogger("wanhooks")


def _gone_is_empty(dump: Callable[..., list[wire.Message]], *args: object) -> list[wire.Message]:
    """A dump filtered to a device or table that is gone: the kernel refuses it (ENODEV,
    ENOENT) where nothing is there to show -- an empty answer."""
    try:
        return dump(*args)
    except NetlinkError as err:
        if err.errno in (errno.ENODEV, errno.ENOENT):
            return []
        raise


class MirroredKernel(LinuxKernel):
    def __init__(self, proc_sys: str = PROC_SYS) -> None:
        self._sub = subscribe()[0]  # before the first dump (module docstring)
        super().__init__(proc_sys)
        self._own = self._nl.portid  # its writes' echoes carry it
        self.mirror = Mirror()
        self._features: KernelFeatures | None = None
        self._confirm: tuple[str, bool] | None = ("start-up", False)  # due: why, and if it should agree
        self.confirmed_at = 0.0
        self.confirms = 0  # full dumps taken
        # sysctls as last read or written: no notification tells of a knob's change, so
        # another program's is seen at the next confirm (a re-created device's at once)
        self._sysctls: dict[str, str | None] = {}
        self.disagreements = 0  # confirms that found the mirror wrong where nothing was lost

    def close(self) -> None:
        self._sub.close()
        super().close()

    # --- reads: from the mirror -----------------------------------------------------

    def observe(self) -> Observed:
        self._sync()
        assert self._features is not None
        return self.mirror.observed(self._features)

    def dump_owned(self) -> Owned:
        self._sync()
        return self.mirror.owned()

    def execute(self, ops: Sequence[Op]) -> list[OpResult]:
        results = super().execute(ops)
        for result in results:
            if result.ok:
                continue
            # the world moved under a link (a carrier lost before the kernel told of it):
            # read that link again; a refusal no link explains gets a full dump
            devices = self.mirror.devices_of(result.op.obj)
            if devices:
                self.mirror.dirty.reread |= devices
            else:
                self.request_confirm(
                    f"the kernel refused {result.op.action.value} {result.op.obj}", agree=True
                )
        return results

    def request_confirm(self, why: str, *, agree: bool) -> None:
        """A full dump before the next read.  agree: the mirror should match it (nothing was
        lost), so a difference is a bug worth a warning."""
        if self._confirm is None or (self._confirm[1] and not agree):
            self._confirm = (why, agree)

    def _sync(self) -> None:
        self.drain()
        if self._confirm is not None:
            self.confirm()
        elif self.mirror.dirty:
            try:
                self._settle()
            except OSError as exc:  # what was in doubt is not known now: a full dump next
                self.request_confirm(f"a filtered read failed ({exc})", agree=False)
                raise

    def read_firewall(self) -> nft.TableState:
        """The table as this object last read or wrote it: `nft` is a process (50 ms with
        256 links' table), and the daemon re-reads it every FIREWALL_VERIFY_S
        (verify_firewall), as it confirms the mirror -- where another program's change is
        found, and a failed write leaves it unknown (read at once)."""
        if self._firewall is not None:
            return self._firewall[1]
        return super().read_firewall()

    def read_sysctl(self, path: str) -> str | None:
        if path not in self._sysctls:
            self._sysctls[path] = super().read_sysctl(path)
        return self._sysctls[path]

    def write_sysctl(self, path: str, value: str) -> None:
        self._sysctls.pop(path, None)  # a failed write leaves it unknown
        super().write_sysctl(path, value)
        self._sysctls[path] = value

    # --- notifications --------------------------------------------------------------

    def drain(self) -> int:
        """Take every pending notification into the mirror; how many."""
        taken = 0
        while True:
            try:
                data = self._sub.recv(1 << 20)
            except BlockingIOError:
                return taken
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.request_confirm("netlink buffer overrun: notifications were lost", agree=False)
                continue
            offset = 0
            while offset + wire.NLMSGHDR.size <= len(data):
                length, kind, _flags, _seq, sender = wire.NLMSGHDR.unpack_from(data, offset)
                if length < wire.NLMSGHDR.size:
                    break
                layout = LAYOUTS.get(kind)
                if layout is not None:
                    try:
                        msg = wire.parse(kind, layout, data[offset : offset + length])
                        self.mirror.take(msg, ours=sender == self._own)
                    except (struct.error, IndexError, ValueError):
                        self.request_confirm("an rtnetlink message that could not be read", agree=False)
                    taken += 1
                offset += (length + 3) & ~3

    def _settle(self) -> None:
        """Read again what the notifications left in doubt (mirror.py), with filtered dumps."""
        mirror = self.mirror
        for index in sorted(mirror.dirty.reread):
            request = ifinfmsg()
            request["index"] = index
            link = self._nl.get(request, RTM_GETLINK)
            if link is not None:
                mirror.take(link)
            mirror.dirty.links.add(index)
        dirty, mirror.dirty = mirror.dirty, Dirty()
        for index in sorted(dirty.addresses | dirty.links):
            if index in mirror.links:
                mirror.replace_addresses(index, self._addresses_of(index))
        tables = set(dirty.tables)
        if dirty.links or dirty.nexthops_gone:
            through = {nh.id for nh in mirror.nexthops.values() if nh.oif in dirty.links}
            tables.update(mirror.tables_through(dirty.links, through | dirty.nexthops_gone))
            for index in sorted(dirty.links):
                self._read_nexthops(index)
            self._read_groups()
            for family in (4, 6):
                for index in sorted(dirty.links):
                    mirror.replace_main_defaults(family, index, self._main_defaults(family, index))
            mirror.has_default.clear()  # a catch-all table's default may have gone with a link
        for family, oif in sorted(dirty.main):
            found = self._main_defaults(family, oif or None)
            mirror.replace_main_defaults(family, oif or None, found)
        for family, table in sorted(tables):
            msgs = _gone_is_empty(self._owned_route_msgs, family, table)
            routes = (codec.route_from_msg(m) for m in msgs)
            mirror.replace_table((family, table), (r for r in routes if r is not None))
        for stale in dirty.defaults:
            mirror.has_default.pop(stale, None)
        if dirty.devices:
            marks = tuple(f"/conf/{name}/" for name in dirty.devices)
            self._sysctls = {p: v for p, v in self._sysctls.items() if not any(m in p for m in marks)}
        self._read_policy_tables(mirror)

    # --- filtered dumps -----------------------------------------------------------

    def _addresses_of(self, index: int) -> list[Address]:
        request = ifaddrmsg()
        request["index"] = index
        found = []
        for msg in _gone_is_empty(self._nl.dump, request, RTM_GETADDR):
            parsed = codec.address_from_msg(msg)
            if parsed is not None and parsed[0] == index:
                found.append(parsed[1])
        return found

    def _nexthop_dump(self, attrs: list[tuple[str, object]]) -> list[wire.Message]:
        if not self._nexthops_supported():
            return []
        request = nhmsg()
        request["attrs"] = attrs
        try:
            return list(self._nl.dump(request, RTM_GETNEXTHOP))
        except NetlinkError as err:
            if err.errno in (errno.ENODEV, errno.ENOENT):  # the device is gone: nothing on it
                return []
            raise

    def _read_nexthops(self, index: int) -> None:
        msgs = self._nexthop_dump([("NHA_OIF", index)])
        self.mirror.replace_nexthops(index, (n for n in self._owned_nexthops(msgs) if isinstance(n, Nexthop)))
        self.mirror.replace_foreign(index, self._foreign_ids(msgs))

    def _read_groups(self) -> None:
        msgs = self._nexthop_dump([("NHA_GROUPS", True)])
        self.mirror.replace_groups(n for n in self._owned_nexthops(msgs) if isinstance(n, NexthopGroup))
        self.mirror.replace_foreign(None, self._foreign_ids(msgs))

    def _owned_nexthops(self, msgs: list[wire.Message]) -> list[Nexthop | NexthopGroup]:
        out = []
        for msg in msgs:
            self.mirror.families[codec.nexthop_id(msg)] = codec.nexthop_family(msg)
        for msg in msgs:
            if codec.nexthop_protocol(msg) == c.RTPROT_WANHOOKS:
                obj = codec.nexthop_from_msg(msg, self.mirror.families)
                if obj is not None:
                    out.append(obj)
        return out

    @staticmethod
    def _foreign_ids(msgs: list[wire.Message]) -> dict[int, int | None]:
        return {
            codec.nexthop_id(m): m.u32(codec.NHA_OIF)
            for m in msgs
            if codec.nexthop_protocol(m) != c.RTPROT_WANHOOKS and c.is_owned_nexthop_id(codec.nexthop_id(m))
        }

    def _main_defaults(self, family: int, oif: int | None) -> list[MainDefault]:
        request = rtmsg_nh()
        request["family"] = codec.AF[family]
        request["table"] = c.TABLE_MAIN
        request["attrs"] = [("RTA_TABLE", c.TABLE_MAIN)] + ([("RTA_OIF", oif)] if oif else [])
        found = (codec.main_default_from_msg(m) for m in _gone_is_empty(self._table_dump, request))
        return [d for d in found if d is not None and (oif is None or d.oif == oif)]

    def _read_policy_tables(self, mirror: Mirror) -> None:
        for family, table in mirror.policy_tables():
            if (family, table) not in mirror.has_default:
                mirror.set_has_default((family, table), self._has_default(family, table))

    # --- the full dump ------------------------------------------------------------

    def confirm(self) -> list[str]:
        """Dump everything, replace the mirror with it; what differed, when the mirror should
        have agreed (logged as a bug)."""
        why, agree = self._confirm or ("the periodic check", True)
        self._confirm = None
        if self.mirror.dirty:
            self._settle()
        before = (self.mirror.observed(self._features), self.mirror.owned()) if self._features else None
        self._sysctls.clear()
        self._features = self.features()
        fresh = Mirror()
        by_link: dict[int, list[Address]] = {}
        for msg in self._nl.dump(ifaddrmsg(), RTM_GETADDR):
            parsed = codec.address_from_msg(msg)
            if parsed is not None:
                by_link.setdefault(parsed[0], []).append(parsed[1])
        for msg in self._nl.dump(ifinfmsg(), RTM_GETLINK):
            fresh.links[msg.fields[2]] = msg
            fresh.addresses[msg.fields[2]] = tuple(by_link.get(msg.fields[2], ()))
        for family in (4, 6):
            fresh.replace_main_defaults(family, None, self._main_defaults(family, None))
            for msg in self._rule_msgs(family):
                fresh.take(msg)
            for msg in self._owned_route_msgs(family):
                route = codec.route_from_msg(msg)
                if route is not None:
                    fresh.routes.setdefault((family, route.table), {})[route.key] = route
        every = self._nexthop_msgs()
        fresh.families = {codec.nexthop_id(m): codec.nexthop_family(m) for m in every}
        for msg in every:
            fresh.take(msg)
        fresh.dirty = Dirty()
        self._read_policy_tables(fresh)
        self.mirror = fresh
        self.confirmed_at = time.monotonic()
        self.confirms += 1
        changed_meanwhile = self.drain()  # changes during the dump: a difference may be theirs
        if before is None:
            return []
        found = differences(before, (fresh.observed(self._features), fresh.owned()))
        if found and agree and not changed_meanwhile:
            self.disagreements += 1
            shown = "; ".join(found[:20]) + (f"; and {len(found) - 20} more" if len(found) > 20 else "")
            log.warning(
                "kernel mirror: a full dump (%s) disagreed with it -- a bug in wanhooks: %s", why, shown
            )
        elif found:
            log.info("kernel mirror: re-read in full (%s): %d difference(s)", why, len(found))
        return found if agree and not changed_meanwhile else []
