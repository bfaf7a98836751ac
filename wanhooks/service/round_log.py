"""What a round says: the log lines and systemd's STATUS= that tell an admin what the
daemon decided and why, made from the round's typed results (text only here)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

from .. import constants as c
from ..events import Event, describe
from ..model import Desired, Observed
from ..observe.log_format import about
from ..observe.status import link_state, why_not
from ..plan.holdover import Holds
from ..plan.names import shown
from ..reconcile.diff import Report
from ..reconcile.render import op_text
from ..reconcile.round import Round

log = logging.getLogger("wanhooks")


@dataclass
class RoundLog:
    """A round's lines: its trigger, decision, new notes and kernel changes when any of
    them changed (not every round's repetition), and every refusal and conflict."""

    decision: str = ""
    notes: list[str] = field(default_factory=list)

    def after(self, number: int, triggers: list[Event], result: Round, elapsed_ms: float) -> None:
        report, now = result.report, decision(result.desired)
        notes = list(result.desired.notes)
        if report.changed or now != self.decision or notes != self.notes:
            names = {link.index: link.name for link in result.observed.links}
            log.info("trigger: %s", summarize(triggers))
            if now != self.decision:
                log.info("decision: %s", now)
            for note in notes:
                if note not in self.notes:
                    log.info("note: %s", note)
            for change in report.sysctls:
                log.info(
                    "kernel: ~ sysctl %s %s -> %s", change.path.replace("/", "."), change.old, change.new
                )
            for done in report.done:
                log.info("kernel: %s", op_text(done.op, names))
            if report.firewall_changed:
                log.info("kernel: ~ nftables table %s %s", c.NFT_FAMILY, c.NFT_TABLE)
            log.info("round %d: %d changes in %.1f ms", number, len(report.done), elapsed_ms)
        self.decision, self.notes = now, notes
        for failed in report.failed:
            log.warning("kernel refused: %s: %s", failed.op.obj, failed.message or os.strerror(failed.error))
        for text in report.conflicts:
            log.warning("conflict: %s", text)
        for text in report.sysctl_errors:
            log.warning("sysctl: %s", text)
        for text in report.firewall_errors:
            log.warning("%s", text)


def decision(desired: Desired) -> str:
    """Which links carry balanced traffic, per family, and why the others do not."""
    parts = []
    for family in (4, 6):
        members = [f"{lp.name} x{lp.weight}" for lp in desired.links if lp.eligible[family]]
        out = [f"{lp.name}: {lp.reasons[family]}" for lp in desired.links if not lp.eligible[family]]
        text = f"IPv{family} balance {', '.join(members) if members else 'none (main table default)'}"
        parts.append(text + (f" ({'; '.join(out)})" if out else ""))
    return " | ".join(parts)


def log_gateways(observed: Observed, before: Holds, after: Holds, hold_s: float) -> None:
    """Each link's learned gateway changing, held over a rebind, back or let go: one line each."""

    def name(ifindex: int) -> str:
        link = observed.link(ifindex)
        return link.name if link is not None else f"if{ifindex}"

    for key in sorted(after.held.keys() - before.held.keys()):
        gateway = after.held[key][0].gateway
        log.info(
            "link %s IPv%d: gateway %s gone while carrier and address stay: held for %g s",
            name(key[0]), key[1], gateway, hold_s, extra=about(name(key[0]), key[1]),
        )  # fmt: skip
    for key in sorted(before.held.keys() - after.held.keys()):
        back = key in after.last_seen
        log.info(
            "link %s IPv%d: %s", name(key[0]), key[1],
            "gateway back, hold ended" if back else f"held gateway {before.held[key][0].gateway} let go",
            extra=about(name(key[0]), key[1]),
        )  # fmt: skip
    for key, default in sorted(after.last_seen.items()):
        old = before.last_seen.get(key)
        if old is not None and old.gateway != default.gateway:
            log.info(
                "link %s IPv%d: gateway %s -> %s", name(key[0]), key[1], old.gateway, default.gateway,
                extra=about(name(key[0]), key[1]),
            )  # fmt: skip


def status_line(desired: Desired) -> str:
    """systemd's STATUS=: which links carry balanced traffic, and why the others do not."""
    if not desired.links:
        return "no managed link: traffic takes the main table's default"
    balanced = [lp for lp in desired.links if any(lp.eligible.values())]
    text = f"{len(balanced)} of {len(desired.links)} links balanced"
    if balanced:
        text += ": " + " ".join(shown(lp.name, 16) for lp in balanced)
    out = []
    for lp in desired.links:
        if not any(lp.eligible.values()):
            why = why_not(lp)
            state = link_state(lp, lp.eligible)
            out.append(f"{shown(lp.name, 16)} {state}" + (f" ({shown(why, 48)})" if why else ""))
    return text + ("; " + ", ".join(out) if out else "")


def sync_problem(report: Report, pending: int) -> str:
    """Why the kernel does not match the plan after a round ("" when it does)."""
    if report.failed:
        return f"the kernel refused {len(report.failed)} change(s)"
    if report.conflicts:
        return f"{len(report.conflicts)} conflict(s) with another program: {report.conflicts[0]}"
    if report.firewall_errors:
        return report.firewall_errors[0]
    if report.sysctl_errors:
        return f"sysctl: {report.sysctl_errors[0]}"
    if pending:
        return f"{pending} change(s) still to make"
    return ""


def summarize(triggers: list[Event]) -> str:
    if not triggers:
        return "timer"
    first = [describe(e) for e in triggers[:4]]
    more = f" (+{len(triggers) - 4} more)" if len(triggers) > 4 else ""
    return ", ".join(first) + more
