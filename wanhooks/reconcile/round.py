"""One reconcile round: snapshot, plan, reconcile -- the path both `apply` and the daemon take."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from .. import constants as c
from ..kernel import Kernel
from ..model import Config, Desired, Observed, Overrides
from ..plan.planner import NO_OVERRIDES, NO_VERDICTS, plan
from ..plan.verdicts import HealthVerdicts
from ..router import nft
from .diff import Report, diff, reconcile
from .render import op_text


@dataclass(frozen=True)
class Round:
    observed: Observed
    desired: Desired
    report: Report


Adjust = Callable[[Observed], Observed]


def _identity(observed: Observed) -> Observed:
    return observed


def converge(
    config: Config,
    kernel: Kernel,
    run_dir: str,
    attempts: int = 3,
    *,
    overrides: Overrides = NO_OVERRIDES,
    adjust: Adjust = _identity,
    verdicts: Callable[[], HealthVerdicts] = lambda: NO_VERDICTS,
    capacities: Mapping[str, float] | None = None,
) -> Round:
    """Snapshot, plan and reconcile; if the kernel refused something, look again and retry.

    A refusal usually means the world moved between the snapshot and the
    write (a carrier lost, an address removed): a fresh snapshot gives a
    plan the kernel accepts.  `adjust` lets the daemon add what it knows
    beyond the kernel (gateways held over a DHCP rebind) to each snapshot.
    """
    observed = adjust(kernel.observe())
    desired = plan(config, observed, overrides, verdicts(), capacities=capacities)
    report = reconcile(desired, kernel, run_dir)
    for _ in range(attempts - 1):
        if not report.failed:
            break
        observed = adjust(kernel.observe())
        desired = plan(config, observed, overrides, verdicts(), capacities=capacities)
        report = reconcile(desired, kernel, run_dir).after(report)
    if report.firewall_errors and (
        config.nat == "masquerade" or config.nat66 or any(e.nat_address for e in config.links)
    ):
        # NAT is not as planned: take the links whose NAT is missing out of the balance
        nat_in_place = _nat_in_place(kernel)
        desired = plan(config, observed, overrides, verdicts(), nat_in_place, capacities)
        report = reconcile(desired, kernel, run_dir).after(report)
    return Round(observed, desired, report)


def _nat_in_place(kernel: Kernel) -> dict[int, frozenset[str]]:
    try:
        now = kernel.read_firewall()
    except (nft.NftError, OSError):
        return {4: frozenset(), 6: frozenset()}
    return {4: now.nat, 6: now.nat66}


def would_change(desired: Desired, observed: Observed, kernel: Kernel) -> list[str]:
    """What a round would change to make the kernel hold desired (planned from observed),
    one line each, changing nothing (`wanhooks run --dry-run`)."""
    names = {link.index: link.name for link in observed.links}
    would = [op_text(op, names) for op in diff(desired, kernel.dump_owned())]
    would += [
        f"~ sysctl {knob.path.replace('/', '.')} = {knob.value}"
        for knob in sorted(desired.sysctls, key=lambda k: k.path)
        if kernel.read_sysctl(knob.path) != knob.value
    ]
    table = f"~ nftables table {c.NFT_FAMILY} {c.NFT_TABLE}"
    try:
        if nft.digest_of(nft.render(desired.firewall)) != kernel.read_firewall().digest:
            would.append(table)
    except nft.NftError as exc:
        would.append(f"{table} (cannot read it: {exc})")
    return would
