"""One reconcile round: snapshot, plan, reconcile -- the path both `apply` and the daemon take."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from ..kernel import Kernel
from ..model import Config, Desired, Observed, Overrides
from ..plan.planner import NO_OVERRIDES, NO_VERDICTS, plan
from ..plan.verdicts import HealthVerdicts
from ..router import nft
from .diff import Report, reconcile


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
    if report.firewall_errors and (config.nat == "masquerade" or config.nat66):
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
