"""`wanhooks install` / `uninstall`, and the files the Debian package ships: one source for both.

The unit, the two managers' hook scripts and networkd's drop-in are templates
in wanhooks/hooks; `render` fills in the command that runs wanhooks, the
config and the run directory.  `install` places them under /etc for a
virtualenv install; `stage_package` (debian/rules) lays them out under /usr
and /lib as a package must, so admin edits go in /etc and survive upgrades.

Everything goes under a root directory (default /), so both are tested into a
temporary directory.  Nothing of the admin's is ever overwritten: each file
install places ends with a stamp (the sha256 of the rest), so a reinstall can
tell a file it placed and nobody touched (replaced) from one an admin edited
(kept; the new version goes beside it, not executable).  A manifest of what
was placed, and which directories install had to create, lets `uninstall`
remove exactly those and nothing that merely shares a directory.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources

from . import constants as c

NETWORKD_STATES = ("routable", "degraded", "carrier", "no-carrier", "off", "configured")
MODES = ("daemon", "hooks-only")
# What a command or path placed in a script may hold: it is split on blanks, never quoted.
_SAFE_COMMAND = re.compile(r"[A-Za-z0-9/._+ -]+")
_SAFE_PATH = re.compile(r"[A-Za-z0-9/._+-]+")
STAMP = "# placed by wanhooks install; edits are kept on reinstall. sha256 of the lines above: "
NEW_SUFFIX = ".wanhooks-new"
MANIFEST = "var/lib/wanhooks/installed"
UNIT_NAME = "wanhooks.service"
# ProtectHome=yes hides the first three from the unit, PrivateTmp=yes the other two: an
# interpreter there (a virtualenv in a home, pyenv under /root) fails with 203/EXEC.
HIDDEN_FROM_UNIT = ("/home", "/root", "/run/user", "/tmp", "/var/tmp")
# networkd learned ManageForeignNextHops= in systemd 256; older ones warn at each start.
NEXTHOPS_SETTING_SINCE = 256


@dataclass(frozen=True)
class Layout:
    """Where each file goes, relative to the root."""

    unit: str
    nm_dispatcher: str
    networkd_dispatcher: str  # with {state}
    networkd_conf: str

    def files(self, with_unit: bool) -> list[tuple[str, str, int]]:
        """(path, template in wanhooks/hooks, mode) for each file."""
        out = [(self.unit, "wanhooks.service", 0o644)] if with_unit else []
        out.append((self.nm_dispatcher, "nm-dispatcher", 0o755))
        out.append((self.networkd_conf, "networkd.conf", 0o644))
        out += [
            (self.networkd_dispatcher.format(state=state), "networkd-dispatcher", 0o755)
            for state in NETWORKD_STATES
        ]
        return out


LOCAL = Layout(
    unit=f"etc/systemd/system/{UNIT_NAME}",
    nm_dispatcher="etc/NetworkManager/dispatcher.d/90-wanhooks",
    networkd_dispatcher="etc/networkd-dispatcher/{state}.d/90-wanhooks",
    networkd_conf="etc/systemd/networkd.conf.d/wanhooks.conf",
)
# The vendor directories each program reads beside /etc (an /etc file of the same name wins).
PACKAGE = Layout(
    unit=f"lib/systemd/system/{UNIT_NAME}",
    nm_dispatcher="usr/lib/NetworkManager/dispatcher.d/90-wanhooks",
    networkd_dispatcher="usr/lib/networkd-dispatcher/{state}.d/90-wanhooks",
    networkd_conf="usr/lib/systemd/networkd.conf.d/wanhooks.conf",
)
PACKAGE_COMMAND = "/usr/sbin/wanhooks"
PACKAGE_LIB = "/usr/lib/wanhooks"


class InstallError(Exception):
    pass


def starting_config(mode: str = "daemon") -> str:
    return f"""\
# wanhooks configuration: every uplink that matches an entry is balanced once it
# has carrier, an address and a gateway (learned from your network manager).
# Interfaces without a gateway (a LAN port, say) are never balanced.
# Reference: man wanhooks.yaml (or the README's Configuration section).
mode: {mode}      # daemon: wanhooks.service follows every change | hooks-only: no resident process
links:
  - interface: "eth*"     # wired
  - interface: "en*"
  - interface: "wl*"      # wifi
  - interface: "wwan*"    # 3G/LTE modems
  - interface: "usb*"     # phones tethered over USB
balance: per-connection   # per-connection | per-destination | per-client
"""


def venv_command() -> str:
    """How a hook or the unit runs this very wanhooks when it was installed with pip.

    `-I` (isolated): neither the caller's directory nor PYTHON* variables reach sys.path."""
    return f"{_safe(os.path.abspath(sys.executable), 'interpreter')} -I -m wanhooks"


def unit_visibility_problem(paths: list[str]) -> str | None:
    """Why the unit could not start an interpreter that lives at one of `paths`, or None."""
    for path in paths:
        for hidden in HIDDEN_FROM_UNIT:
            if path == hidden or path.startswith(hidden + "/"):
                return (
                    f"the unit could not start this wanhooks: it runs {path}, under {hidden}, which the "
                    "unit's sandbox hides (ProtectHome=, PrivateTmp=). Install the Debian package, or "
                    "make a virtualenv from the system's python3 outside /home, /root and /tmp: "
                    "python3 -m venv /opt/wanhooks && /opt/wanhooks/bin/pip install wanhooks && "
                    "/opt/wanhooks/bin/wanhooks install  (or `wanhooks install --mode hooks-only`: "
                    "no unit, the hooks apply by themselves)"
                )
    return None


def _interpreter_paths() -> list[str]:
    """Every file the unit would need to see: the interpreter (through a venv's symlink),
    its standard library and this package."""
    import wanhooks

    here = os.path.dirname(os.path.realpath(wanhooks.__file__))
    return [
        os.path.realpath(sys.executable), os.path.realpath(sys.prefix),
        os.path.realpath(sys.base_prefix), here,
    ]  # fmt: skip


def _safe(value: str, what: str, pattern: re.Pattern[str] = _SAFE_PATH) -> str:
    if not pattern.fullmatch(value):
        raise InstallError(f"the {what} {value!r} has characters a hook script cannot quote safely")
    return value


def networkd_nexthops_supported(version: int | None) -> bool:
    return version is not None and version >= NEXTHOPS_SETTING_SINCE


def systemd_version() -> int | None:
    """The running system's systemd version (`networkctl --version`), or None."""
    for tool in ("networkctl", "systemctl"):
        try:
            out = subprocess.run(
                [tool, "--version"], capture_output=True, text=True, timeout=5, check=False, cwd="/"
            ).stdout
        except (OSError, subprocess.SubprocessError):
            continue
        match = re.match(r"systemd (\d+)", out)
        if match:
            return int(match.group(1))
    return None


def render(template: str, command: str, config_path: str, run_dir: str, nexthops: bool = False) -> str:
    """A template from wanhooks/hooks with its placeholders filled in."""
    text = resources.files("wanhooks").joinpath("hooks").joinpath(template).read_text(encoding="utf-8")
    values = {
        "@WANHOOKS@": _safe(command, "command", _SAFE_COMMAND),
        "@CONFIG@": _safe(config_path, "config path"),
        "@RUN_DIR@": _safe(run_dir, "run directory"),
    }
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    if template == "networkd.conf" and not nexthops:
        # networkd older than 256 warns "Unknown key name" at each start for this line
        text = "\n".join(line for line in text.splitlines() if not line.startswith("ManageForeignNextHops"))
        text += "\n"
    return text


def stamped(text: str) -> str:
    return f"{text}{STAMP}{_digest(text)}\n"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def unedited(text: str) -> bool:
    """Whether `text` is a file install placed and nobody changed since."""
    body, _, last = text.rstrip("\n").rpartition("\n")
    if not last.startswith(STAMP):
        return False
    return last[len(STAMP) :] == _digest(body + "\n")


def _write(path: str, text: str, mode: int) -> None:
    tmp = path + ".wanhooks-tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)
    if os.geteuid() == 0:
        os.chown(tmp, 0, 0)  # networkd-dispatcher runs only root:root 0755 scripts
    os.replace(tmp, path)


def _makedirs(path: str, created: list[str]) -> None:
    """mkdir -p, noting each directory made (uninstall removes those once empty)."""
    missing = []
    while path and not os.path.isdir(path):
        missing.append(path)
        path = os.path.dirname(path)
    for directory in reversed(missing):
        os.mkdir(directory, 0o755)
        created.append(directory)


@dataclass
class Outcome:
    written: list[str]
    kept: list[str]  # (admin-edited files left alone; their new version is beside them)
    notes: list[str]


def install(
    root: str, config_path: str, run_dir: str, mode: str = "daemon", command: str | None = None
) -> Outcome:
    """Place the hooks, networkd's drop-in, the unit (mode daemon) and, if none exists, a
    starting config.  The hooks and the unit name the config and run directory given here."""
    if mode not in MODES:
        raise InstallError(f"unknown mode {mode!r}: daemon or hooks-only")
    with_unit = mode == "daemon"
    if with_unit and os.path.realpath(root) == "/" and command is None:
        # only here can we know what the unit will see; a staging root is the packager's call
        problem = unit_visibility_problem(_interpreter_paths())
        if problem:
            raise InstallError(problem)
    command = command or venv_command()
    nexthops = networkd_nexthops_supported(systemd_version())
    outcome = Outcome([], [], [])
    manifest = _read_manifest(root)
    created: list[str] = []
    placed: list[str] = []
    for rel, template, file_mode in LOCAL.files(with_unit):
        path = os.path.join(root, rel)
        text = stamped(render(template, command, config_path, run_dir, nexthops))
        _makedirs(os.path.dirname(path), created)
        placed.append(rel)
        try:
            with open(path, encoding="utf-8") as f:
                old = f.read()
        except FileNotFoundError:
            old = None
        if old is not None and old != text and not unedited(old):
            _write(path + NEW_SUFFIX, text, 0o644)  # never executable: a dispatcher runs those
            outcome.kept.append(path)
            continue
        if old != text:
            _write(path, text, file_mode)
            outcome.written.append(path)
    config = os.path.join(root, config_path.lstrip("/"))
    if not os.path.exists(config):
        _makedirs(os.path.dirname(config), created)
        _write(config, starting_config(mode), 0o644)
        outcome.written.append(config)
    elif with_unit is False:
        outcome.notes.append(f"{config} exists: set `mode: hooks-only` in it")
    if not nexthops:
        outcome.notes.append(
            "networkd older than 256 (or none): its drop-in leaves out ManageForeignNextHops="
        )
    dirs = sorted(set(manifest.dirs) | {os.path.relpath(d, root) for d in created})
    files = sorted(set(manifest.files) | set(placed))
    _write_manifest(root, Manifest(files, dirs), created)
    return outcome


@dataclass
class Manifest:
    files: list[str]
    dirs: list[str]  # directories install created (removed by uninstall once empty)


def _read_manifest(root: str) -> Manifest:
    try:
        with open(os.path.join(root, MANIFEST), encoding="utf-8") as f:
            lines = f.read().splitlines()
    except FileNotFoundError:
        return Manifest([], [])
    files = [line[5:] for line in lines if line.startswith("file ")]
    dirs = [line[4:] for line in lines if line.startswith("dir ")]
    return Manifest(files, dirs)


def _write_manifest(root: str, manifest: Manifest, created: list[str]) -> None:
    path = os.path.join(root, MANIFEST)
    before = len(created)
    _makedirs(os.path.dirname(path), created)
    dirs = set(manifest.dirs) | {os.path.relpath(d, root) for d in created[before:]}
    lines = [f"file {rel}" for rel in manifest.files] + [f"dir {rel}" for rel in sorted(dirs)]
    _write(path, "\n".join(lines) + "\n", 0o644)


def _enable_links(root: str) -> list[str]:
    """The symlinks `systemctl enable` made for the unit (any *.wants/ or *.requires/)."""
    base = os.path.join(root, "etc/systemd/system")
    found = []
    try:
        entries = os.listdir(base)
    except FileNotFoundError:
        return []
    for entry in entries:
        if entry.endswith((".wants", ".requires")):
            link = os.path.join(base, entry, UNIT_NAME)
            if os.path.islink(link):
                found.append(link)
    return found


def uninstall(root: str) -> Outcome:
    """Disable the service, remove what install placed and the directories it created (once
    empty).  The config is the admin's and stays; the routing stays in the kernel."""
    outcome = Outcome([], [], [])
    if os.path.realpath(root) == "/" and os.path.isdir("/run/systemd/system"):
        # a booted systemd: let it disable (and stop) the unit it knows
        subprocess.run(
            ["systemctl", "disable", "--now", UNIT_NAME], capture_output=True, check=False, cwd="/"
        )
    manifest = _read_manifest(root)
    rels = set(manifest.files) | {rel for rel, _t, _m in LOCAL.files(with_unit=True)}
    paths = [os.path.join(root, rel) for rel in sorted(rels)]
    paths += [p + NEW_SUFFIX for p in paths] + _enable_links(root)
    paths.append(os.path.join(root, MANIFEST))
    for path in paths:
        try:
            os.unlink(path)
            outcome.written.append(path)
        except FileNotFoundError:
            pass
    dirs = set(manifest.dirs) | {os.path.dirname(MANIFEST)}
    for rel in sorted(dirs, key=lambda d: d.count("/"), reverse=True):  # deepest first
        try:
            os.rmdir(os.path.join(root, rel))
            outcome.written.append(os.path.join(root, rel))
        except OSError:
            pass  # not empty (someone else's file is there) or already gone
    outcome.notes.append(
        "the routing stays in the kernel until `wanhooks cleanup`; the config stays for a reinstall"
    )
    return outcome


# Not in the package: the demo and its namespace lab are for a checkout, the hooks'
# templates are rendered into place below.
_NOT_PACKAGED = ("__pycache__", "*.pyc", "demo", "lab", "hooks")


def stage_package(
    dest: str, modules: str, config_path: str = c.DEFAULT_CONFIG, run_dir: str = c.DEFAULT_RUN_DIR
) -> None:
    """Lay out the Debian package's own files under `dest` (debian/rules): the modules from
    the checkout at `modules`, the launcher, the unit, the hooks, the starting config.

    The vendored pyroute2, the man pages and completions are placed by debian/rules."""
    shutil.copytree(
        os.path.join(modules, "wanhooks"), os.path.join(dest, PACKAGE_LIB.lstrip("/"), "wanhooks"),
        ignore=shutil.ignore_patterns(*_NOT_PACKAGED), dirs_exist_ok=True,
    )  # fmt: skip
    for rel, template, mode in PACKAGE.files(with_unit=True):
        path = os.path.join(dest, rel)
        os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
        # the nexthops line is added on hosts whose networkd knows it, by the postinst
        _write(path, render(template, PACKAGE_COMMAND, config_path, run_dir, nexthops=False), mode)
    config = os.path.join(dest, config_path.lstrip("/"))
    os.makedirs(os.path.dirname(config), mode=0o755, exist_ok=True)
    _write(config, starting_config(), 0o644)
    launcher = os.path.join(dest, PACKAGE_COMMAND.lstrip("/"))
    os.makedirs(os.path.dirname(launcher), mode=0o755, exist_ok=True)
    _write(launcher, LAUNCHER, 0o755)


# /usr/sbin/wanhooks in the package: the modules and the pyroute2 they need live in a
# private directory, ahead of the distribution's older python3-pyroute2 if it is installed.
LAUNCHER = f'''\
#!/usr/bin/python3 -I
"""wanhooks, as its Debian package installs it (modules in {PACKAGE_LIB})."""
import sys

sys.path.insert(0, "{PACKAGE_LIB}")
import wanhooks.command  # noqa: E402

wanhooks.command.LAUNCHER = "{PACKAGE_COMMAND}"  # how a hook's child runs this wanhooks again
from wanhooks.cli import main  # noqa: E402

raise SystemExit(main())
'''
