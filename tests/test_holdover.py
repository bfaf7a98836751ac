"""Gateway hold-over is pure: time is an argument."""

from __future__ import annotations

from dataclasses import replace

from fakes import lab_kernel, main_default, wan

from wanhooks.plan.holdover import Holds, hold_gateways


def gateways(observed):  # type: ignore[no-untyped-def]
    return {(d.oif, d.family): str(d.gateway) for d in observed.main_defaults}


def test_a_vanished_gateway_is_held_then_released() -> None:
    kernel = lab_kernel()
    kernel.main_defaults = [main_default(4, 11, "100.64.1.1")]
    managed = {11, 12, 13}
    obs, holds = hold_gateways(kernel.observe(), Holds(), managed, now=0.0, hold_s=1.5)
    assert gateways(obs) == {(11, 4): "100.64.1.1"} and holds.deadline is None
    kernel.main_defaults = []  # DHCP rebind: the route goes, carrier and address stay
    obs, holds = hold_gateways(kernel.observe(), holds, managed, now=10.0, hold_s=1.5)
    assert gateways(obs) == {(11, 4): "100.64.1.1"} and holds.deadline == 11.5
    obs, holds = hold_gateways(kernel.observe(), holds, managed, now=11.0, hold_s=1.5)
    assert gateways(obs) == {(11, 4): "100.64.1.1"}
    obs, holds = hold_gateways(kernel.observe(), holds, managed, now=11.6, hold_s=1.5)
    assert gateways(obs) == {} and holds.deadline is None
    obs, holds = hold_gateways(kernel.observe(), holds, managed, now=12.0, hold_s=1.5)
    assert gateways(obs) == {}  # not held again


def test_a_gateway_that_comes_back_ends_the_hold() -> None:
    kernel = lab_kernel()
    kernel.main_defaults = [main_default(4, 11, "100.64.1.1")]
    _, holds = hold_gateways(kernel.observe(), Holds(), {11}, now=0.0, hold_s=1.5)
    kernel.main_defaults = []
    _, holds = hold_gateways(kernel.observe(), holds, {11}, now=1.0, hold_s=1.5)
    kernel.main_defaults = [main_default(4, 11, "100.64.1.9")]  # a changed gateway: followed at once
    obs, holds = hold_gateways(kernel.observe(), holds, {11}, now=1.2, hold_s=1.5)
    assert gateways(obs) == {(11, 4): "100.64.1.9"} and not holds.held


def test_no_hold_when_carrier_or_address_went_too() -> None:
    kernel = lab_kernel()
    kernel.main_defaults = [main_default(4, 11, "100.64.1.1"), main_default(4, 12, "100.64.2.1")]
    _, holds = hold_gateways(kernel.observe(), Holds(), {11, 12}, now=0.0, hold_s=1.5)
    kernel.main_defaults = []
    kernel.set_link(wan(11, "w1", 1, carrier=False))
    kernel.set_link(replace(wan(12, "w2", 2), addresses=()))
    obs, holds = hold_gateways(kernel.observe(), holds, {11, 12}, now=1.0, hold_s=1.5)
    assert gateways(obs) == {} and not holds.held


def test_unmanaged_links_are_never_held() -> None:
    kernel = lab_kernel()
    kernel.main_defaults = [main_default(4, 11, "100.64.1.1")]
    _, holds = hold_gateways(kernel.observe(), Holds(), set(), now=0.0, hold_s=1.5)
    kernel.main_defaults = []
    obs, _ = hold_gateways(kernel.observe(), holds, set(), now=1.0, hold_s=1.5)
    assert gateways(obs) == {}
