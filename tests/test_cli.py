"""The command line without a kernel: config errors, check, convert (no root)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fakes import lab_config, lab_kernel, wan

from wanhooks.cli import main
from wanhooks.observe.status import status_json, status_text
from wanhooks.plan.planner import plan, resolve_group_kind
from wanhooks.reconcile.diff import diff, reconcile

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
    text = status_text(cfg, observed, desired, kernel.dump_owned(), kind, pending, daemon_running=False)
    lines = text.splitlines()
    # the mode first, and that the daemon it needs is not running
    assert lines[0] == (
        "mode: daemon; daemon not running: hooks do nothing; start it: systemctl start wanhooks"
    )
    assert lines[1] == ""
    # without a daemon: no traffic shares, health or times, so no empty columns for them
    assert lines[2].split() == ["LINK", "STATE", "WEIGHT", "GATEWAY", "WHY", "NOT"]
    # the kernel still balances over w2 (its state); the plan's reason is shown beside it...
    assert lines[4].split()[:2] == ["w2", "active"] and lines[4].endswith("no carrier")
    assert "run `wanhooks apply` once" in text  # ...while the kernel still has w2 in the group
    doc = status_json(cfg, observed, desired, kernel.dump_owned(), kind, pending, daemon_running=False)
    assert (doc["mode"], doc["daemon_running"], doc["cannot_see"]) == ("daemon", False, None)
    json.dumps(doc)  # serialisable
    assert doc["in_sync"] is False and doc["links"][1]["ipv4"]["reason"] == "no carrier"
    assert doc["links"][1]["why"] == "no carrier"  # both families, one reason: said once
    # the kernel still balances over all three: w2's weight asks for its part of them
    assert [link["weight_share"]["ipv4"] for link in doc["links"]] == [0.25, 0.5, 0.25]
    assert re.search(r"^IPv4 default: w1 x1 \(25%\) \+ w2 x2 \(50%\) \+ w3 x1 \(25%\)", text, re.M), text


# --------------------------------------------------------------------------
# What admins expect of the command itself (issue #14)
# --------------------------------------------------------------------------


def test_version_names_the_installed_wanhooks_or_this_checkout(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.metadata

    import wanhooks
    from wanhooks import cli

    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == f"wanhooks {cli.version()}\n"

    def not_installed(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cli.metadata, "version", not_installed)
    assert cli.version() == wanhooks.__version__
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out == f"wanhooks {wanhooks.__version__}\n"


def test_global_options_before_or_after_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    one, two = tmp_path / "one.yaml", tmp_path / "two.yaml"
    one.write_text("links:\n  - interface: eth1\n")
    two.write_text("links:\n  - interface: eth1\n  - interface: eth2\n")
    for argv, entries in (
        (["-c", str(one), "check"], "1 link entry"),
        (["check", "-c", str(two)], "2 link entries"),
        (["--config", str(one), "check", "--config", str(two)], "2 link entries"),  # after it wins
        (["-c", str(two), "check", "-c", str(one)], "1 link entry"),
    ):
        assert main(argv) == 0, argv
        assert entries in capsys.readouterr().out, argv
    from wanhooks.cli import build_parser

    parse = build_parser().parse_args
    assert parse(["--run-dir", "/a", "status"]).run_dir == "/a"
    assert parse(["status", "--run-dir", "/b"]).run_dir == "/b"
    assert parse(["--run-dir", "/a", "status", "--run-dir", "/b"]).run_dir == "/b"
    assert parse(["status"]).run_dir is None and parse(["status"]).config is None  # env, then default


def test_every_command_says_what_it_does_its_arguments_and_exit_codes() -> None:
    import argparse

    from wanhooks.cli import COMMANDS, build_parser
    from wanhooks.manual import exit_codes

    parser = build_parser()
    top = parser.format_help()
    assert "exit status:\n  0  done\n  1  " in top and "\n  2  bad input" in top
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(commands) == set(COMMANDS)
    for name, command in commands.items():
        text = command.format_help()
        description, codes = COMMANDS[name]
        assert description.split("\n")[0] in text, name
        assert exit_codes(command) == list(codes), name  # the epilog reads back as its table
        assert codes[0][0] == 0 and "exit status:" in text, name
        assert "-c FILE, --config FILE" in text and "--run-dir DIR" in text, name  # after the command
        for action in command._actions:  # every argument explains itself
            assert action.help, (name, action.dest)
    assert "--force" in commands["apply"].format_help() and "--force" in commands["cleanup"].format_help()
    assert {code for code, _ in COMMANDS["link"][1]} == {0, 1, 2}


def test_the_run_dir_may_be_entered_by_others_but_never_written(tmp_path: Path) -> None:
    import os

    from wanhooks.service.lock import RunDirError, trusted_run_dir

    run_dir = tmp_path / "run"
    trusted_run_dir(str(run_dir))  # made 0755 at most (the umask may take more)
    assert run_dir.stat().st_mode & 0o777 & ~0o755 == 0
    for mode in (0o700, 0o750, 0o755, 0o711):
        os.chmod(run_dir, mode)
        trusted_run_dir(str(run_dir))
    for mode in (0o775, 0o757, 0o777, 0o1777):
        os.chmod(run_dir, mode)
        with pytest.raises(RunDirError, match=f"mode {mode & 0o7777:04o}: others may write to it"):
            trusted_run_dir(str(run_dir))


def test_a_run_dir_too_long_for_its_control_socket_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    from wanhooks.service.lock import RunDirError, trusted_run_dir

    deep = tmp_path / ("d" * (107 - len(f"{tmp_path}/") - len("/control") + 1))  # one byte too many
    with pytest.raises(RunDirError, match="too long a path for its control socket"):
        trusted_run_dir(str(deep))
    assert not deep.exists()
    trusted_run_dir(str(deep)[:-1])  # one byte shorter: taken


def daemon_lock_held(run_dir: Path) -> int:
    """Hold the daemon's lifelong lock, as a running daemon does (this process's pid in it)."""
    from wanhooks.service.lock import hold_daemon_lock

    fd = hold_daemon_lock(str(run_dir))
    assert fd is not None
    return fd


def test_apply_and_cleanup_refuse_while_a_daemon_runs_unless_forced(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import os

    from wanhooks import cli

    kernel = lab_kernel()
    monkeypatch.setattr(cli, "_has_net_admin", lambda: True)
    monkeypatch.setattr(cli, "_kernel", lambda: kernel)  # the fake kernel: nothing real is touched
    config = tmp_path / "wanhooks.yaml"
    config.write_text(
        "links:\n  - {interface: w1, gateway: 100.64.1.1}\n  - {interface: w2, gateway: 100.64.2.1}\n"
    )
    base = ["-c", str(config), "--run-dir", str(tmp_path / "run")]
    fd = daemon_lock_held(tmp_path / "run")
    try:
        for command in ("apply", "cleanup"):
            assert main([*base, command]) == 1
            out, err = capsys.readouterr()
            assert out == "" and err.count("\n") == 1
            assert err.startswith(
                f"wanhooks {command}: a wanhooks daemon runs (pid {os.getpid()}) and owns the routing: "
            )
            assert err.endswith(f"; --force to {command} anyway\n")
        assert "to load an edited config: `wanhooks reload` or `systemctl reload wanhooks`" in (
            (main([*base, "apply"]), capsys.readouterr().err)[1]
        )
        assert not kernel.dump_owned().routes  # nothing was applied
        assert main([*base, "apply", "--force"]) == 0
        assert kernel.dump_owned().routes and "nexthop" in capsys.readouterr().out
        assert main([*base, "cleanup", "--force"]) == 0
        assert not kernel.dump_owned().routes
    finally:
        os.close(fd)
    assert main([*base, "apply"]) == 0  # the daemon gone, apply applies
    assert kernel.dump_owned().routes


def test_link_disable_and_drain_refuse_a_name_the_config_does_not_manage(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "wanhooks.yaml"
    config.write_text("links:\n  - interface: eth1\n  - interface: 'wl*'\n")
    base = ["-c", str(config), "--run-dir", str(tmp_path / "no-daemon")]
    for action in ("disable", "drain"):
        assert main([*base, "link", action, "eth9"]) == 2
        err = capsys.readouterr().err
        assert err == f"wanhooks link {action}: 'eth9' is none of the links {config} manages (eth1, wl*)\n"
    # a configured name, or one a glob matches, passes the check and goes to the daemon (none here)
    for name in ("eth1", "wlan0"):
        assert main([*base, "link", "drain", name]) == 1
        assert "no wanhooks daemon is running (link control needs `wanhooks run`)" in capsys.readouterr().err
    # enable may clear an override of a link that is no longer configured: it is asked for
    assert main([*base, "link", "enable", "eth9"]) == 1
    assert "no wanhooks daemon is running" in capsys.readouterr().err
    assert main([*base, "link", "disable", "w*"]) == 2  # a glob is not a link's name
    assert "must not contain '*'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text("links: []\n")
    assert main(["-c", str(bad), "link", "disable", "eth1"]) == 2  # the config must be good


def test_convert_says_the_column_file_balances_per_destination(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seed = tmp_path / "generic-balancer.conf"
    seed.write_text(SEED)
    assert main(["convert", str(seed)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    at = lines.index("balance: per-destination")
    assert lines[at - 2 : at] == [
        "# per-destination: one site stays on one link, as the 2011 script balanced (its multipath",
        "# route kept each destination on one link); per-connection spreads the load better.",
    ]
    assert "mode:" not in out  # the default is not written
    from wanhooks.config.load import load_config, parse_config

    assert parse_config(out, "x").balance.value == load_config(str(seed)).balance.value == "per-destination"
