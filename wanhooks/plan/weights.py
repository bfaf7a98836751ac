"""The kernel's weights from the configured ones and the measured capacities (pure).

Without `weight: auto` anywhere, the kernel gets the configured weights as they
are.  With it, every link gets a value in bits a second of capacity:

* an auto link: the capacity the daemon measured and applied (the larger of its
  two directions': health/capacity_watch.py; AutoWeights decides when it changes);
  before any measurement, its `capacity:` hint (the larger direction); else
  the mean of the auto links known so far; else the mean of the fixed links'
  values; else 1 Mbit/s;
* a fixed link: its weight read as Mbit/s, so `weight: 10` beside auto links
  counts as a 10 Mbit/s line.  Manual weights win: nothing measured moves them.

The values are then scaled so the largest link gets the kernel's largest
weight (256): a ratio is kept to within 0.4 % of the largest, and the smallest
link still gets 1.  Scaling over every managed link, not only the group's
members, keeps a link's kernel weight the same while others come and go.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..constants import WEIGHT_MAX as KERNEL_WEIGHT_MAX
from ..model import LinkConfig

FIXED_UNIT_BPS = 1e6  # beside auto links, weight N counts as N Mbit/s
UNKNOWN_BPS = 1e6  # no measurement, no hint, no fixed link to compare with: all alike


def uses_auto(entries: Sequence[LinkConfig]) -> bool:
    return any(e.auto_weight for e in entries)


def values(links: Sequence[tuple[str, LinkConfig]], measured: Mapping[str, float]) -> dict[str, float]:
    """Each link's value in bits a second, by the rules in the module docstring."""
    known: dict[str, float] = {}
    for name, entry in links:
        if not entry.auto_weight:
            continue
        if measured.get(name, 0.0) > 0:
            known[name] = measured[name]
        elif entry.capacity is not None and (entry.capacity.down_bps or entry.capacity.up_bps):
            known[name] = max(entry.capacity.down_bps or 0.0, entry.capacity.up_bps or 0.0)
    fixed = [entry.weight * FIXED_UNIT_BPS for _, entry in links if not entry.auto_weight]
    prior = _mean(list(known.values())) or _mean(fixed) or UNKNOWN_BPS
    return {
        name: (known.get(name, prior) if entry.auto_weight else entry.weight * FIXED_UNIT_BPS)
        for name, entry in links
    }


def kernel_weights(links: Sequence[tuple[str, LinkConfig]], measured: Mapping[str, float]) -> dict[str, int]:
    """Per link name, the weight its nexthop (or multipath hop) gets in the kernel."""
    if not uses_auto([entry for _, entry in links]):
        return {name: entry.weight for name, entry in links}
    by_name = values(links, measured)
    top = max(by_name.values(), default=0.0)
    if top <= 0:
        return {name: 1 for name in by_name}
    return {name: max(1, round(KERNEL_WEIGHT_MAX * value / top)) for name, value in by_name.items()}


def _mean(numbers: list[float]) -> float:
    return sum(numbers) / len(numbers) if numbers else 0.0
