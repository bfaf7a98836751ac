"""The command line without a kernel: config errors, check, convert (no root)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fakes import lab_config, lab_kernel, wan

from wanhooks.cli import main
from wanhooks.plan import plan, resolve_group_kind
from wanhooks.reconcile import diff, reconcile
from wanhooks.status import status_json, status_text

SEED = 'WANIFACE="w1 w2"\nGATEWAYS="100.64.1.1 100.64.2.1"\nWEIGHTS="1 3"\n'


def test_bad_config_exits_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("links:\n  - interface: w1\n    weight: 0\n")
    for command in ("check", "apply", "plan", "status"):
        assert main(["-c", str(bad), command]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith(f"wanhooks: {bad}:3: links[1].weight: ")


def test_missing_config_names_the_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-c", str(tmp_path / "nope.yaml"), "check"]) == 2
    assert str(tmp_path / "nope.yaml") in capsys.readouterr().err


def test_config_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tmp_path / "from-env.conf"
    cfg.write_text(SEED)
    monkeypatch.setenv("WANHOOKS_CONFIG", str(cfg))
    assert main(["check"]) == 0
    assert "2 link entries" in capsys.readouterr().out


def test_convert_prints_yaml_that_loads_to_the_same_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = tmp_path / "generic-balancer.conf"
    seed.write_text(SEED)
    assert main(["convert", str(seed)]) == 0
    converted = tmp_path / "converted.yaml"
    converted.write_text(capsys.readouterr().out)
    assert main(["-c", str(converted), "check"]) == 0


def test_status_reads_at_a_glance(tmp_path: Path) -> None:
    kernel = lab_kernel()
    cfg = lab_config()
    reconcile(plan(cfg, kernel.observe()), kernel, str(tmp_path))
    kernel.set_link(wan(12, "w2", 2, carrier=False))
    observed = kernel.observe()
    desired = plan(cfg, observed)
    kind, _ = resolve_group_kind(cfg, observed)
    pending = diff(desired, kernel.dump_owned())
    text = status_text(cfg, observed, desired, kernel.dump_owned(), kind, pending)
    lines = text.splitlines()
    # without a daemon: no traffic shares, health or times, so no empty columns for them
    assert lines[0].split() == ["LINK", "STATE", "WEIGHT", "GATEWAY", "WHY", "NOT"]
    # the kernel still balances over w2 (its state); the plan's reason is shown beside it...
    assert lines[2].split()[:2] == ["w2", "active"] and lines[2].endswith("no carrier")
    assert "run `wanhooks apply`" in text  # ...while the kernel still has w2 in the group
    doc = status_json(cfg, observed, desired, kernel.dump_owned(), kind, pending)
    json.dumps(doc)  # serialisable
    assert doc["in_sync"] is False and doc["links"][1]["ipv4"]["reason"] == "no carrier"
    assert doc["links"][1]["why"] == "no carrier"  # both families, one reason: said once
    # the kernel still balances over all three: w2's weight asks for its part of them
    assert [link["weight_share"]["ipv4"] for link in doc["links"]] == [0.25, 0.5, 0.25]
    assert re.search(r"^IPv4 default: w1 x1 \(25%\) \+ w2 x2 \(50%\) \+ w3 x1 \(25%\)", text, re.M), text


def test_install_places_every_file_and_uninstall_removes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import stat
    import sys

    root = tmp_path / "root"
    run_dir = "/var/lib/wanhooks-test"  # not the default: the unit and the hooks must both name it
    argv = ["-c", "/etc/wanhooks/wanhooks.yaml", "--run-dir", run_dir, "install", "--root", str(root)]
    assert main(argv) == 0
    nm = root / "etc/NetworkManager/dispatcher.d/90-wanhooks"
    unit = root / "etc/systemd/system/wanhooks.service"
    states = ("routable", "degraded", "carrier", "no-carrier", "off", "configured")
    scripts = [nm] + [root / f"etc/networkd-dispatcher/{s}.d/90-wanhooks" for s in states]
    for script in scripts:
        mode = script.stat().st_mode
        assert stat.S_IMODE(mode) == 0o755 and f'PYTHON="{sys.executable}"' in script.read_text()
        text = script.read_text()
        assert f'RUN_DIR="{run_dir}"' in text and '"$PYTHON" -I -m wanhooks' in text
    text = unit.read_text()
    assert (
        f"ExecStart={sys.executable} -I -m wanhooks -c /etc/wanhooks/wanhooks.yaml --run-dir {run_dir} run"
        in text
    )
    assert f"ReadWritePaths={run_dir}" in text
    assert "CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW" in text and "NoNewPrivileges=yes" in text
    assert "ProtectKernelTunables" not in text.replace("Not ProtectKernelTunables", "")
    drop_in = (root / "etc/systemd/networkd.conf.d/wanhooks.conf").read_text()
    assert "ManageForeignRoutes=no" in drop_in and "ManageForeignRoutingPolicyRules=no" in drop_in
    config = root / "etc/wanhooks/wanhooks.yaml"
    assert main(["-c", str(config), "check"]) == 0  # the starting config is valid
    config.write_text("links:\n  - interface: eth9\n")
    assert main(["-c", "/etc/wanhooks/wanhooks.yaml", "install", "--root", str(root)]) == 0
    assert config.read_text() == "links:\n  - interface: eth9\n"  # the admin's config is kept
    capsys.readouterr()
    assert main(["uninstall", "--root", str(root)]) == 0
    assert not nm.exists() and not unit.exists() and config.exists()
