"""The delegated prefixes the daemon learned (plan/delegations.py), kept in the run dir so a
restart -- an upgrade, a crash -- does not end a prefix kept for its hosts before its valid
lifetime does.  Not across a reboot: the run dir is a tmpfs, and the clock its deadlines
count by (time.monotonic(), every process's on this boot) starts again.

All are written: one kept for its hosts goes on being kept, one that leaves the LAN while
no daemon runs is kept from then, and one still there keeps the uplink it was learned with
(NetworkManager's answer may have moved on meanwhile).
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import time
from collections.abc import Iterable

from .. import constants as c
from ..model import Delegation, DelegationSource
from ..plan.names import ifname_problem
from .lock import write_private

KEPT_FILE = "delegations.json"
KNOWN = {source.value for source in DelegationSource}  # the sources save() writes


def save(run_dir: str, delegations: Iterable[Delegation]) -> None:
    """Written privately and fsynced (write_private): call it off the event loop."""
    doc = {
        "clock": "monotonic",
        "delegations": [
            {
                "link": d.link,
                "prefix": str(d.prefix),
                "source": d.source.value,
                "lan": d.lan,
                "preferred_until": d.preferred_until,
                "valid_until": d.valid_until,
                "present": d.present,
            }
            for d in delegations
        ],
    }
    write_private(os.path.join(run_dir, KEPT_FILE), json.dumps(doc))


def load(run_dir: str, now: float | None = None) -> tuple[Delegation, ...]:
    """What the last daemon saved and is still valid, as it left them: kept for their hosts,
    or on the LAN (the first round sees whether they still are: one that is keeps the uplink
    it was learned with).  The file is input like any other: an entry that is not what
    save() writes is dropped."""
    now = time.monotonic() if now is None else now
    try:
        path = os.path.join(run_dir, KEPT_FILE)
        with open(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError, RecursionError):
        return ()
    if (
        not isinstance(doc, dict)
        or doc.get("clock") != "monotonic"
        or not isinstance(doc.get("delegations"), list)
    ):
        return ()
    found = []
    for entry in doc["delegations"]:
        d = _entry(entry)
        if d is not None and d.valid_until > now:
            found.append(d)
    return tuple(found)


def _entry(entry: object) -> Delegation | None:
    if not isinstance(entry, dict):
        return None
    link, lan, source = entry.get("link"), entry.get("lan"), entry.get("source")
    preferred, valid = entry.get("preferred_until"), entry.get("valid_until")
    if not (isinstance(link, str) and isinstance(lan, str) and isinstance(source, str) and source in KNOWN):
        return None
    if ifname_problem(link) or ifname_problem(lan):
        return None
    if not all(
        isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t)
        for t in (preferred, valid)
    ):
        return None
    try:
        prefix = ipaddress.IPv6Network(entry.get("prefix"))
    except (ValueError, TypeError):
        return None
    if not c.delegable(prefix.prefixlen):
        return None
    assert isinstance(preferred, (int, float)) and isinstance(valid, (int, float))
    return Delegation(
        link,
        prefix,
        DelegationSource(source),
        lan,
        float(preferred),
        float(valid),
        entry.get("present") is True,
    )
