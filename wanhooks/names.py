"""Interface names as the kernel allows them (dev_valid_name): checked wherever one
arrives from outside -- the config, a hook's environment, the control socket."""

from __future__ import annotations

IFNAME_MAX = 15  # IFNAMSIZ - 1: the kernel's limit, NUL excluded
GLOB_CHARS = "*?[]"


def ifname_problem(name: str, *, glob: bool = False) -> str | None:
    """Why name is not a valid interface name (or glob, if allowed); None when it is."""
    shown = repr(name[:40]) + ("..." if len(name) > 40 else "")
    if not name:
        return "the interface name is empty"
    if name in (".", ".."):
        return f"{shown} is not a valid interface name"
    for char in name:
        if char in "/:":
            return f"interface name {shown} must not contain {char!r}"
        if char.isspace():
            return f"interface name {shown} must not contain whitespace"
        if not "!" <= char <= "~":
            return f"interface name {shown} must be printable ASCII"
        if not glob and char in GLOB_CHARS:
            return f"interface name {shown} must not contain {char!r}"
    if len(name) > IFNAME_MAX:
        return f"interface name {shown} is {len(name)} characters: Linux allows at most {IFNAME_MAX}"
    return None
