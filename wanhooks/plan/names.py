"""Interface names: the ones wanhooks manages, and how any name is shown.

The kernel (dev_valid_name) allows any byte in a name but NUL, '/', ':' and
whitespace -- so '"', '\\', ';', '#', '{', escape sequences and bytes that are
not UTF-8 are all legal, and anyone who can create or rename an interface
(a VM or container manager, a user's connection) chooses them.  Such a name
would change the structure of what wanhooks writes: an nftables script
(whose strings have no escapes), a log line, a terminal, a file path.  So a
name wanhooks *manages* must be made of SAFE_CHARS only -- every real uplink
name is (eth0, enp3s0, wlp2s0, wwan0, ppp0, enx0011..., br-lan, eth0.100,
usb0@x) -- and any other name is only ever *shown*, through `shown`.

Checked wherever a name arrives: the config, a hook's environment, the
control socket, and the kernel's own links (plan.managed_links).
"""

from __future__ import annotations

import functools
import string

IFNAME_MAX = 15  # IFNAMSIZ - 1: the kernel's limit, NUL excluded
GLOB_CHARS = "*?[]!"  # fnmatch's: '!' only negates inside brackets
SAFE_CHARS = frozenset(string.ascii_letters + string.digits + "._-+@")
SHOWN_MAX = 40  # characters of a hostile name worth showing


def shown(text: str, limit: int = SHOWN_MAX) -> str:
    """Any text as one printable line: what is not printable (controls, escape sequences,
    undecodable bytes, newlines) and backslashes become escapes, long text is cut."""
    cut = text[:limit]
    out = "".join(ch if ch.isprintable() and ch != "\\" else _escape(ch) for ch in cut)
    return out + ("..." if len(text) > limit else "")


def _escape(ch: str) -> str:
    code = ord(ch)
    if ch == "\\":
        return "\\\\"
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable_line(text: str) -> str:
    """A line of our own text with any hostile character in it escaped (logs, status)."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape(ch) for ch in text)


@functools.lru_cache(maxsize=4096)  # every round asks of every link: names rarely change
def ifname_problem(name: str, *, glob: bool = False) -> str | None:
    """Why name is not one wanhooks manages (or a glob, if allowed); None when it is."""
    quoted = f"'{shown(name)}'"
    if not name:
        return "the interface name is empty"
    if name in (".", ".."):
        return f"{quoted} is not a valid interface name"
    for char in name:  # the kernel's own rules first: they say what is wrong plainly
        if char in "/:":
            return f"interface name {quoted} must not contain {char!r}"
        if char.isspace():
            return f"interface name {quoted} must not contain whitespace"
        if char in GLOB_CHARS and not glob:
            return f"interface name {quoted} must not contain {char!r}"
    for char in name:
        if char not in SAFE_CHARS and not (glob and char in GLOB_CHARS):
            return (
                f"interface name {quoted} must be printable ASCII letters, digits or . _ - + @ "
                f"(it has '{shown(char)}')"
            )
    if len(name) > IFNAME_MAX:
        return f"interface name {quoted} is {len(name)} characters: Linux allows at most {IFNAME_MAX}"
    return None
