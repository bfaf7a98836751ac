"""One reconcile round: snapshot, plan, reconcile -- the path both `apply` and the daemon take."""

from __future__ import annotations

from dataclasses import dataclass

from .kernel import Kernel
from .model import Config, Desired, Observed
from .plan import plan
from .reconcile import Report, reconcile


@dataclass(frozen=True)
class Round:
    observed: Observed
    desired: Desired
    report: Report


def converge(config: Config, kernel: Kernel, run_dir: str, attempts: int = 3) -> Round:
    """Snapshot, plan and reconcile; if the kernel refused something, look again and retry.

    A refusal usually means the world moved between the snapshot and the
    write (a carrier lost, an address removed): a fresh snapshot gives a
    plan the kernel accepts.
    """
    observed = kernel.observe()
    desired = plan(config, observed)
    report = reconcile(desired, kernel, run_dir)
    for _ in range(attempts - 1):
        if not report.failed:
            break
        observed = kernel.observe()
        desired = plan(config, observed)
        retry = reconcile(desired, kernel, run_dir)
        retry.done[:0] = report.done
        retry.sysctls[:0] = report.sysctls
        retry.notes[:0] = report.notes
        report = retry
    return Round(observed, desired, report)
