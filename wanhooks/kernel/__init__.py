"""The kernel seam: everything wanhooks reads from or writes to the kernel.

`Kernel` is the interface; `linux.LinuxKernel` speaks rtnetlink and
`fake.FakeKernel` is an in-memory kernel for unit tests.  The reconciler and
the CLI only ever see this interface, so the fake drives the same code path
as production.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from ..model import KernelObject, LinkCounters, Observed, Op, OpResult, Owned
from ..router.nft import TableState


class Kernel(Protocol):
    def observe(self) -> Observed:
        """Links, addresses, main-table defaults and kernel features, now."""
        ...

    def dump_owned(self) -> Owned:
        """Every rule, route and nexthop carrying wanhooks' protocol id."""
        ...

    def link_counters(self) -> dict[str, LinkCounters]:
        """Every link's packet and byte counters, by name."""
        ...

    def execute(self, ops: Sequence[Op]) -> list[OpResult]:
        """Apply in order; one result per op.  A failure does not stop the rest."""
        ...

    def holder(self, obj: KernelObject) -> int | None:
        """Protocol id of whatever occupies obj's identity in the kernel; None if nothing."""
        ...

    def read_sysctl(self, path: str) -> str | None:
        """Value of /proc/sys/<path>, or None where the kernel has no such knob."""
        ...

    def write_sysctl(self, path: str, value: str) -> None: ...

    def read_firewall(self) -> TableState:
        """wanhooks' nftables table as it is now (NO_TABLE when there is none)."""
        ...

    def write_firewall(self, text: str) -> None:
        """Replace wanhooks' nftables table with text ("" removes it), atomically."""
        ...

    def evidence(self) -> dict[tuple[str, int], tuple[int, int]]:
        """Evidence of life (router/nft.py), by (link, family): packets heard from beyond the
        link on established connections, packets sent beyond it.  {} without the table."""
        ...

    def verify_firewall(self) -> bool:
        """Re-read wanhooks' nftables table; False when it is not what was last read or
        written (another program changed or removed it).  True where there is no nftables."""
        ...

    @property
    def portid(self) -> int:
        """Netlink port id of the writes (the daemon tells its own echoes from others')."""
        ...

    def close(self) -> None: ...
