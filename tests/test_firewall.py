"""wanhooks' nftables table: planned (pure), rendered (pure), phased around the routes (fake kernel)."""

from __future__ import annotations

from dataclasses import replace

from fakes import lab_config, lab_kernel

from wanhooks import constants as c
from wanhooks import nft
from wanhooks.model import Firewall, FirewallLink
from wanhooks.plan import plan
from wanhooks.reconcile import reconcile


def test_every_link_with_a_table_gets_a_mark_and_its_rules() -> None:
    desired = plan(lab_config((1, 2, 1)), lab_kernel().observe())
    fw = desired.firewall
    assert fw.sticky and [link.name for link in fw.links] == ["w1", "w2", "w3"]
    assert not any(link.nat for link in fw.links)  # nat: none is the default
    marks = {link.name: link.mark for link in fw.links}
    assert marks == {"w1": 11 << 24, "w2": 12 << 24, "w3": 13 << 24}
    mark_rules = {(r.family, r.fwmark, r.table) for r in desired.rules if r.priority == c.PRIO_MARK}
    assert mark_rules == {(f, i << 24, c.link_table(i)) for f in (4, 6) for i in (11, 12, 13)}
    assert all(r.fwmask == c.STICKY_MARK_MASK for r in desired.rules if r.priority == c.PRIO_MARK)


def test_masquerade_and_no_sticky() -> None:
    config = replace(lab_config((1, 1, 1)), nat="masquerade", sticky=False)
    desired = plan(config, lab_kernel().observe())
    assert all(link.nat and link.mark == 0 for link in desired.firewall.links)
    assert not any(r.priority == c.PRIO_MARK for r in desired.rules)
    text = nft.render(desired.firewall)
    assert 'oifname "w1" masquerade comment "nat w1"' in text and "ct mark" not in text


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
