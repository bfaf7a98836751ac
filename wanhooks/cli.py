"""The `wanhooks` command: argument parsing and output only; the work is elsewhere.

Exit codes: 0 done, 1 the kernel or the environment refused (not root,
a route the kernel rejected), 2 bad input (config, usage).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence

from . import constants as c
from .config import ConfigError, load_config, to_yaml
from .engine import converge
from .kernel import Kernel
from .lock import run_lock
from .model import Config, Observed, Owned
from .plan import plan, resolve_group_kind
from .reconcile import Report, cleanup, diff
from .render import desired_lines, op_text
from .status import status_json, status_text

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
    for text in report.conflicts:
        print(f"conflict: {text}", file=sys.stderr)
    for result in report.failed:
        why = result.message or os.strerror(result.error)
        print(f"failed: {op_text(result.op, names)}: {why}", file=sys.stderr)
    for text in report.sysctl_errors:
        print(f"failed: {text}", file=sys.stderr)
    for text in report.notes:
        print(f"note: {text}")
    if not report.changed and not quiet_if_nothing:
        print("nothing to change")


def cmd_apply(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args))
    _need_admin("apply")
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
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args))
    kernel = _kernel()
    observed = kernel.observe()
    desired = plan(config, observed)
    owned: Owned = kernel.dump_owned()
    kind, _note = resolve_group_kind(config, observed)
    pending = diff(desired, owned)
    if args.json:
        print(json.dumps(status_json(config, observed, desired, owned, kind, pending), indent=2))
    else:
        print(status_text(config, observed, desired, owned, kind, pending))
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
    status.set_defaults(func=cmd_status)
    sub.add_parser("check", help="validate the config file").set_defaults(func=cmd_check)
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


if __name__ == "__main__":
    raise SystemExit(main())
