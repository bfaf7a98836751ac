"""`wanhooks install` / `uninstall`: put the hooks, the unit and a starting config in place.

Everything goes under --root (default /), so it can be tested into a
temporary directory and used to build packages.  Scripts get the absolute
command that runs this wanhooks, so a hook never depends on PATH.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from importlib import resources

NETWORKD_STATES = ("routable", "degraded", "carrier", "no-carrier", "off", "configured")
_SAFE_PATH = re.compile(r"[A-Za-z0-9/._+-]+")

DEFAULT_CONFIG = """\
# wanhooks configuration: every uplink that matches an entry is balanced once it
# has carrier, an address and a gateway (learned from your network manager).
# Interfaces without a gateway (a LAN port, say) are never balanced.
# Reference: the README's Configuration section.
links:
  - interface: "eth*"     # wired
  - interface: "en*"
  - interface: "wl*"      # wifi
  - interface: "wwan*"    # 3G/LTE modems
  - interface: "usb*"     # phones tethered over USB
balance: per-connection   # per-connection | per-destination | per-client
"""


@dataclass(frozen=True)
class Placed:
    path: str  # relative to the root
    source: str  # file name in wanhooks/hooks, or "" for generated content
    mode: int


def targets() -> list[Placed]:
    out = [
        Placed("etc/systemd/system/wanhooks.service", "wanhooks.service", 0o644),
        Placed("etc/NetworkManager/dispatcher.d/90-wanhooks", "nm-dispatcher", 0o755),
        Placed("etc/systemd/networkd.conf.d/wanhooks.conf", "networkd.conf", 0o644),
    ]
    out += [
        Placed(f"etc/networkd-dispatcher/{state}.d/90-wanhooks", "networkd-dispatcher", 0o755)
        for state in NETWORKD_STATES
    ]
    return out


class InstallError(Exception):
    pass


def python() -> str:
    """The interpreter that runs this very wanhooks (a venv's works too)."""
    return _safe(os.path.abspath(sys.executable), "interpreter")


def _safe(path: str, what: str) -> str:
    if not _SAFE_PATH.fullmatch(path):
        raise InstallError(f"the {what} path {path!r} has characters a hook script cannot quote safely")
    return path


def _content(name: str, config_path: str, run_dir: str) -> str:
    text = resources.files("wanhooks").joinpath("hooks").joinpath(name).read_text(encoding="utf-8")
    values = {
        "@WANHOOKS@": f"{python()} -I -m wanhooks",  # -I: no caller's directory on sys.path
        "@PYTHON@": python(),
        "@CONFIG@": _safe(config_path, "config"),
        "@RUN_DIR@": _safe(run_dir, "run directory"),
    }
    for placeholder, value in values.items():
        text = text.replace(placeholder, value)
    return text


def _write(path: str, text: str, mode: int) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    tmp = path + ".wanhooks-new"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.chmod(tmp, mode)
    if os.geteuid() == 0:
        os.chown(tmp, 0, 0)  # networkd-dispatcher runs only root:root 0755 scripts
    os.replace(tmp, path)


def install(root: str, config_path: str, run_dir: str) -> list[str]:
    """Place every file; returns what was written (a config only if none exists).

    The hooks and the unit name the config and run directory given here, so
    they reach the daemon that uses them.
    """
    written = []
    for placed in targets():
        path = os.path.join(root, placed.path)
        _write(path, _content(placed.source, config_path, run_dir), placed.mode)
        written.append(path)
    config = os.path.join(root, config_path.lstrip("/"))
    if not os.path.exists(config):
        _write(config, DEFAULT_CONFIG, 0o644)
        written.append(config)
    return written


def uninstall(root: str) -> list[str]:
    """Remove what install placed (never the config: it is the admin's)."""
    removed = []
    for placed in targets():
        path = os.path.join(root, placed.path)
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed
