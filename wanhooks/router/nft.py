"""wanhooks' nftables table: NAT, sticky-connection marks, MSS clamping, evidence of life.

One table, `inet wanhooks`, and no other is ever read or written.  It is
written with the `nft` command as one atomic transaction (the whole table
replaced: `add table; delete table; table {...}` in a single `nft -f`), and
read back with `nft list`.  Why the command and not a library: libnftables'
Python binding is packaged by distributions only (not on PyPI) and would
load the same library the command does; pyroute2's nftables support builds
raw expressions without nft's grammar and lacks masquerade/maps in the
versions here.  The table changes only when links come or go, so one
process per change is cheap (measured ~5 ms), and the text is what an admin
reads in `nft list table inet wanhooks`.

Rendering is pure; every rule carries a comment naming what it is for
("nat w1", "mark w1", ...), which is also how the current NAT set is read
back (reconcile/diff.py keeps a leaving link's NAT until its routes are gone).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import shutil
import subprocess
from dataclasses import dataclass

from .. import constants as c
from ..model import Firewall
from ..plan.names import ifname_problem

NFT_TIMEOUT = 10.0  # seconds; nft answers in milliseconds


@functools.lru_cache(maxsize=8)
def render(fw: Firewall) -> str:
    """The table's body as `nft -f` text; "" when wanhooks needs no table.  Kept for the last
    few tables: a round asks twice, and every round of a steady state asks for the same one
    (64 links' table is ~65 kB of text, some 3 ms to make, most of it addresses as text)."""
    if not fw.links:
        return ""
    keep = f"{~c.STICKY_MARK_MASK & 0xFFFFFFFF:#010x}"
    mask = f"{c.STICKY_MARK_MASK:#010x}"
    nat: list[str] = []
    mark_out: list[str] = []
    mark_in: list[str] = []
    restore: list[str] = []
    restore_local: list[str] = []
    counters: list[str] = []
    heard: list[str] = []  # vmap elements: a link's name -> its own chain (one lookup per packet)
    sent: list[str] = []
    link_chains: list[tuple[str, list[str]]] = []
    for link in fw.links:
        # nft strings have no escapes: a '"' in a name would end the string and what follows
        # would be nft syntax.  The planner manages only names of SAFE_CHARS (plan/names.py);
        # this refuses anything else again, so no name can reach the script's structure.
        problem = ifname_problem(link.name)
        if problem:
            raise ValueError(f"nftables: {problem}")
        name = f'"{link.name}"'
        if link.nat and link.snat4 is not None:
            # a shared address, the same on either router of a pair -- for what the router
            # forwards: its own packets from its own address (a backup's probes, whose answers
            # must come back to it, not to the master) leave as they are
            nat.append(
                f"oifname {name} meta nfproto ipv4 fib saddr type != local snat ip to {link.snat4} "
                f'comment "nat {link.name}"'
            )
        elif link.nat:
            nat.append(f'oifname {name} meta nfproto ipv4 masquerade comment "nat {link.name}"')
        if link.nat66:
            # a source from this link's own delegated prefixes leaves as it is: it is valid here
            own = ", ".join(str(p) for p in link.delegated)
            foreign = f"ip6 saddr != {{ {own} }} " if own else ""
            nat.append(f'oifname {name} meta nfproto ipv6 {foreign}masquerade comment "nat66 {link.name}"')
        if fw.sticky and link.mark:
            mark = f"{link.mark:#010x}"
            # a new connection belongs to the link it leaves by (known in postrouting),
            # or arrives by (port forwards, inbound services: known in prerouting)
            mark_out.append(
                f"ct state new ct mark and {mask} == 0 oifname {name} "
                f'ct mark set ct mark and {keep} or {mark} comment "mark {link.name}"'
            )
            mark_in.append(
                f"ct state new ct mark and {mask} == 0 iifname {name} "
                f'ct mark set ct mark and {keep} or {mark} comment "mark-in {link.name}"'
            )
            restore.append(
                f"ct mark and {mask} == {mark} meta mark set meta mark and {keep} or {mark} "
                f'comment "restore {link.name}"'
            )
            # the host's own packets only when their socket set no mark: a marked socket
            # (a tunnel's, wg's fwmark) has chosen its route, and its mark must match as set
            restore_local.append(
                f"meta mark 0 ct mark and {mask} == {mark} meta mark set {mark} "
                f'comment "restore-local {link.name}"'
            )
        heard_rules, sent_rules = [], []
        for family in (4, 6):
            near = ", ".join(str(n) for n in link.near if n.version == family)
            if not near:
                continue
            rx, tx = counter_name("rx", family, link.name), counter_name("tx", family, link.name)
            counters += [f"  counter {rx} {{ }}", f"  counter {tx} {{ }}"]
            ip, nfproto = ("ip", "ipv4") if family == 4 else ("ip6", "ipv6")
            heard_rules.append(f"meta nfproto {nfproto} {ip} saddr != {{ {near} }} counter name {rx}")
            sent_rules.append(f"meta nfproto {nfproto} {ip} daddr != {{ {near} }} counter name {tx}")
        if heard_rules:
            spelled = link.name.encode().hex()
            heard.append(f"{name} : jump heard_{spelled}")
            sent.append(f"{name} : jump sent_{spelled}")
            link_chains += [(f"heard_{spelled}", heard_rules), (f"sent_{spelled}", sent_rules)]
    chains = ["\n".join(counters) + "\n"] if counters else []
    if nat:
        chains.append(_chain("nat", "type nat hook postrouting priority srcnat", nat))
    if mark_out:
        chains.append(_chain("mark_in", "type filter hook prerouting priority mangle", mark_in))
        chains.append(_chain("mark_out", "type filter hook postrouting priority mangle", mark_out))
        # packets of a marked connection take its link's fwmark rule: forwarded ones in
        # prerouting, the host's own in output (a route chain: the mark re-routes them)
        chains.append(_chain("restore_fwd", "type filter hook prerouting priority mangle + 1", restore))
        chains.append(_chain("restore_local", "type route hook output priority mangle", restore_local))
    if heard:
        # Evidence of life: only the far side of the ISP answers on an established connection
        # -- not ARP or ND, not the modem's or gateway's own packets (the near side), not
        # ICMP errors (ct state related).  A map from the interface to its link's chain: one
        # hash lookup per packet however many links.
        hook_in, hook_out = (
            "type filter hook prerouting priority filter",
            "type filter hook postrouting priority filter",
        )
        chains.append(
            _chain("evidence_in", hook_in, [f"ct state established iifname vmap {{ {', '.join(heard)} }}"])
        )
        chains.append(_chain("evidence_out", hook_out, [f"oifname vmap {{ {', '.join(sent)} }}"]))
        chains += [_chain(chain, None, rules) for chain, rules in link_chains]
    if fw.mss_clamp:
        clamp = ['tcp flags syn tcp option maxseg size set rt mtu comment "mss clamp"']
        chains.append(_chain("mss", "type filter hook forward priority mangle", clamp))
    body = "\n".join(chains)
    return f"table {c.NFT_FAMILY} {c.NFT_TABLE} {{\n  comment {json.dumps(_digest(body))}\n{body}}}\n"


EVIDENCE_KINDS = ("rx", "tx")


def counter_name(kind: str, family: int, link: str) -> str:
    """An evidence counter's name: nft object names are bare words, so the link's name
    (which may hold - + @) is spelled in hex: rx4_7731 is w1's IPv4 evidence heard."""
    return f"{kind}{family}_{link.encode().hex()}"


@functools.lru_cache(maxsize=1024)
def _evidence_key(name: str) -> tuple[str, int, str] | None:
    """A counter's name -> (link, family, kind), None if it is no evidence counter (read
    every 50 ms: worked out once per name)."""
    kind, _, spelled = name.partition("_")
    if len(kind) != 3 or kind[:2] not in EVIDENCE_KINDS or kind[2] not in "46":
        return None
    try:
        return bytes.fromhex(spelled).decode(), int(kind[2]), kind[:2]
    except ValueError:
        return None


def evidence_of(counters: dict[str, tuple[int, int]]) -> dict[tuple[str, int], tuple[int, int]]:
    """Counters read back (kernel/nft_counters.py) -> (link, family) -> (packets heard from
    beyond on established connections, packets sent beyond)."""
    found: dict[tuple[str, int, str], int] = {}
    for name, (packets, _bytes) in counters.items():
        key = _evidence_key(name)
        if key is not None:
            found[key] = packets
    return {
        (link, family): (found[(link, family, "rx")], found.get((link, family, "tx"), 0))
        for (link, family, kind) in found
        if kind == "rx"
    }


def _chain(name: str, hook: str | None, rules: list[str]) -> str:
    """A chain; hook None: a regular chain, entered by a jump."""
    lines = [f"  chain {name} {{"] + ([f"    {hook}; policy accept;"] if hook else [])
    lines += [f"    {rule}" for rule in rules]
    return "\n".join(lines) + "\n  }\n"


def _digest(body: str) -> str:
    return "wanhooks " + hashlib.sha256(body.encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=8)
def digest_of(text: str) -> str | None:
    """The digest a rendered table carries (its comment, the line after the table's), None
    for no table.  Not parse_table: that reads every line, and a round asks twice."""
    head = text.split("\n", 2)[:2]
    found = _COMMENT.search(head[1]) if len(head) == 2 and head[1].strip().startswith("comment ") else None
    return found.group(1) if found is not None else None


@dataclass(frozen=True)
class TableState:
    digest: str | None  # the table's comment; None: no table
    nat: frozenset[str]  # links masqueraded now (IPv4)
    nat66: frozenset[str] = frozenset()  # links masqueraded now (IPv6)


NO_TABLE = TableState(None, frozenset())


_COMMENT = re.compile(r'comment "((?:[^"\\]|\\.)*)"\s*$')


def parse_table(text: str) -> TableState:
    """`nft list table inet wanhooks` (or render()'s text) -> what wanhooks needs of it.

    The text listing, not `nft -j`: nft 1.0.6's JSON leaves out the table's comment.
    """
    digest: str | None = None
    nat: set[str] = set()
    nat66: set[str] = set()
    for line in text.splitlines():
        found = _COMMENT.search(line)
        if found is None:
            continue
        comment = found.group(1)
        if line.strip().startswith("comment ") and digest is None:
            digest = comment
        elif comment.startswith("nat "):
            nat.add(comment[len("nat ") :])
        elif comment.startswith("nat66 "):
            nat66.add(comment[len("nat66 ") :])
    return TableState(digest, frozenset(nat), frozenset(nat66))


class NftError(Exception):
    pass


def available() -> bool:
    return shutil.which("nft") is not None


def _run(argv: list[str], script: str | None = None) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(  # in /: never a directory whoever ran `wanhooks apply` stood in
            argv, input=script, capture_output=True, text=True, timeout=NFT_TIMEOUT, check=False, cwd="/"
        )
    except subprocess.TimeoutExpired:
        raise NftError(f"{argv[0]} {argv[1]} did not answer in {NFT_TIMEOUT:g} s") from None
    except OSError as exc:
        raise NftError(f"cannot run nft: {exc.strerror or exc}") from None


def read() -> TableState:
    """The table as it is now (no table, or nft missing: NO_TABLE)."""
    if not available():
        return NO_TABLE
    proc = _run(["nft", "list", "table", c.NFT_FAMILY, c.NFT_TABLE])
    if proc.returncode != 0:
        return NO_TABLE  # "No such file or directory": there is none
    return parse_table(proc.stdout)


def write(text: str) -> None:
    """Replace the table with text ("" removes it), atomically."""
    # nft 1.0.6 has no `destroy`: adding first makes the delete safe when the table is absent.
    script = f"add table {c.NFT_FAMILY} {c.NFT_TABLE}\ndelete table {c.NFT_FAMILY} {c.NFT_TABLE}\n" + text
    if not available():
        raise NftError("the nft command is not installed (Debian: apt install nftables)")
    proc = _run(["nft", "-f", "-"], script)
    if proc.returncode != 0:
        raise NftError(proc.stderr.strip() or f"nft exited {proc.returncode}")
