"""Start-up trust (service/startup.py): the links a restarted daemon finds in the kernel's
balance group, from a nexthop group or a legacy multipath route (no root: the fake kernel)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from fakes import lab_config, lab_kernel

from wanhooks.model import KernelFeatures
from wanhooks.reconcile.round import converge
from wanhooks.service.startup import group_members

WITHOUT_NEXTHOP_OBJECTS = KernelFeatures(nexthop_objects=False, resilient_groups=False)


@pytest.mark.parametrize("features", [KernelFeatures(), WITHOUT_NEXTHOP_OBJECTS], ids=["groups", "legacy"])
def test_the_links_in_the_kernels_balance_are_the_trusted_ones(features: KernelFeatures) -> None:
    kernel = lab_kernel(features=features)
    assert group_members(kernel.observe(), kernel.dump_owned()) == set()  # nothing installed yet
    converge(lab_config(), kernel, "/nonexistent")
    trusted = group_members(kernel.observe(), kernel.dump_owned())
    assert {name for name, family in trusted if family == 4} == {"w1", "w2", "w3"}
    w2_down = replace(kernel.observe().links[2], flags=0)  # w2 loses carrier and admin state
    kernel.set_link(w2_down)
    converge(lab_config(), kernel, "/nonexistent")
    assert {name for name, family in group_members(kernel.observe(), kernel.dump_owned()) if family == 4} == {
        "w1",
        "w3",
    }
