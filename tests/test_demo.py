"""The README's first command: the demo runs end to end and leaves nothing behind (root only)."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from wanhooks.lab import netns_names

pytestmark = pytest.mark.kernel


def test_demo_runs_and_cleans_up() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "wanhooks.demo", "--short"], capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "== Summary" in out
    assert re.search(r"active now: w1, w2, w3", out)
    total = re.search(r"total\s+([\d.]+) Mbit/s", out)
    assert total and float(total.group(1)) > 20  # more than the fastest link alone
    # its own namespaces are gone (others' labs may run meanwhile: only its prefix counts)
    prefix = re.search(r"\(namespaces (\S+)-\*\)", out)
    assert prefix is not None, out
    assert not [name for name in netns_names() if name.startswith(prefix.group(1) + "-")]
