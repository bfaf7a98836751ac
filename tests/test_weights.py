"""plan/weights.py: the kernel's weights from configured and measured ones (pure)."""

from __future__ import annotations

from wanhooks.model import Capacity, LinkConfig
from wanhooks.plan.weights import KERNEL_WEIGHT_MAX, kernel_weights, values

MBIT = 1e6


def link(name: str, weight: int = 1, auto: bool = False, hint: float | None = None) -> tuple[str, LinkConfig]:
    capacity = Capacity(down_bps=hint, up_bps=hint) if hint is not None else None
    return name, LinkConfig(interface=name, weight=weight, auto_weight=auto, capacity=capacity)


def test_without_auto_the_configured_weights_go_to_the_kernel_unchanged() -> None:
    assert kernel_weights([link("a", 1), link("b", 2)], {"a": 50 * MBIT}) == {"a": 1, "b": 2}


def test_measured_capacities_set_the_ratio_and_the_largest_gets_the_top_weight() -> None:
    got = kernel_weights(
        [link("a", auto=True), link("b", auto=True), link("c", auto=True)],
        {"a": 5 * MBIT, "b": 20 * MBIT, "c": 10 * MBIT},
    )
    assert got == {"a": 64, "b": KERNEL_WEIGHT_MAX, "c": 128}


def test_a_fixed_weight_beside_auto_links_counts_as_mbit_per_second() -> None:
    got = values([link("fibre", auto=True), link("lte", weight=10)], {"fibre": 40 * MBIT})
    assert got == {"fibre": 40 * MBIT, "lte": 10 * MBIT}


def test_an_unmeasured_auto_link_takes_its_hint_then_the_mean_of_the_known() -> None:
    links = [link("a", auto=True, hint=8 * MBIT), link("b", auto=True), link("c", auto=True)]
    assert values(links, {"c": 20 * MBIT}) == {"a": 8 * MBIT, "b": 14 * MBIT, "c": 20 * MBIT}
    # the measurement wins over the hint
    assert values(links, {"a": 6 * MBIT, "c": 20 * MBIT})["a"] == 6 * MBIT


def test_nothing_known_weighs_auto_links_alike_or_like_the_fixed_ones() -> None:
    assert kernel_weights([link("a", auto=True), link("b", auto=True)], {}) == {"a": 256, "b": 256}
    assert values([link("a", auto=True), link("b", weight=4), link("c", weight=2)], {})["a"] == 3 * MBIT


def test_a_tiny_link_still_gets_weight_one() -> None:
    got = kernel_weights([link("a", auto=True), link("b", auto=True)], {"a": 1 * MBIT, "b": 1000 * MBIT})
    assert got == {"a": 1, "b": 256}
