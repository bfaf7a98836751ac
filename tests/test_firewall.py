"""wanhooks' nftables table: planned (pure), rendered (pure), phased around the routes (fake kernel)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from fakes import lab_config, lab_kernel, wan

from wanhooks import constants as c
from wanhooks.kernel.fake import FakeKernel
from wanhooks.model import Firewall, FirewallLink, KernelFeatures, NexthopGroup, Rule
from wanhooks.plan.planner import plan
from wanhooks.reconcile.diff import reconcile
from wanhooks.reconcile.round import converge
from wanhooks.router import nft


def test_every_link_with_a_table_gets_a_mark_and_its_rules() -> None:
    desired = plan(lab_config((1, 2, 1)), lab_kernel().observe())
    fw = desired.firewall
    assert fw.sticky and [link.name for link in fw.links] == ["w1", "w2", "w3"]
    assert not any(link.nat for link in fw.links)  # nat: none is the default
    marks = {link.name: link.mark for link in fw.links}
    # identity from the name (an HA pair's other router marks the same link alike), never the
    # ifindex (11, 12, 13 here); the table stays the ifindex's, local to this router
    assert marks == {name: c.sticky_mark(c.name_link_id(name)) for name in ("w1", "w2", "w3")}
    assert len(set(marks.values())) == 3 and all(m and not m & ~c.STICKY_MARK_MASK for m in marks.values())
    mark_rules = {(r.family, r.fwmark, r.table) for r in desired.rules if r.priority == c.PRIO_MARK}
    assert mark_rules == {(f, marks[f"w{i - 10}"], c.link_table(i)) for f in (4, 6) for i in (11, 12, 13)}
    assert all(r.fwmask == c.STICKY_MARK_MASK for r in desired.rules if r.priority == c.PRIO_MARK)


def test_masquerade_and_no_sticky() -> None:
    config = replace(lab_config((1, 1, 1)), nat="masquerade", sticky=False)
    desired = plan(config, lab_kernel().observe())
    assert all(link.nat and link.mark == 0 for link in desired.firewall.links)
    assert not any(r.priority == c.PRIO_MARK for r in desired.rules)
    text = nft.render(desired.firewall)
    assert 'oifname "w1" meta nfproto ipv4 masquerade comment "nat w1"' in text and "ct mark" not in text


def test_render_keeps_the_other_bits_of_both_marks() -> None:
    text = nft.render(Firewall(links=(FirewallLink("w1", 0x05000000, True),), sticky=True, mss_clamp=True))
    assert "ct mark set ct mark and 0x00ffffff or 0x05000000" in text
    assert "meta mark set meta mark and 0x00ffffff or 0x05000000" in text
    assert "tcp option maxseg size set rt mtu" in text
    assert nft.render(Firewall()) == ""  # nothing to do: no table at all
    assert nft.digest_of(text) is not None and nft.digest_of(text) != nft.digest_of(
        nft.render(Firewall(links=(FirewallLink("w1", 0x05000000, False),), sticky=True))
    )


def test_parse_table_reads_the_digest_and_nat_set_from_nft_list() -> None:
    listing = (  # as nft 1.0.6 lists a table (tabs, its own spelling of the rules)
        'table inet wanhooks {\n\tcomment "wanhooks 2cf3874e2362fa6e"\n\tchain nat {\n'
        "\t\ttype nat hook postrouting priority srcnat; policy accept;\n"
        '\t\toifname "w1" masquerade comment "nat w1"\n'
        '\t\toifname "w 2" masquerade comment "nat w 2"\n\t}\n'
        '\tchain mark_in {\n\t\tct state new ct mark 0x00000000/8 oifname "w1" '
        'ct mark set ct mark & 0x05ffffff | 0x05000000 comment "mark w1"\n\t}\n}\n'
    )
    assert nft.parse_table(listing) == nft.TableState("wanhooks 2cf3874e2362fa6e", frozenset({"w1", "w 2"}))
    assert nft.parse_table("") == nft.NO_TABLE


def test_a_leaving_links_nat_outlives_its_routes() -> None:
    """Phase 1 keeps the leaving link's NAT; routing changes; phase 2 drops it."""
    kernel = lab_kernel()
    config = replace(lab_config((1, 1, 1)), nat="masquerade")
    reconcile(plan(config, kernel.observe()), kernel, "/nonexistent")
    assert 'comment "nat w3"' in kernel.firewall
    kernel.firewall_writes.clear()
    kernel.links = [link for link in kernel.links if link.name != "w3"]
    report = reconcile(plan(config, kernel.observe()), kernel, "/nonexistent")
    assert report.firewall_changed
    first, last = kernel.firewall_writes
    assert 'comment "nat w3"' in first and 'comment "nat w3"' not in last
    # and nothing is rewritten when nothing changed
    kernel.firewall_writes.clear()
    reconcile(plan(config, kernel.observe()), kernel, "/nonexistent")
    assert kernel.firewall_writes == []


def test_nat66_only_when_opted_in_and_never_for_the_links_own_prefix() -> None:
    pd = ipaddress.IPv6Network("fd00:1:100::/56")
    base = lab_config((1, 1, 1))
    links = tuple(replace(e, delegated=(pd,)) if e.interface == "w1" else e for e in base.links)
    config = replace(base, links=links, nat="masquerade")
    text = nft.render(plan(config, lab_kernel().observe()).firewall)
    assert "ipv6 masquerade" not in text and "masquerade" in text  # IPv6 is not translated unless asked
    text66 = nft.render(plan(replace(config, nat66=True), lab_kernel().observe()).firewall)
    assert 'oifname "w1" meta nfproto ipv6 ip6 saddr != { fd00:1:100::/56 } masquerade' in text66
    assert 'oifname "w2" meta nfproto ipv6 masquerade comment "nat66 w2"' in text66
    listing = text66.replace("  ", "\t")
    assert nft.parse_table(listing).nat66 == frozenset({"w1", "w2", "w3"})


def test_a_delegated_prefix_leaves_by_its_isp_unless_nat66_balances_it() -> None:
    pd = ipaddress.IPv6Network("fd00:1:100::/56")
    base = lab_config((1, 1, 1))
    config = replace(
        base, links=tuple(replace(e, delegated=(pd,)) if e.interface == "w1" else e for e in base.links)
    )
    rule = Rule(6, c.PRIO_LINK_SOURCE, c.link_table(11), src=pd)
    assert rule in plan(config, lab_kernel().observe()).rules
    assert rule not in plan(replace(config, nat66=True), lab_kernel().observe()).rules


def test_a_wan_with_only_a_link_local_address_and_a_delegated_prefix_is_a_link() -> None:
    kernel = lab_kernel()
    w3 = next(link for link in kernel.links if link.name == "w3")
    kernel.set_link(
        replace(w3, addresses=tuple(a for a in w3.addresses if a.family == 4 or a.scope == "link"))
    )
    base = lab_config((1, 1, 1))
    pd = ipaddress.IPv6Network("fd00:3:100::/56")
    plain = plan(base, kernel.observe())
    assert not next(lp for lp in plain.links if lp.name == "w3").eligible[6]  # no address, no PD: not a link
    config = replace(
        base, links=tuple(replace(e, delegated=(pd,)) if e.interface == "w3" else e for e in base.links)
    )
    desired = plan(config, kernel.observe())
    w3plan = next(lp for lp in desired.links if lp.name == "w3")
    assert w3plan.table is not None and w3plan.addresses[6] == ()
    assert not w3plan.eligible[6] and "delegated prefix only" in str(w3plan.reasons[6])  # not balanced
    assert Rule(6, c.PRIO_LINK_SOURCE, c.link_table(13), src=pd) in desired.rules


def test_a_tunnels_own_mark_goes_to_main_ahead_of_every_wanhooks_rule() -> None:
    base = lab_config((1, 1, 1))
    config = replace(
        base, links=tuple(replace(e, tunnel_mark=0xCA6C) if e.interface == "w2" else e for e in base.links)
    )
    rules = plan(config, lab_kernel().observe()).rules
    tunnel = {r for r in rules if r.priority == c.PRIO_TUNNEL}
    assert tunnel == {Rule(f, c.PRIO_TUNNEL, 254, fwmark=0xCA6C, fwmask=0x00FFFFFF) for f in (4, 6)}
    assert min(r.priority for r in rules if r.table != 254) > c.PRIO_TUNNEL


def test_the_hosts_marked_sockets_keep_their_mark() -> None:
    text = nft.render(Firewall(links=(FirewallLink("w1", 0x05000000, False),), sticky=True))
    local = text[text.index("chain restore_local") :]
    assert "meta mark 0 ct mark and 0xff000000 == 0x05000000 meta mark set 0x05000000" in local


def members(kernel: FakeKernel) -> list[int]:
    group = kernel.nexthops[c.group_id(4)][0]
    assert isinstance(group, NexthopGroup)
    return sorted(member for member, _weight in group.members)


def test_when_nft_fails_links_without_nat_leave_the_balance_and_routes_stay() -> None:
    """A router whose NAT could not be written must not send LAN traffic out un-NATed."""
    kernel = lab_kernel()
    config = replace(lab_config((1, 1, 1)), nat="masquerade")
    first = converge(config, kernel, "/nonexistent")
    assert first.report.ok and members(kernel) == [c.link_nexthop_id(4, i) for i in (11, 12, 13)]
    # w4 appears while nft is broken: it gets its table but no share of the balance
    kernel.firewall_error = "nft did not answer in 10 s"
    kernel.set_link(wan(14, "w4", 4))
    config4 = replace(config, links=(*config.links, replace(config.links[0], interface="w4", line=20)))
    second = converge(config4, kernel, "/nonexistent")
    assert not second.report.ok and second.report.firewall_errors
    w4 = next(lp for lp in second.desired.links if lp.name == "w4")
    assert not w4.eligible[4] and "NAT is not in place" in str(w4.reasons[4])
    assert members(kernel) == [c.link_nexthop_id(4, i) for i in (11, 12, 13)]  # as it was


def test_without_nft_sticky_is_off_with_a_note_and_apply_succeeds() -> None:
    kernel = lab_kernel(features=KernelFeatures(nftables=False))
    kernel.firewall_error = "the nft command is not installed"
    result = converge(lab_config((1, 1, 1)), kernel, "/nonexistent")
    assert result.report.ok and kernel.firewall == ""
    assert any("no nft command" in note for note in result.desired.notes)
    assert not any(r.priority == c.PRIO_MARK for r in result.desired.rules)


def test_every_link_counts_its_evidence_of_life_from_beyond_its_near_side() -> None:
    """Per link and family, packets of established connections arriving from beyond the
    link's own prefix (and IPv6's link-local), and packets sent beyond it: named counters."""
    config = replace(lab_config((1, 1, 1)), sticky=False)  # no NAT, no marks: evidence alone
    text = nft.render(plan(config, lab_kernel().observe()).firewall)
    rx4, tx6 = nft.counter_name("rx", 4, "w1"), nft.counter_name("tx", 6, "w1")
    assert f"counter {rx4} {{ }}" in text and f"counter {tx6} {{ }}" in text
    spelled = b"w1".hex()
    assert f'ct state established iifname vmap {{ "w1" : jump heard_{spelled}, "w2"' in text
    assert f'oifname vmap {{ "w1" : jump sent_{spelled},' in text
    heard, sent = chain(text, f"heard_{spelled}"), chain(text, f"sent_{spelled}")
    assert f"meta nfproto ipv4 ip saddr != {{ 100.64.1.0/24 }} counter name {rx4}" in heard
    assert f"meta nfproto ipv6 ip6 daddr != {{ fd00:1::/64, fe80::/10 }} counter name {tx6}" in sent
    no_nft = replace(lab_kernel().observe(), features=KernelFeatures(nftables=False))
    assert nft.render(plan(config, no_nft).firewall) == ""  # no nft: nothing to count with


def test_evidence_counters_read_back_by_link_and_family() -> None:
    counters = {
        nft.counter_name("rx", 4, "wwan0@x"): (120, 9000),
        nft.counter_name("tx", 4, "wwan0@x"): (80, 6000),
        nft.counter_name("rx", 6, "w2"): (5, 400),
        "someone_elses": (1, 1),
        "rx4_zz": (1, 1),  # not hex: not ours
    }
    assert nft.evidence_of(counters) == {("wwan0@x", 4): (120, 80), ("w2", 6): (5, 0)}


def chain(text: str, name: str) -> str:
    """One chain of a rendered table, up to its closing brace."""
    start = text.index(f"chain {name} {{")
    return text[start : text.index("\n  }", start)]


def test_a_firewall_verify_overtaken_by_a_write_trusts_the_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """verify_firewall reads with `nft` outside the kernel worker: a round's write while it
    reads makes its reading stale -- neither "changed by another program" nor kept."""
    from wanhooks.kernel.linux import LinuxKernel

    text = nft.render(Firewall(links=(FirewallLink("w1", 0x100, True, False),), sticky=True))
    other = nft.render(Firewall(links=(FirewallLink("w2", 0x200, True, False),), sticky=True))
    kernel = LinuxKernel()  # only its nftables side is used: nft is replaced below
    try:
        monkeypatch.setattr(nft, "available", lambda: True)
        monkeypatch.setattr(nft, "write", lambda _text: None)
        kernel.write_firewall(text)

        def read_while_a_round_writes() -> nft.TableState:
            kernel.write_firewall(other)  # the worker's round, meanwhile
            return nft.parse_table(text)  # what `nft` saw before it

        monkeypatch.setattr(nft, "read", read_while_a_round_writes)
        assert kernel.verify_firewall()  # stale: no alarm
        assert kernel.read_firewall() == nft.parse_table(other)  # the write's state is kept
        monkeypatch.setattr(nft, "read", lambda: nft.NO_TABLE)  # then someone flushes it
        assert not kernel.verify_firewall()
        assert kernel.read_firewall() == nft.NO_TABLE
    finally:
        kernel.close()


def test_a_links_id_is_its_mark_and_an_id_wins_a_shared_one() -> None:
    """`id:` is the link's identity on both routers of a pair; a name whose derived id is
    another link's gets no mark -- an `id:` first, then by name, as the other router decides."""
    config = lab_config((1, 1, 1))
    w1, w2, w3 = config.links
    clash = c.name_link_id("w3")
    config = replace(config, links=(replace(w1, link_id=7), replace(w2, link_id=clash), w3))
    desired = plan(config, lab_kernel().observe())
    marks = {link.name: link.mark for link in desired.firewall.links}
    assert marks == {"w1": c.sticky_mark(7), "w2": c.sticky_mark(clash), "w3": 0}
    assert any("w3: no sticky connections" in n and "id:" in n for n in desired.notes)


def test_a_shared_address_is_natted_to_and_its_link_waits_for_it() -> None:
    """nat_address: the pair's backup (address not here) keeps the link's table and a source
    rule for the address, carries no balanced traffic, and NATs to the shared address; the
    master (address here) balances over it."""
    from wanhooks.model import Address
    from wanhooks.plan.verdicts import Out

    vip = ipaddress.IPv4Address("100.64.1.10")
    config = lab_config((1, 1, 1))
    w1 = replace(config.links[0], nat_address=vip)
    config = replace(config, links=(w1, *config.links[1:]))
    kernel = lab_kernel()
    backup = plan(config, kernel.observe())
    lp = {link.name: link for link in backup.links}["w1"]
    assert not lp.eligible[4] and lp.table is not None
    reason = lp.reasons[4]
    assert reason is not None and reason.out is Out.SHARED_ADDRESS_ABSENT
    assert "waiting for its shared address 100.64.1.10" in str(reason)
    sources = {r.src for r in backup.rules if r.priority == c.PRIO_LINK_SOURCE and r.table == lp.table}
    assert ipaddress.ip_network("100.64.1.10/32") in sources
    fw1 = {link.name: link for link in backup.firewall.links}["w1"]
    assert fw1.nat and fw1.snat4 == vip  # NAT to the shared address, on either router
    rendered = nft.render(backup.firewall)
    assert 'oifname "w1" meta nfproto ipv4 fib saddr type != local snat ip to 100.64.1.10' in rendered
    assert nft.parse_table(nft.render(backup.firewall)).nat == {"w1"}  # read back as NAT in place
    # keepalived moves the address here: the link is balanced
    link = next(link for link in kernel.links if link.name == "w1")
    kernel.set_link(replace(link, addresses=(*link.addresses, Address(4, vip, 24, secondary=True))))
    master = plan(config, kernel.observe())
    assert {lp.name: lp for lp in master.links}["w1"].eligible[4]
