"""The `wanhooks` command: argument parsing and output only; the work is elsewhere.

Exit codes: 0 done, 1 the kernel or the environment refused (not root,
a route the kernel rejected), 2 bad input (config, usage).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

from . import constants as c
from . import control, nft
from .config import ConfigError, load_config, to_yaml
from .control import daemon_running
from .engine import converge
from .kernel import Kernel
from .lock import RunDirError, daemon_present, run_lock, trusted_run_dir
from .model import Config, Observed, Owned
from .plan import plan, resolve_group_kind
from .reconcile import Report, cleanup, diff
from .render import desired_lines, op_text
from .status import render_status, status_json, status_text

CAP_NET_ADMIN = 12


def _has_net_admin() -> bool:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except OSError:
        pass
    return os.geteuid() == 0


def _config_path(args: argparse.Namespace) -> str:
    return str(args.config or os.environ.get("WANHOOKS_CONFIG") or c.DEFAULT_CONFIG)


def _run_dir(args: argparse.Namespace) -> str:
    return str(args.run_dir or os.environ.get("WANHOOKS_RUN_DIR") or c.DEFAULT_RUN_DIR)


def _need_admin(command: str) -> None:
    if not _has_net_admin():
        print(f"wanhooks {command}: needs root (CAP_NET_ADMIN) to change routing", file=sys.stderr)
        raise SystemExit(1)


def _kernel() -> Kernel:
    from .kernel.linux import LinuxKernel  # imported late: `convert`/`check` need no netlink

    return LinuxKernel()


def _names(observed: Observed) -> dict[int, str]:
    return {link.index: link.name for link in observed.links}


def _print_report(report: Report, names: dict[int, str], quiet_if_nothing: bool = True) -> None:
    for change in report.sysctls:
        print(f"~ sysctl {change.path.replace('/', '.')}: {change.old} -> {change.new}")
    for result in report.done:
        print(op_text(result.op, names))
    if report.firewall_changed:
        print(f"~ nftables table {c.NFT_FAMILY} {c.NFT_TABLE}")
    for text in report.conflicts:
        print(f"conflict: {text}", file=sys.stderr)
    for result in report.failed:
        why = result.message or os.strerror(result.error)
        print(f"failed: {op_text(result.op, names)}: {why}", file=sys.stderr)
    for text in report.sysctl_errors + report.firewall_errors:
        print(f"failed: {text}", file=sys.stderr)
    for text in report.notes:
        print(f"note: {text}")
    if not report.changed and not quiet_if_nothing:
        print("nothing to change")


def cmd_apply(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args))
    _need_admin("apply")
    trusted_run_dir(_run_dir(args))
    if daemon_present(_run_dir(args)):
        # A round of our own would know none of the daemon's health verdicts, held
        # gateways or NetworkManager's view, and would undo them: ask the daemon instead.
        try:
            control.request(_run_dir(args), {"op": "notify", "source": "manual", "action": "changed"})
        except control.ControlError as err:
            print(f"wanhooks apply: a daemon runs on {_run_dir(args)} but {err}", file=sys.stderr)
            return 1
        print("a wanhooks daemon runs: it was asked for a round (its log says what changed)")
        return 0
    with run_lock(_run_dir(args)):
        result = converge(config, _kernel(), _run_dir(args))
    for note in result.desired.notes:
        print(f"note: {note}")
    _print_report(result.report, _names(result.observed), quiet_if_nothing=False)
    return 0 if result.report.ok else 1


def cmd_plan(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args))
    kernel = _kernel()
    observed = kernel.observe()
    desired = plan(config, observed)
    for note in desired.notes:
        print(f"# note: {note}")
    for link in desired.links:
        for family in (4, 6):
            if desired.links and link.reasons[family]:
                print(f"# {link.name}: IPv{family} not balanced: {link.reasons[family]}")
    for line in desired_lines(desired, _names(observed)):
        print(line)
    table = nft.render(desired.firewall)
    if table:
        print(f"nft -f - <<'EOF'\n{table}EOF")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    if not args.watch:
        print(_status_once(args))
        return 0
    if args.json:
        print("wanhooks status: --watch is for people; scripts poll --json", file=sys.stderr)
        return 2
    # Redrawn in place: home the cursor, draw, clear what the last frame left below.
    # On a terminal only; piped, each frame follows the last.
    on_tty = sys.stdout.isatty()
    try:
        while True:
            clock = time.strftime("%H:%M:%S")
            frame = f"{clock}  wanhooks status (every {args.interval:g} s; Ctrl-C ends)\n\n"
            frame += _status_once(args)
            if on_tty:
                lines = frame.splitlines()
                sys.stdout.write("\x1b[H" + "\x1b[K\n".join(lines) + "\x1b[K\n\x1b[J")
            else:
                sys.stdout.write(frame + "\n")
            sys.stdout.flush()
            time.sleep(args.interval)
    except KeyboardInterrupt:
        return 0


def _status_once(args: argparse.Namespace) -> str:
    run_dir = _run_dir(args)
    if daemon_running(run_dir):  # the daemon knows more: held gateways, the admin's overrides
        answer = control.request(run_dir, {"op": "status"})
        doc = answer.get("status")
        if answer.get("ok") and isinstance(doc, dict):
            return json.dumps(doc, indent=2) if args.json else render_status(doc)
    config = load_config(_config_path(args))
    from .kernel.linux import LinuxKernel

    kernel = LinuxKernel()  # closed after each frame: --watch must not gather sockets
    try:
        observed = kernel.observe()
        desired = plan(config, observed)
        owned: Owned = kernel.dump_owned()
    finally:
        kernel.close()
    kind, _note = resolve_group_kind(config, observed)
    pending = diff(desired, owned)
    if args.json:
        return json.dumps(status_json(config, observed, desired, owned, kind, pending), indent=2)
    return status_text(config, observed, desired, owned, kind, pending)


def cmd_run(args: argparse.Namespace) -> int:
    _need_admin("run")
    from .daemon import run_daemon  # asyncio and the sources only when running as the daemon

    return run_daemon(
        _config_path(args),
        _run_dir(args),
        cleanup_on_exit=args.cleanup_on_exit,
        debounce_ms=args.debounce_ms,
        dry_run=args.dry_run,
        log_format=args.log_format,
    )


def cmd_notify(args: argparse.Namespace) -> int:
    """Forward a hook's event to the daemon; with none running, start a one-shot apply and return."""
    run_dir = _run_dir(args)
    message = {"op": "notify", "source": args.source, "iface": args.iface or "", "action": args.action}
    try:
        answer = control.request(run_dir, message, timeout=2.0)
    except control.ControlError as err:
        if daemon_present(run_dir):
            # busy, not gone: it follows the kernel itself, and a one-shot apply beside it
            # would undo what only it knows (health, held gateways, the admin's overrides)
            print(f"wanhooks notify: the daemon did not answer ({err}); not applying", file=sys.stderr)
            return 0
        _spawn_apply(args)
        return 0
    if not answer.get("ok"):
        print(f"wanhooks notify: refused: {answer.get('error')}", file=sys.stderr)
        return 2
    return 0


# What a child of wanhooks runs with: nothing of the caller's environment or directory.
CHILD_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL": "C.UTF-8"}


def _spawn_apply(args: argparse.Namespace) -> None:
    """A detached `wanhooks apply`: the hook returns at once; applies serialize on the run lock.

    `-I` (isolated): neither the working directory nor PYTHON* variables reach sys.path --
    `python -m` would put the caller's directory first, and a `wanhooks.py` planted there
    would run as root.  The child starts in / with a clean environment all the same."""
    config, run_dir = os.path.abspath(_config_path(args)), os.path.abspath(_run_dir(args))
    argv = [sys.executable, "-I", "-m", "wanhooks", "-c", config, "--run-dir", run_dir, "apply"]
    with open(os.devnull, "rb") as null_in, open(os.devnull, "wb") as null_out:
        subprocess.Popen(
            argv, stdin=null_in, stdout=null_out, stderr=null_out, start_new_session=True,
            cwd="/", env=CHILD_ENV,
        )  # fmt: skip


def cmd_link(args: argparse.Namespace) -> int:
    try:
        answer = control.request(_run_dir(args), {"op": "link", "action": args.action, "name": args.name})
    except control.ControlError as err:
        print(f"wanhooks link: {err} (link control needs `wanhooks run`)", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"wanhooks link: {answer.get('error')}", file=sys.stderr)
        return 2
    print(f"{args.name}: {args.action}d" if args.action != "drain" else f"{args.name}: draining")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    from . import install

    try:
        written = install.install(
            args.root, os.path.abspath(_config_path(args)), os.path.abspath(_run_dir(args))
        )
    except install.InstallError as err:
        print(f"wanhooks install: {err}", file=sys.stderr)
        return 1
    for path in written:
        print(f"+ {path}")
    if args.root == "/":
        print("next: systemctl daemon-reload && systemctl enable --now wanhooks")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    from . import install

    for path in install.uninstall(args.root):
        print(f"- {path}")
    return 0


def cmd_health_table(args: argparse.Namespace) -> int:
    from .health import table_text

    print(table_text())
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args))
    _describe(config)
    return 0


def _describe(config: Config) -> None:
    print(
        f"{config.path}: OK, {len(config.links)} link entr{'y' if len(config.links) == 1 else 'ies'}, "
        f"balance {config.balance.value}, group {config.group.value}"
    )


def cmd_convert(args: argparse.Namespace) -> int:
    config = load_config(args.file)
    sys.stdout.write(to_yaml(config))
    return 0


def cmd_cleanup(args: argparse.Namespace) -> int:
    _need_admin("cleanup")
    kernel = _kernel()
    names = _names(kernel.observe())
    with run_lock(_run_dir(args)):
        report = cleanup(kernel, _run_dir(args))
    _print_report(report, names, quiet_if_nothing=False)
    return 0 if report.ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wanhooks",
        description="Use every WAN link at once: a weighted multipath default route "
        "and per-link policy routing.",
    )
    parser.add_argument(
        "-c",
        "--config",
        help=f"config file (YAML or generic-balancer.sh columns); default "
        f"$WANHOOKS_CONFIG or {c.DEFAULT_CONFIG}",
    )
    parser.add_argument(
        "--run-dir", help=f"state directory (saved sysctls); default $WANHOOKS_RUN_DIR or {c.DEFAULT_RUN_DIR}"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("apply", help="make the kernel match the config now, print what changed").set_defaults(
        func=cmd_apply
    )
    sub.add_parser(
        "plan", help="print the routing wanhooks wants, as ip commands; change nothing"
    ).set_defaults(func=cmd_plan)
    status = sub.add_parser("status", help="links, why each is or is not balanced, the multipath route")
    status.add_argument("--json", action="store_true", help="machine-readable (schema in README)")
    status.add_argument("--watch", action="store_true", help="redraw in place until Ctrl-C")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between redraws (--watch)")
    status.set_defaults(func=cmd_status)
    run = sub.add_parser("run", help="the daemon: follow every link change as it happens")
    run.add_argument("--cleanup-on-exit", action="store_true", help="remove wanhooks' routing when stopped")
    run.add_argument(
        "--debounce-ms",
        type=float,
        default=5.0,
        help="wait this long after an event for the rest of its burst",
    )
    run.add_argument("--dry-run", action="store_true", help="log what it would change; change nothing")
    run.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="json: one object per line"
    )
    run.set_defaults(func=cmd_run)
    notify = sub.add_parser(
        "notify", help="tell the daemon a link changed (for hooks); apply once if none runs"
    )
    notify.add_argument("iface", nargs="?", help="the interface the event is about")
    notify.add_argument(
        "--source", default="manual", help="who is telling (nm-dispatcher, networkd-dispatcher)"
    )
    notify.add_argument(
        "--action", default="changed", help="what happened (up, down, dhcp4-change, routable...)"
    )
    notify.set_defaults(func=cmd_notify)
    link = sub.add_parser("link", help="take a link out of balancing, or put it back (daemon only)")
    link.add_argument("action", choices=("disable", "drain", "enable"))
    link.add_argument("name")
    link.set_defaults(func=cmd_link)
    inst = sub.add_parser(
        "install", help="place the systemd unit, the dispatcher hooks and a starting config"
    )
    inst.add_argument("--root", default="/", help="install under this directory instead of /")
    inst.set_defaults(func=cmd_install)
    uninst = sub.add_parser("uninstall", help="remove what install placed (the config stays)")
    uninst.add_argument("--root", default="/", help="the directory install used")
    uninst.set_defaults(func=cmd_uninstall)
    sub.add_parser("check", help="validate the config file").set_defaults(func=cmd_check)
    sub.add_parser("health-table", help="print the health machine's transition table").set_defaults(
        func=cmd_health_table
    )
    convert = sub.add_parser("convert", help="print a generic-balancer.sh column file as YAML")
    convert.add_argument("file")
    convert.set_defaults(func=cmd_convert)
    sub.add_parser(
        "cleanup", help="remove everything wanhooks added and restore the sysctls it changed"
    ).set_defaults(func=cmd_cleanup)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as err:
        print(f"wanhooks: {err}", file=sys.stderr)
        return 2
    except PermissionError as err:
        print(f"wanhooks {args.command}: permission denied: {err.filename or err}", file=sys.stderr)
        return 1
    except RunDirError as err:
        print(f"wanhooks {args.command}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
