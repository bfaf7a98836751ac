"""Hostile input against the real kernel: an invalid config changes nothing (root only).

The parser's own fuzzing (thousands of cases, no traceback ever) is in
test_config.py; here generated invalid files meet `wanhooks apply` on a
router whose routing wanhooks already manages, and each must be refused with
one located error line and exit code 2, leaving every route, rule, nexthop,
sysctl and nftables table exactly as it was.
"""

from __future__ import annotations

import os
import random
import re

import pytest
from conftest import Router
from test_config import FRAGMENTS

from wanhooks.config.load import ConfigError, parse_config

pytestmark = pytest.mark.kernel

VALID = """\
links:
  - {interface: w1, gateway: 100.64.1.1}
  - {interface: w2, gateway: 100.64.2.1, weight: 2}
nat: masquerade
pins:
  - {to: 203.0.113.77, link: w2}
"""
SAMPLES = int(os.environ.get("WANHOOKS_HOSTILE_SAMPLES", "25"))


def invalid_configs(seed: int, count: int) -> list[str]:
    """Mutations of a valid file: a fragment spliced in at a random place, until it is refused."""
    rng = random.Random(seed)
    out: list[str] = []
    while len(out) < count:
        text = VALID
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(text) + 1)
            text = text[:at] + rng.choice(FRAGMENTS) + text[at:]
        try:
            parse_config(text, "x")
        except ConfigError:
            out.append(text)
    return out


def test_invalid_configs_are_refused_with_a_located_error_and_change_nothing(router: Router) -> None:
    router.write_config(VALID)
    router.wanhooks("apply")
    before = router.snapshot()
    assert "table inet wanhooks" in before  # wanhooks' NAT is part of what must not change
    seed = int(os.environ.get("WANHOOKS_HOSTILE_SEED", random.randrange(1 << 32)))
    for n, text in enumerate(invalid_configs(seed, SAMPLES)):
        router.write_config(text)
        proc = router.wanhooks("apply", check=False)
        lines = proc.stderr.strip().splitlines()
        located = re.match(rf"wanhooks: {re.escape(str(router.config))}:\d+: .+", lines[0]) if lines else None
        assert proc.returncode == 2 and len(lines) == 1 and located, (seed, n, text, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert router.snapshot() == before, f"seed {seed}"
