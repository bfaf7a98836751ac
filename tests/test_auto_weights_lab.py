"""weight: auto against the real kernel: links of 5, 20 and 10 Mbit/s weighed by what they
carry while full (root only).  The demo covers uploads and a line slowing down mid-run; this
covers downloads, and what `status` and the metrics say."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from conftest import DaemonProc, Router, wait_for

from wanhooks import constants as c
from wanhooks.lab import SERVER4

pytestmark = [pytest.mark.kernel, pytest.mark.serial]  # timings measured: run alone
Start = Callable[..., DaemonProc]

RATES = {"w1": 5.0, "w2": 20.0, "w3": 10.0}
CONFIG = """\
weight: auto
links:
  - {interface: w1, gateway: 100.64.1.1}
  - {interface: w2, gateway: 100.64.2.1}
  - {interface: w3, gateway: 100.64.3.1}
health:
  targets: [203.0.113.10, 203.0.113.11]
"""


def shares(router: Router) -> dict[str, float]:
    lab = router.lab
    nexthops = {n["id"]: n for n in lab.ip_json(lab.router, "nexthop", "show")}
    group = nexthops.get(c.NH_GROUP_V4, {"group": []})
    weights = {nexthops[m["id"]]["dev"]: m.get("weight", 1) for m in group["group"]}
    total = sum(weights.values())
    return {name: w / total for name, w in weights.items()}


def near_capacity(router: Router) -> bool:
    now, total = shares(router), sum(RATES.values())
    return set(now) == set(RATES) and all(abs(now[n] / (r / total) - 1) <= 0.15 for n, r in RATES.items())


def status_links(router: Router) -> dict[str, dict[str, Any]]:
    doc = json.loads(router.wanhooks("status", "--json").stdout)
    return {link["name"]: link for link in doc["links"]}


def all_measured(router: Router) -> bool:
    """Every link measured full, its download estimate near its rate (a first saturated
    second may be a partial one, its estimate low until the next seconds raise it)."""
    links = status_links(router)
    return all(
        name in links
        and links[name]["capacity"]["measured"]
        and 0.8 * rate <= (links[name]["capacity"]["down"]["bps"] or 0) / 1e6 <= 1.1 * rate
        for name, rate in RATES.items()
    )


def test_downloads_set_the_weights_to_the_links_capacities(router: Router, daemon_factory: Start) -> None:
    lab = router.lab
    for i, rate in enumerate(RATES.values(), 1):
        lab.shape(i, rate)
    router.write_config(CONFIG)
    daemon = daemon_factory()
    wait_for(lambda: len(shares(router)) == 3, 10, "a 3-way group")
    assert set(shares(router).values()) == {1 / 3}  # nothing measured yet: alike
    source = lab.spawn(lab.internet, "tcp-source", "--port", "9300", "--seconds", "90")
    assert source.stdout is not None and source.stdout.readline().strip() == "ready"
    pull = lab.spawn(
        lab.lan, "tcp-churn", "--dst", SERVER4, "--port", "9300", "--flows", "12", "--life", "4",
        "--seconds", "80", "--pull",
    )  # fmt: skip
    try:
        # Shares can come near 5:20:10 before every link is measured full (an unmeasured
        # link is weighed by what it carries), so wait for both.
        wait_for(lambda: near_capacity(router) and all_measured(router), 60, "measured shares near 5:20:10")
        links = status_links(router)
        for name, rate in RATES.items():
            cap = links[name]["capacity"]
            assert links[name]["auto_weight"] and cap["measured"], cap
            assert cap["down"]["evidence"] == "saturated", cap
            assert 0.8 * rate <= cap["down"]["bps"] / 1e6 <= 1.1 * rate, cap
            assert cap["why"].startswith("download capacity"), cap
        text = router.wanhooks("status").stdout
        assert "auto weights, from each link's measured capacity" in text
        assert "weights: " in daemon.text()  # the log says each change and why
    finally:
        for proc in (pull, source):
            proc.terminate()
