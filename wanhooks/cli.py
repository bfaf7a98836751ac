"""The `wanhooks` command: argument parsing and output only; the work is elsewhere.

Exit codes: 0 done, 1 the kernel or the environment refused (not root,
a route the kernel rejected, a daemon that owns the routing), 2 bad input
(config, usage).

The parser is the one source of what the command takes and says: `--help`,
wanhooks(8) and the shell completions (`python -m wanhooks.manual`) all come
from build_parser().
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from importlib import metadata
from typing import Any

from . import __version__
from . import constants as c
from .config.load import ConfigError, load_config, to_yaml, unknown_link
from .kernel import Kernel
from .model import Config, Observed, Owned
from .observe.status import render_status, status_json
from .plan.names import ifname_problem, shown
from .plan.planner import plan, resolve_group_kind
from .reconcile.diff import Report, cleanup, diff
from .reconcile.render import desired_lines, op_text
from .reconcile.round import converge
from .router import nft
from .service import control, requests
from .service.lock import RunDirError, daemon_pid, daemon_present, run_lock, trusted_run_dir
from .sources.prefix_delegation import learn_once

CAP_NET_ADMIN = 12


def version() -> str:
    """The installed distribution's version; this checkout's own when it is not installed."""
    try:
        return metadata.version("wanhooks")
    except metadata.PackageNotFoundError:
        return __version__


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


def _daemon_owns_the_routing(command: str, args: argparse.Namespace) -> bool:
    """True (and why, on stderr) when a daemon runs and --force was not given: a one-shot round
    beside it would know none of its health verdicts, held gateways or the admin's overrides,
    and would undo them (a daemon that does not answer, or is stopped, still counts)."""
    run_dir = _run_dir(args)
    if args.force or not daemon_present(run_dir):
        return False
    pid = daemon_pid(run_dir)
    who = f"pid {pid}" if pid is not None else f"its lock is held in {run_dir}"
    if command == "cleanup":
        then = "it would build it again at its next round: stop it first (`systemctl stop wanhooks`)"
    else:
        then = (
            "it follows every change itself; to load an edited config: `wanhooks reload` or "
            "`systemctl reload wanhooks`"
        )
    print(
        f"wanhooks {command}: a wanhooks daemon runs ({who}) and owns the routing: {then}; "
        f"--force to {command} anyway",
        file=sys.stderr,
    )
    return True


def cmd_apply(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args))
    _need_admin("apply")
    trusted_run_dir(_run_dir(args))
    if _daemon_owns_the_routing("apply", args):
        return 1
    with run_lock(_run_dir(args)):
        result = converge(config, _kernel(), _run_dir(args), adjust=learn_once(config))
    for note in result.desired.notes:
        print(f"note: {note}")
    _print_report(result.report, _names(result.observed), quiet_if_nothing=False)
    return 0 if result.report.ok else 1


def cmd_plan(args: argparse.Namespace) -> int:
    config = load_config(_config_path(args))
    kernel = _kernel()
    observed = learn_once(config)(kernel.observe())
    desired = plan(config, observed)
    for note in desired.notes:
        print(f"# note: {note}")
    for link in desired.links:
        for family in (4, 6):
            if desired.links and link.reasons[family] is not None:
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


# What only the daemon knows, so what a view from the kernel alone lacks while one runs.
DAEMON_ONLY = ["health verdicts", "held gateways", "the admin's overrides (disable, drain)", "traffic shares"]


def _daemon_status(run_dir: str) -> tuple[dict[str, Any] | None, bool | None, str]:
    """The daemon's status document; or None, whether a daemon runs (None: this user cannot
    tell) and why it gave no document.  Anyone may ask: the socket serves `status` to all."""
    try:
        if not control.request(run_dir, {"op": "ping"}, timeout=1.0).get("ok"):
            # it answered, so it runs; an older daemon refuses users who are not root
            return None, True, "the daemon refused to answer this user"
        answer = control.request(run_dir, {"op": "status"})
    except control.ControlError as err:
        if os.geteuid() == 0:  # its lifelong lock says whether one runs, answering or not
            return None, daemon_present(run_dir), str(err)
        return None, False if err.absent else None, f"not root, and {err}"
    doc = answer.get("status")
    if answer.get("ok") and isinstance(doc, dict):
        return doc, True, ""
    return None, True, f"the daemon refused: {shown(str(answer.get('error')))}"


def _status_once(args: argparse.Namespace) -> str:
    run_dir = _run_dir(args)
    doc, running, why = _daemon_status(run_dir)
    if doc is not None:  # the daemon knows more: health, held gateways, the admin's overrides
        doc["daemon_running"] = True
        doc.setdefault("cannot_see", None)
        return json.dumps(doc, indent=2) if args.json else render_status(doc)
    # A daemon that runs (or may) without answering holds what the kernel cannot show.
    blind = {"what": DAEMON_ONLY, "why": why} if running is not False else None
    config = load_config(_config_path(args))
    from .kernel.linux import LinuxKernel

    kernel = LinuxKernel()  # closed after each frame: --watch must not gather sockets
    try:
        observed = learn_once(config)(kernel.observe())
        desired = plan(config, observed)
        owned: Owned = kernel.dump_owned()
    finally:
        kernel.close()
    kind, _note = resolve_group_kind(config, observed)
    pending = diff(desired, owned)
    doc = status_json(
        config, observed, desired, owned, kind, pending, daemon_running=running, cannot_see=blind
    )
    return json.dumps(doc, indent=2) if args.json else render_status(doc)


def cmd_run(args: argparse.Namespace) -> int:
    _need_admin("run")
    from .service.daemon import run_daemon  # asyncio and the sources only when running as the daemon

    return run_daemon(
        _config_path(args),
        _run_dir(args),
        cleanup_on_exit=args.cleanup_on_exit,
        debounce_ms=args.debounce_ms,
        dry_run=args.dry_run,
        log_format=args.log_format,
    )


def cmd_notify(args: argparse.Namespace) -> int:
    """Forward a hook's event to the daemon; with none running, what the config's mode says
    (sources/notify.py): nothing (daemon), or a detached one-shot apply (hooks-only)."""
    from .sources.notify import notify

    return notify(_config_path(args), _run_dir(args), args.source, args.action, args.iface)


def cmd_reload(args: argparse.Namespace) -> int:
    from .service.client import reload_daemon  # the unit's ExecReload= runs this command

    return reload_daemon(_run_dir(args))


def cmd_link(args: argparse.Namespace) -> int:
    problem = ifname_problem(args.name)
    if problem:
        print(f"wanhooks link: {problem}", file=sys.stderr)
        return 2
    if args.action != "enable":  # enable may clear an override of a link no longer configured
        problem = unknown_link(load_config(_config_path(args)), args.name)
        if problem:
            print(f"wanhooks link {args.action}: {problem}", file=sys.stderr)
            return 2
    try:
        answer = control.request(_run_dir(args), {"op": "link", "action": args.action, "name": args.name})
    except control.ControlError as err:
        print(f"wanhooks link: {err} (link control needs `wanhooks run`)", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        error = shown(str(answer.get("error")), 200)
        print(f"wanhooks link: {error}", file=sys.stderr)
        return 1 if error.endswith("needs root") or error.endswith("root only") else 2
    print(f"{args.name}: {args.action}d" if args.action != "drain" else f"{args.name}: draining")
    return 0


def cmd_vrrp(args: argparse.Namespace) -> int:
    from . import ha

    run_dir = _run_dir(args)
    if args.vrrp_command == "check":
        doc, _running, why = _daemon_status(run_dir)
        if doc is None:
            print(f"wanhooks vrrp check: no daemon's status ({why})", file=sys.stderr)
            return 1
        usable, said = ha.usable_here(doc)
        print(said)
        return 0 if usable else 1
    state = args.state.upper()
    if state not in requests.VRRP_STATES:
        print(f"wanhooks vrrp notify: unknown state {shown(args.state)!r}", file=sys.stderr)
        return 2
    failures = (
        [] if args.conntrackd == "none" else ha.run_conntrackd(state, args.conntrackd, args.conntrackd_config)
    )
    for failure in failures:  # the daemon is told all the same: the role is what it is
        print(f"wanhooks vrrp notify: {failure}", file=sys.stderr)
    try:
        answer = control.request(run_dir, {"op": "vrrp", "instance": args.instance, "state": state})
    except control.ControlError as err:
        print(f"wanhooks vrrp notify: {err} (the daemon is not told)", file=sys.stderr)
        return 1
    if not answer.get("ok"):
        print(f"wanhooks vrrp notify: {shown(str(answer.get('error')), 200)}", file=sys.stderr)
        return 2
    return 1 if failures else 0


def cmd_install(args: argparse.Namespace) -> int:
    from . import command, install

    if command.LAUNCHER:
        print(
            "wanhooks install: this wanhooks came with its Debian package, which placed the unit and "
            "the hooks itself (a drop-in is where changes go: systemctl edit wanhooks)",
            file=sys.stderr,
        )
        return 1
    mode = getattr(args, "mode", "daemon")
    try:
        outcome = install.install(
            args.root, os.path.abspath(_config_path(args)), os.path.abspath(_run_dir(args)), mode=mode
        )
    except install.InstallError as err:
        print(f"wanhooks install: {err}", file=sys.stderr)
        return 1
    for path in outcome.written:
        print(f"+ {path}")
    for path in outcome.kept:
        print(
            f"kept {path}: it was edited; the new version is {path}{install.NEW_SUFFIX} (put your "
            "changes in a drop-in instead: systemctl edit wanhooks)"
        )
    for note in outcome.notes:
        print(f"note: {note}")
    if args.root == "/" and mode == "daemon":
        print("next: systemctl daemon-reload && systemctl enable --now wanhooks")
    return 0


def cmd_uninstall(args: argparse.Namespace) -> int:
    from . import install

    outcome = install.uninstall(args.root)
    for path in outcome.written:
        print(f"- {path}")
    for note in outcome.notes:
        print(f"note: {note}")
    return 0


def cmd_health_table(args: argparse.Namespace) -> int:
    from .health.machine import table_text

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
    if _daemon_owns_the_routing("cleanup", args):
        return 1
    kernel = _kernel()
    names = _names(kernel.observe())
    with run_lock(_run_dir(args)):
        report = cleanup(kernel, _run_dir(args))
    _print_report(report, names, quiet_if_nothing=False)
    return 0 if report.ok else 1


def _global_options(parser: argparse.ArgumentParser, default: Any) -> None:
    """-c and --run-dir, taken before the command and after it alike: the subcommands' copies
    default to SUPPRESS, so a value given before the command stands unless one follows it."""
    group = parser.add_argument_group("global options")
    group.add_argument(
        "-c",
        "--config",
        metavar="FILE",
        default=default,
        help=f"config file (YAML or generic-balancer.sh columns); default "
        f"$WANHOOKS_CONFIG or {c.DEFAULT_CONFIG}",
    )
    group.add_argument(
        "--run-dir",
        metavar="DIR",
        default=default,
        help=f"state directory (control socket, locks, saved sysctls, overrides); default "
        f"$WANHOOKS_RUN_DIR or {c.DEFAULT_RUN_DIR}",
    )


class _CommandParser(argparse.ArgumentParser):
    """A command's parser: its description keeps its line breaks, and it takes the global
    options too (wanhooks apply -c FILE)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(**kwargs)
        _global_options(self, argparse.SUPPRESS)


def _exit_status(codes: Sequence[tuple[int, str]]) -> str:
    """An epilog listing exit codes; wanhooks.manual reads it back for wanhooks(8)."""
    return "exit status:\n" + "\n".join(f"  {code}  {meaning}" for code, meaning in codes)


OK = (0, "done")
REFUSED = (1, "the kernel or the environment refused (not root, a change the kernel rejected)")
BAD_CONFIG = (2, "bad input: the config (file:line: key: why) or the arguments")

# Each command: what it does (its --help and wanhooks(8) say it), and its exit codes.
COMMANDS: dict[str, tuple[str, tuple[tuple[int, str], ...]]] = {
    "apply": (
        """\
Snapshot the kernel, plan, and make the kernel match the config now; print
what changed (+ added, ~ replaced, - removed). Needs CAP_NET_ADMIN. Rounds
take turns on the run directory's lock.

While a wanhooks daemon runs it owns the routing and follows every change
itself; a one-shot apply would undo what only it knows (health verdicts,
held gateways, the admin's overrides). So apply refuses then, stopped or
busy daemon alike, unless --force: to load an edited config, use `wanhooks
reload` or `systemctl reload wanhooks`.""",
        (
            (0, "the kernel matches the plan"),
            (1, "not root; a daemon runs (without --force); the kernel or nft refused a change"),
            BAD_CONFIG,
        ),
    ),
    "plan": (
        """\
Print the routing wanhooks wants as ip commands, and its nftables table,
with a comment for each link family that is not balanced and why. Changes
nothing; needs no root.""",
        ((0, "printed"), (1, "the kernel could not be read"), BAD_CONFIG),
    ),
    "status": (
        """\
A row per link: its state (active, probing, recovering, failed, standby,
disabled, draining, pending, excluded), weight and the share it asks for,
the share of the last minute's traffic it carried, health (RTT, loss),
gateways, since when, and why it is not balanced; then the default route,
NAT and pins. The first line names the mode (config key mode:) and whether
the daemon runs.

From the daemon when one answers -- any user may ask it -- else from the
kernel alone, which cannot show health verdicts, held gateways or the
admin's overrides: the view then says what it cannot see.""",
        ((0, "shown"), (1, "the kernel could not be read"), (2, "a bad config, or --watch with --json")),
    ),
    "run": (
        """\
The daemon: follow every link change as it happens (rtnetlink, NetworkManager
over D-Bus, the dispatcher hooks through the control socket), probe the
links' health, and keep the kernel matching the plan. The control socket in
the run directory serves `status` to anyone and every other request to root.
SIGHUP re-reads the config (a bad one is refused and the running one kept);
SIGTERM leaves the routing in place.""",
        (
            (0, "stopped by SIGTERM or SIGINT"),
            (1, "not root; another daemon runs on the run directory; the run directory is refused"),
            BAD_CONFIG,
        ),
    ),
    "reload": (
        """\
Have the running daemon re-read its config, and wait for its answer: it
replies once the first round with the new config has run. A config it
refuses changes nothing -- the running one stays -- and the error names
the file, line and key. The unit's ExecReload= (systemctl reload wanhooks)
runs this command. Needs root.""",
        (
            (0, "reloaded"),
            (1, "no daemon answered, or it did not reload (not root; an older daemon)"),
            (2, "the daemon refused the new config; the running one stays"),
        ),
    ),
    "notify": (
        """\
Tell the daemon a link changed: what the dispatcher hooks run. Without a
daemon, what the config's mode says: nothing (daemon), or a detached
one-shot apply (hooks-only). Returns at once.""",
        ((0, "told, or nothing to tell"), (2, "the daemon refused the event (a bad name or action)")),
    ),
    "link": (
        """\
Take a link out of balancing at run time, or put it back. The daemon keeps
the override until `enable` (not across a reboot: it lives in the run
directory). Both keep the link's table and source rule, so connections
already using its address carry on.

  disable  out of the balance group
  drain    no new connections; its own finish on it
  enable   back in (also clears an override of a link no longer configured)

disable and drain need a NAME the config manages: an exact entry, or a
name one of its globs matches.""",
        (
            OK,
            (1, "no daemon runs (link control needs `wanhooks run`), or not root"),
            (2, "a NAME the config does not manage, a bad config, or refused by the daemon"),
        ),
    ),
    "install": (
        """\
Place the systemd unit, the NetworkManager and networkd dispatcher hooks,
the networkd drop-in and, when none exists, a starting config (under
--root). The hooks name the interpreter, config and run directory they
were installed with.""",
        (OK, (1, "a file could not be placed")),
    ),
    "uninstall": (
        "Remove what install placed (under --root); the config stays.",
        (OK,),
    ),
    "check": (
        "Read and check the config; print a one-line summary of it.",
        ((0, "the config is valid"), BAD_CONFIG),
    ),
    "health-table": (
        "Print the health state machine's transition table: each state, event and outcome.",
        (OK,),
    ),
    "convert": (
        """\
Print a generic-balancer.sh column file (or any config) as wanhooks' YAML.
A column file balances per destination, as the 2011 script did; the output
says so above its balance: line.""",
        ((0, "printed"), (2, "FILE cannot be read or is not a valid config")),
    ),
    "vrrp": (
        """\
For a high-availability pair run by keepalived (README, "Running a pair").
`vrrp check`, keepalived's vrrp_script: exit 0 while this router has a usable
link of the best tier (in the balance, or waiting only for the shared address
the other router holds; healthy if probed), 1 when it has none or no daemon
answers. `vrrp notify`, keepalived's notify script (it appends GROUP|INSTANCE,
the name, the state and the priority): conntrackd's steps for the new state
(MASTER: commit, flush, resync, bulk send; BACKUP: shorten timers, ask for a
resync; FAULT: shorten timers), then the daemon is told (a round at once;
status shows the role).""",
        (
            (0, "check: usable; notify: done"),
            (1, "check: not usable, or no daemon; notify: a conntrackd step failed, or no daemon"),
            (2, "bad arguments"),
        ),
    ),
    "cleanup": (
        """\
Remove everything wanhooks added -- routes, rules and nexthops carrying its
protocol (87), its nftables table (inet wanhooks) -- and put back the sysctls
it changed that still hold its values. Needs no config; needs CAP_NET_ADMIN.
While a daemon runs it refuses unless --force: the daemon would build the
routing again at its next round (stop it first: systemctl stop wanhooks).""",
        (
            (0, "removed"),
            (1, "not root; a daemon runs (without --force); the kernel refused a removal"),
        ),
    ),
}

TOP_EPILOG = f"""\
The global options may come before or after the command: `wanhooks -c FILE
apply` and `wanhooks apply -c FILE` alike (after it wins).

{_exit_status((OK, REFUSED, (2, "bad input: the config, or the arguments (usage)")))}

Each command's --help says more; see also wanhooks(8), wanhooks.yaml(5)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="wanhooks",
        description="Use every WAN link at once: a weighted multipath default route and per-link\n"
        "policy routing, recomputed whenever a link comes up, goes down or changes its\ngateway.",
        epilog=TOP_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"wanhooks {version()}")
    _global_options(parser, None)
    sub = parser.add_subparsers(
        title="commands", dest="command", required=True, metavar="COMMAND", parser_class=_CommandParser
    )
    apply = sub.add_parser("apply", help="make the kernel match the config now, print what changed")
    apply.add_argument("--force", action="store_true", help="apply even while a daemon runs")
    apply.set_defaults(func=cmd_apply)
    sub.add_parser(
        "plan", help="print the routing wanhooks wants, as ip commands; change nothing"
    ).set_defaults(func=cmd_plan)
    status = sub.add_parser("status", help="links, why each is or is not balanced, the multipath route")
    status.add_argument("--json", action="store_true", help="machine-readable (schema 2, in README)")
    status.add_argument("--watch", action="store_true", help="redraw in place until Ctrl-C")
    status.add_argument("--interval", type=float, default=1.0, help="seconds between redraws (--watch)")
    status.set_defaults(func=cmd_status)
    run = sub.add_parser("run", help="the daemon: follow every link change as it happens")
    run.add_argument("--cleanup-on-exit", action="store_true", help="remove wanhooks' routing when stopped")
    run.add_argument(
        "--debounce-ms",
        type=float,
        default=c.DEBOUNCE_S * 1000,
        help="wait this long after an event for the rest of its burst",
    )
    run.add_argument("--dry-run", action="store_true", help="log what it would change; change nothing")
    run.add_argument(
        "--log-format", choices=("text", "json"), default="text", help="json: one object per line"
    )
    run.set_defaults(func=cmd_run)
    sub.add_parser(
        "reload", help="have the running daemon re-read its config, and wait for its answer"
    ).set_defaults(func=cmd_reload)
    notify = sub.add_parser(
        "notify",
        help="tell the daemon a link changed (for hooks); with none running, nothing (mode daemon) "
        "or one apply (mode hooks-only)",
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
    link.add_argument("action", choices=("disable", "drain", "enable"), help="what to do with the link")
    link.add_argument("name", metavar="NAME", help="the link's interface name")
    link.set_defaults(func=cmd_link)
    inst = sub.add_parser(
        "install", help="place the systemd unit, the dispatcher hooks and a starting config"
    )
    inst.add_argument("--root", default="/", help="install under this directory instead of /")
    inst.add_argument(
        "--mode", choices=("daemon", "hooks-only"), default="daemon",
        help="daemon: the unit follows every change, the hooks only nudge it (default); "
        "hooks-only: no unit, the dispatcher hooks apply by themselves",
    )  # fmt: skip
    inst.set_defaults(func=cmd_install)
    uninst = sub.add_parser("uninstall", help="remove what install placed (the config stays)")
    uninst.add_argument("--root", default="/", help="the directory install used")
    uninst.set_defaults(func=cmd_uninstall)
    sub.add_parser("check", help="validate the config file").set_defaults(func=cmd_check)
    sub.add_parser("health-table", help="print the health machine's transition table").set_defaults(
        func=cmd_health_table
    )
    convert = sub.add_parser("convert", help="print a generic-balancer.sh column file as YAML")
    convert.add_argument("file", metavar="FILE", help="the column file (or any config) to print")
    convert.set_defaults(func=cmd_convert)
    vrrp = sub.add_parser("vrrp", help="keepalived's check and notify scripts, for a pair of routers")
    vrrp_sub = vrrp.add_subparsers(
        dest="vrrp_command", metavar="check|notify", required=True,
        help="check: keepalived's vrrp_script; notify: its notify script",
    )  # fmt: skip
    vrrp_sub.add_parser("check", help="exit 0 while this router has a usable link of the best tier")
    notify_vrrp = vrrp_sub.add_parser(
        "notify", help="keepalived's notify: conntrackd's steps, then the daemon"
    )
    notify_vrrp.add_argument("kind", metavar="GROUP|INSTANCE", help="what keepalived says changed")
    notify_vrrp.add_argument("instance", metavar="NAME", help="the VRRP instance's (or group's) name")
    notify_vrrp.add_argument("state", metavar="STATE", help="MASTER, BACKUP, FAULT or STOP")
    notify_vrrp.add_argument("priority", metavar="PRIORITY", nargs="?", help="(keepalived's; unused)")
    notify_vrrp.add_argument(
        "--conntrackd", default="conntrackd", metavar="PATH",
        help="the conntrackd binary (default: from PATH); --conntrackd none: no connection sync",
    )  # fmt: skip
    notify_vrrp.add_argument("--conntrackd-config", metavar="FILE", help="conntrackd -C FILE")
    vrrp.set_defaults(func=cmd_vrrp)
    clean = sub.add_parser(
        "cleanup", help="remove everything wanhooks added and restore the sysctls it changed"
    )
    clean.add_argument("--force", action="store_true", help="clean up even while a daemon runs")
    clean.set_defaults(func=cmd_cleanup)
    for name, command in sub.choices.items():
        description, codes = COMMANDS[name]  # every command has both (tests/test_cli.py)
        command.description, command.epilog = description, _exit_status(codes)
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
