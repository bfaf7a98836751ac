"""wanhooks(8), wanhooks.yaml(5) and the bash and zsh completions, generated.

    python -m wanhooks.manual OUTDIR

writes OUTDIR/wanhooks.8, OUTDIR/wanhooks.yaml.5, OUTDIR/wanhooks.bash and
OUTDIR/_wanhooks (zsh).  Each comes from what the program itself uses, so none
can drift from it: wanhooks(8) and the completions from the command's parser
(cli.build_parser, which --help prints), wanhooks.yaml(5) from the config
schema (config/schema.py, which a test holds to config/load.py).

A build-time tool: argparse-manpage renders the parser as roff and shtab writes
the completions; wanhooks never imports either at run time (they are imported
here, inside the functions that need them).  SOURCE_DATE_EPOCH, when set, dates
the pages (reproducible builds).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import importlib
import os
import re
import sys
from collections.abc import Iterable, Sequence
from typing import Any

from .cli import build_parser, version
from .config import schema as config_schema
from .config.schema import Key, Section

OUTPUTS = ("wanhooks.8", "wanhooks.yaml.5", "wanhooks.bash", "_wanhooks")

# An exit status block as cli._exit_status writes it: "exit status:" then "  N  meaning".
_EXIT_LINE = re.compile(r"\s+(\d+)\s{2,}(\S.*)")

# Which arguments complete as what (shtab's FILE and DIRECTORY), by their dest.
FILES = ("config", "file")
DIRECTORIES = ("run_dir", "root")

SEE_ALSO = (
    "wanhooks.yaml(5), ip-route(8), ip-rule(8), ip-nexthop(8), nft(8), systemctl(1), "
    "NetworkManager-dispatcher(8), networkd-dispatcher(8)"
)

# wanhooks.yaml(5)'s example: parsed by the tests, so it stays a config wanhooks accepts.
EXAMPLE = """\
links:
  - interface: eth1        # an exact name, or a glob such as "wl*"
    weight: 2
    gateway: 198.51.100.1  # optional: learned from the main table
  - interface: "wl*"
  - interface: wwan0       # a 3G stick: point-to-point, no gateway
    tier: 2                # only while no tier-1 link can carry
balance: per-connection
mode: daemon
nat: masquerade
health:
  targets: [198.51.100.7, 203.0.113.9]
pins:
  - {to: 203.0.113.0/24, link: eth1}
"""


# --------------------------------------------------------------------------
# roff
# --------------------------------------------------------------------------


def roff(text: str) -> str:
    """Text as roff input that prints as written: backslashes escaped, hyphens as minus signs
    (options must be copyable), and no line starting with a control character ('.' or "'")."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\n".join("\\&" + line if line.startswith((".", "'")) else line for line in text.split("\n"))


def _bold(text: str) -> str:
    return f"\\fB{roff(text)}\\fR"


def _italic(text: str) -> str:
    return f"\\fI{roff(text)}\\fR"


def _date() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = (
        datetime.datetime.fromtimestamp(int(epoch), datetime.timezone.utc)
        if epoch and epoch.isdigit()
        else datetime.datetime.now(datetime.timezone.utc)
    )
    return when.strftime("%Y-%m-%d")


def _paragraphs(text: str) -> list[str]:
    """Text with blank lines between paragraphs as roff: .PP between them, each filled."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        if out:
            out.append(".PP")
        lines = block.split("\n")
        if all(line.startswith("  ") for line in lines):  # an indented list: keep its lines
            out += [".RS", ".nf", *(roff(line.strip()) for line in lines), ".fi", ".RE"]
        else:
            out.append(roff(" ".join(line.strip() for line in lines)))
    return out


# --------------------------------------------------------------------------
# wanhooks(8): the parser, through argparse-manpage
# --------------------------------------------------------------------------


def _commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:  # argparse has no public way to its subparsers
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def exit_codes(parser: argparse.ArgumentParser) -> list[tuple[int, str]]:
    """A parser's exit codes, read back from its epilog's "exit status:" block."""
    text = parser.epilog or ""
    start = text.find("exit status:")
    if start < 0:
        return []
    codes = []
    for line in text[start:].split("\n")[1:]:
        found = _EXIT_LINE.fullmatch(line)
        if found is None:
            break
        codes.append((int(found.group(1)), found.group(2)))
    return codes


def _exit_status_section(parser: argparse.ArgumentParser) -> str:
    lines: list[str] = []
    for code, meaning in exit_codes(parser):
        lines += [".TP", f".B {code}", roff(meaning)]
    lines += [".PP", "Each command's own:"]
    for name, command in _commands(parser).items():
        lines += [".TP", _bold(f"wanhooks {name}")]
        lines.append("\n.br\n".join(f"{code}: {roff(meaning)}" for code, meaning in exit_codes(command)))
    return "\n".join(lines)


def _files_section() -> str:
    from . import constants as c

    entries = (
        (c.DEFAULT_CONFIG, "the config (wanhooks.yaml(5)); -c or $WANHOOKS_CONFIG choose another"),
        (f"{c.DEFAULT_RUN_DIR}/control", "the daemon's control socket: status for anyone, the rest for root"),
        (f"{c.DEFAULT_RUN_DIR}/daemon.lock", "held by a running daemon for its whole life"),
        (f"{c.DEFAULT_RUN_DIR}/sysctl-saved.json", "the sysctls wanhooks changed, for cleanup"),
        ("/etc/wanhooks/hooks.d", "executables run on each health transition (hooks_dir)"),
    )
    return "\n".join(f".TP\n{_bold(path)}\n{roff(what)}" for path, what in entries)


def _environment_section() -> str:
    entries = (
        ("WANHOOKS_CONFIG", "the config file, when -c is not given"),
        ("WANHOOKS_RUN_DIR", "the run directory, when --run-dir is not given"),
        ("SOURCE_DATE_EPOCH", "dates these manual pages when they are generated"),
    )
    return "\n".join(f".TP\n{_bold(name)}\n{roff(what)}" for name, what in entries)


def _for_the_page(parser: argparse.ArgumentParser) -> None:
    """The parser as the page shows it: the global options once, at the top (not again under
    each command), usage lines unwrapped (roff fills them), the top epilog's prose in the
    description (its exit codes are EXIT STATUS)."""
    unwrapped = functools.partial(argparse.RawDescriptionHelpFormatter, width=10_000)
    parser.formatter_class = unwrapped
    for command in _commands(parser).values():
        command.formatter_class = unwrapped
        for action in command._actions:
            if action.dest in ("config", "run_dir"):
                action.help = argparse.SUPPRESS
    prose = (parser.epilog or "").split("exit status:")[0].strip()
    parser.description = f"{parser.description}\n\n{prose}" if prose else parser.description
    parser.epilog = None


def _tool(module: str) -> Any:
    """A build-time tool's module (argparse-manpage, shtab): imported here alone, and typed
    Any (neither ships type information that mypy --strict takes)."""
    return importlib.import_module(module)


def manpage_8() -> str:
    """wanhooks(8): every command, its options, its exit codes; from the parser."""
    parser = build_parser()
    exit_section = _exit_status_section(parser)
    _for_the_page(parser)
    page = _tool("argparse_manpage.manpage").Manpage(parser, format="single-commands-section")
    page.section = 8
    page.date = _date()
    page.source = f"wanhooks {version()}"
    page.manual = "System Manager's Manual"
    page.description = "use every WAN link at once"
    page.add_section("exit status", "=", exit_section)
    page.add_section("environment", "=", _environment_section())
    page.add_section("files", "=", _files_section())
    page.add_section("see also", "=", roff(SEE_ALSO))
    return str(page)


# --------------------------------------------------------------------------
# wanhooks.yaml(5): the schema
# --------------------------------------------------------------------------


def _key_entry(key: Key, section: Section) -> list[str]:
    if section is config_schema.COLUMNS:
        written = f"{key.name}={key.example}"
    else:
        written = f"{key.name}: {key.example}"
    default = "Required." if key.default == "(required)" else f"Default: {key.default}."
    return [
        ".TP",
        f"{_bold(key.name)} ({_italic(key.type)})",
        roff(f"{key.meaning} {default}"),
        ".br",
        f"For example: {_bold(written)}",
    ]


def manpage_yaml_5(sections: Iterable[Section] = config_schema.SECTIONS) -> str:
    """wanhooks.yaml(5): every key of every section, with its type, default and meaning."""
    from . import constants as c

    lines = [
        f'.TH WANHOOKS.YAML 5 "{_date()}" "wanhooks {roff(version())}" "File Formats Manual"',
        ".SH NAME",
        "wanhooks.yaml \\- configuration of wanhooks(8)",
        ".SH SYNOPSIS",
        _bold(c.DEFAULT_CONFIG),
        ".SH DESCRIPTION",
        *_paragraphs(
            "wanhooks reads one file: YAML, or the column format of the 2011 generic-balancer.sh, "
            "told apart by its content. -c FILE or $WANHOOKS_CONFIG choose another file.\n\n"
            "A bad config changes nothing in the kernel: the command exits 2 with one line naming "
            "the file, the line and the key (file:line: key: message). Unknown keys, repeated keys "
            "and YAML aliases are refused; so is a value of the wrong type. `wanhooks check` "
            "checks a file; the daemon re-reads it on `wanhooks reload` (SIGHUP) and keeps the "
            "running config when the new one is refused."
        ),
        ".SH EXAMPLE",
        ".RS",
        ".nf",
        *(roff(line) for line in EXAMPLE.rstrip("\n").split("\n")),
        ".fi",
        ".RE",
    ]
    for section in sections:
        lines += [f".SH {section.title}", *_paragraphs(section.intro)]
        for key in section.keys:
            lines += _key_entry(key, section)
    lines += [".SH SEE ALSO", roff("wanhooks(8)")]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------
# Completions: the parser, through shtab
# --------------------------------------------------------------------------


def _all_actions(parser: argparse.ArgumentParser) -> Iterable[argparse.Action]:
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for command in action.choices.values():
                yield from _all_actions(command)


def completion(shell: str) -> str:
    """The completion script for shell ("bash" or "zsh"): commands, options, choices, and files
    or directories where an argument names one."""
    shtab = _tool("shtab")
    parser = build_parser()
    for action in _all_actions(parser):
        if action.dest in FILES:
            action.complete = shtab.FILE  # type: ignore[attr-defined]  # shtab reads it
        elif action.dest in DIRECTORIES:
            action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
    return str(shtab.complete(parser, shell=shell))


# --------------------------------------------------------------------------


def write_all(outdir: str) -> list[str]:
    os.makedirs(outdir, exist_ok=True)
    texts = {
        "wanhooks.8": manpage_8(),
        "wanhooks.yaml.5": manpage_yaml_5(),
        "wanhooks.bash": completion("bash"),
        "_wanhooks": completion("zsh"),
    }
    written = []
    for name in OUTPUTS:
        path = os.path.join(outdir, name)
        with open(path, "w", encoding="utf-8") as f:
            f.write(texts[name])
        written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if len(args) != 1 or args[0].startswith("-"):
        print("usage: python -m wanhooks.manual OUTDIR", file=sys.stderr)
        return 2
    try:
        written = write_all(args[0])
    except ImportError as err:
        print(f"wanhooks.manual: {err.name or err} is needed to build the manuals "
              "(pip install argparse-manpage shtab)", file=sys.stderr)  # fmt: skip
        return 1
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
