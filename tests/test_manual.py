"""The manual pages and completions, and the config schema they are made from.

config/load.py takes its keys from the schema, so the schema names exactly what it accepts;
every key in it is taken with its example value, and documented.  The generated
files need argparse-manpage and shtab (build-time tools): those tests are
skipped without them.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wanhooks.cli import build_parser
from wanhooks.config import load
from wanhooks.config import schema as config_schema
from wanhooks.config.load import parse_config
from wanhooks.config.schema import Section
from wanhooks.manual import EXAMPLE, _commands, roff


def test_every_top_level_key_of_the_schema_has_its_reader() -> None:
    assert set(load._TOP_PARSERS) == set(config_schema.TOP.names)


def test_every_key_of_the_schema_is_documented_once() -> None:
    for section in config_schema.SECTIONS:
        assert len(section.names) == len(set(section.names)), section.name
        for key in section.keys:
            assert key.type and key.default and key.meaning.endswith((".", ")")), (section.name, key)


def _with(section: Section, name: str, example: str) -> str:
    """A minimal config that sets this one key to its example."""
    if section.name == "":
        return f"{name}: {example}\n" + ("" if name == "links" else "links: [{interface: eth0}]\n")
    if section.name == "links[]":
        extra = "" if name == "interface" else "    interface: eth0\n"
        extra += "    weight: auto\n" if name == "capacity" else ""
        return f"links:\n  - {name}: {example}\n{extra}"
    if section.name == "health":
        return f"links: [{{interface: eth0}}]\nhealth: {{{name}: {example}}}\n"
    if section.name in ("watchdog", "resilient"):
        return f"links: [{{interface: eth0}}]\n{section.name}: {{{name}: {example}}}\n"
    if section.name == "pins[]":
        pin = {"to": "198.51.100.0/24", "link": "eth0", name: example}
        if name == "tier":
            del pin["link"]
        if name == "port":
            pin["proto"] = "tcp"
        body = ", ".join(f"{k}: {v}" for k, v in pin.items())
        return f"links: [{{interface: eth0}}]\npins:\n  - {{{body}}}\n"
    lines = [f"{name}={example}"] if name == "WANIFACE" else ['WANIFACE="eth0"', f"{name}={example}"]
    if name == "WATCHDOG":
        lines.append('TESTIPS="198.51.100.7"')
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize(
    ("section", "name", "example"),
    [(s, k.name, k.example) for s in config_schema.SECTIONS for k in s.keys],
    ids=lambda v: v.name or "top" if isinstance(v, Section) else None,
)
def test_every_key_of_the_schema_is_accepted_with_its_example(
    section: Section, name: str, example: str
) -> None:
    parsed = parse_config(_with(section, name, example), "x.yaml")
    assert [link.interface for link in parsed.links] == ["eth1" if name == "interface" else "eth0"]


def test_the_manuals_example_is_a_valid_config() -> None:
    parsed = parse_config(EXAMPLE, "example.yaml")
    assert [link.interface for link in parsed.links] == ["eth1", "wl*", "wwan0"]


def test_roff_escapes_what_roff_would_read_as_its_own() -> None:
    assert roff(".SH gone\n'br\nback\\slash -c") == "\\&.SH gone\n\\&'br\nback\\eslash \\-c"


BUILD_TOOLS = all(importlib.util.find_spec(name) for name in ("argparse_manpage", "shtab"))


@pytest.mark.skipif(not BUILD_TOOLS, reason="argparse-manpage and shtab build the manuals")
def test_the_manuals_and_completions_are_generated_whole(tmp_path: Path) -> None:
    env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000"}
    out = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "wanhooks.manual", str(out)],
        capture_output=True, text=True, env=env, cwd=Path(__file__).parent.parent,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    names = ("wanhooks.8", "wanhooks.yaml.5", "wanhooks.bash", "_wanhooks")
    assert proc.stdout.split() == [str(out / name) for name in names]
    page8, page5, bash, zsh = ((out / name).read_text() for name in names)
    assert page8.startswith('.TH WANHOOKS "8" "2023\\-11\\-14"')
    commands = list(_commands(build_parser()))
    assert len(commands) >= 12
    for name in commands:
        assert f"wanhooks {roff(name)}" in page8, name  # each command has its part
        exit_status = page8.split(".SH EXIT STATUS")[1]
        assert f"\\fBwanhooks {roff(name)}\\fR" in exit_status, name  # and its exit codes
        assert name in bash and name in zsh, name
    for section in config_schema.SECTIONS:
        assert f".SH {section.title}" in page5
        for key in section.keys:
            assert f"\\fB{roff(key.name)}\\fR" in page5, key.name
    assert zsh.startswith("#compdef wanhooks")
    assert "_shtab_compgen_files" in bash  # -c and convert's FILE complete as files
    if shutil.which("bash"):
        checked = subprocess.run(["bash", "-n", str(out / "wanhooks.bash")], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
    if shutil.which("man"):
        for name in ("wanhooks.8", "wanhooks.yaml.5"):
            shown = subprocess.run(
                ["man", "--warnings", "-l", str(out / name)],
                capture_output=True, text=True, env={**env, "MANWIDTH": "80", "MANPAGER": "cat"},
            )  # fmt: skip
            assert shown.returncode == 0 and shown.stderr == "", (name, shown.stderr)
            assert "EXIT STATUS" in shown.stdout or "TOP-LEVEL KEYS" in shown.stdout
