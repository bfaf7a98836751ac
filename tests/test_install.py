"""`wanhooks install` / `uninstall` into a temporary root: what they place, keep and remove."""

from __future__ import annotations

import os
import re
import stat
import sys
from pathlib import Path

import pytest

from wanhooks import install
from wanhooks.cli import main

STATES = install.NETWORKD_STATES


def _install(root: Path, *extra: str) -> int:
    argv = ["-c", "/etc/wanhooks/wanhooks.yaml", "--run-dir", "/run/wh-test", "install", "--root", str(root)]
    return main([*argv, *extra])


def test_every_file_is_placed_naming_this_wanhooks_its_config_and_run_dir(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert _install(root) == 0
    command = f"{sys.executable} -I -m wanhooks"
    scripts = [root / "etc/NetworkManager/dispatcher.d/90-wanhooks"]
    scripts += [root / f"etc/networkd-dispatcher/{s}.d/90-wanhooks" for s in STATES]
    for script in scripts:
        text = script.read_text()
        assert stat.S_IMODE(script.stat().st_mode) == 0o755
        assert f'WANHOOKS="{command}"' in text and 'RUN_DIR="/run/wh-test"' in text
        assert not re.search(r'="@[A-Z_]+@"', text)  # every placeholder filled in
    unit = (root / "etc/systemd/system/wanhooks.service").read_text()
    assert f"ExecStart={command} -c /etc/wanhooks/wanhooks.yaml --run-dir /run/wh-test run" in unit
    assert f"ExecReload={command} -c /etc/wanhooks/wanhooks.yaml --run-dir /run/wh-test reload" in unit
    assert "Type=notify" in unit and "ReadWritePaths=/run/wh-test" in unit
    drop_in = (root / "etc/systemd/networkd.conf.d/wanhooks.conf").read_text()
    assert "ManageForeignRoutes=no" in drop_in and "ManageForeignRoutingPolicyRules=no" in drop_in
    config = root / "etc/wanhooks/wanhooks.yaml"
    assert main(["-c", str(config), "check"]) == 0  # the starting config is valid
    assert "mode: daemon" in config.read_text()


def test_the_nexthops_setting_only_where_networkd_knows_it() -> None:
    old = install.render("networkd.conf", "wanhooks", "/c", "/r", nexthops=False)
    new = install.render("networkd.conf", "wanhooks", "/c", "/r", nexthops=True)
    assert "ManageForeignNextHops" not in old and "ManageForeignNextHops=no" in new
    assert not install.networkd_nexthops_supported(252) and install.networkd_nexthops_supported(256)


def test_hooks_only_places_no_unit(tmp_path: Path) -> None:
    root = tmp_path / "root"
    assert _install(root, "--mode", "hooks-only") == 0
    assert not (root / "etc/systemd/system/wanhooks.service").exists()
    assert (root / "etc/NetworkManager/dispatcher.d/90-wanhooks").exists()
    assert "mode: hooks-only" in (root / "etc/wanhooks/wanhooks.yaml").read_text()


def test_reinstall_replaces_what_nobody_touched_and_keeps_the_admins_edits(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    assert _install(root) == 0
    unit = root / "etc/systemd/system/wanhooks.service"
    hook = root / "etc/networkd-dispatcher/routable.d/90-wanhooks"
    config = root / "etc/wanhooks/wanhooks.yaml"
    edited = unit.read_text().replace("RestartSec=2", "RestartSec=7")
    unit.write_text(edited)
    config.write_text("links:\n  - interface: eth9\n")
    hook.write_text(hook.read_text().replace("RUN_DIR=", "RUN_DIR_OLD="))  # an older version, say...
    hook.write_text(install.stamped(hook.read_text().rpartition(install.STAMP)[0]))  # ...stamped: ours
    capsys.readouterr()
    assert _install(root) == 0
    out = capsys.readouterr().out
    assert unit.read_text() == edited  # the admin's edit stays...
    new = Path(str(unit) + install.NEW_SUFFIX)
    assert "RestartSec=2" in new.read_text() and stat.S_IMODE(new.stat().st_mode) == 0o644
    assert str(unit) in out and "drop-in" in out  # ...and the admin is told where the new one is
    assert 'RUN_DIR="/run/wh-test"' in hook.read_text()  # an unedited file of ours is replaced
    assert config.read_text() == "links:\n  - interface: eth9\n"  # the config is the admin's


def test_uninstall_removes_what_it_placed_its_enable_links_and_empty_directories(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "root"
    # someone else's file in a directory wanhooks shares: it and its directory stay
    theirs = root / "etc/NetworkManager/dispatcher.d/10-theirs"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("#!/bin/sh\n")
    assert _install(root) == 0
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True)
    (wants / "wanhooks.service").symlink_to("/etc/systemd/system/wanhooks.service")  # systemctl enable
    (wants / "other.service").symlink_to("/lib/systemd/system/other.service")
    capsys.readouterr()
    assert main(["uninstall", "--root", str(root)]) == 0
    out = capsys.readouterr().out
    assert "wanhooks cleanup" in out  # says how to remove the routing
    left = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    assert left == [
        "etc", "etc/NetworkManager", "etc/NetworkManager/dispatcher.d",
        "etc/NetworkManager/dispatcher.d/10-theirs",
        "etc/systemd", "etc/systemd/system", "etc/systemd/system/multi-user.target.wants",
        "etc/systemd/system/multi-user.target.wants/other.service",
        "etc/wanhooks", "etc/wanhooks/wanhooks.yaml",  # the config stays for a reinstall
    ], left  # fmt: skip


def test_an_interpreter_the_unit_cannot_see_is_refused_with_what_to_do() -> None:
    for hidden in ("/root/.pyenv/versions/3.11.7/bin/python3.11", "/home/ann/venv/bin/python", "/tmp/v/x"):
        problem = install.unit_visibility_problem(["/usr/bin/python3", hidden])
        assert problem and hidden in problem and "/opt/wanhooks" in problem
    assert install.unit_visibility_problem(["/usr/bin/python3.11", "/opt/wanhooks/bin/python"]) is None
    assert install.unit_visibility_problem(["/rootfs/python"]) is None  # a prefix, not a directory


def test_the_package_layout_names_the_launcher(tmp_path: Path) -> None:
    repo = Path(__file__).resolve().parent.parent
    install.stage_package(str(tmp_path), modules=str(repo))
    unit = (tmp_path / "lib/systemd/system/wanhooks.service").read_text()
    assert "ExecStart=/usr/sbin/wanhooks -c /etc/wanhooks/wanhooks.yaml --run-dir /run/wanhooks run" in unit
    assert install.STAMP not in unit  # dpkg tracks the package's files itself
    hook = tmp_path / "usr/lib/networkd-dispatcher/routable.d/90-wanhooks"
    assert 'WANHOOKS="/usr/sbin/wanhooks"' in hook.read_text()
    launcher = tmp_path / "usr/sbin/wanhooks"
    assert os.access(launcher, os.X_OK) and launcher.read_text().startswith("#!/usr/bin/python3 -I\n")
    modules = tmp_path / "usr/lib/wanhooks/wanhooks"
    assert (modules / "cli.py").exists() and not (modules / "demo").exists()
    assert not list(modules.rglob("__pycache__"))
