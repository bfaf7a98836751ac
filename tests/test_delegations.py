"""Delegated prefixes learned from the LAN's addresses (plan/delegations.py), the managers'
word on which uplink (sources/networkd_pd.py, sources/prefix_delegation.py), and what the
plan and status make of them.  No root: the kernel's part is test_delegation_lab.py."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import socket
import struct
import time
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import lab_config, main_default, wan

from wanhooks import constants as c
from wanhooks.config.load import ConfigError, parse_config, to_yaml
from wanhooks.kernel import codec
from wanhooks.kernel.wire import Message
from wanhooks.model import (
    Address,
    Delegation,
    DelegationSource,
    MainDefault,
    ManagedDevice,
    Observed,
    ObservedLink,
    Owned,
)
from wanhooks.observe.status import render_status, status_json
from wanhooks.plan.delegations import DelegationBook, ipv6_default_device, lan_prefixes
from wanhooks.plan.planner import plan, resolve_group_kind
from wanhooks.service import kept_prefixes
from wanhooks.sources import nm_mirror
from wanhooks.sources.networkd_pd import NetworkdUplinks, last, parse_unit
from wanhooks.sources.prefix_delegation import LearnedPrefixes

P1 = ipaddress.IPv6Network("2001:db8:100:1::/64")
P2 = ipaddress.IPv6Network("2001:db8:200:1::/64")


def lan(index: int, name: str, *addresses: tuple[str, float | None, float | None]) -> ObservedLink:
    """A LAN interface with (address/len, preferred_until, valid_until) addresses."""
    found = []
    for text, preferred, valid in addresses:
        iface = ipaddress.ip_interface(text)
        found.append(
            Address(6, iface.ip, iface.network.prefixlen, preferred_until=preferred, valid_until=valid)
        )
    return ObservedLink(index=index, name=name, addresses=tuple(found))


def always(wan_name: str, source: str = "delegated_to"):  # type: ignore[no-untyped-def]
    return lambda link: (wan_name, source)


MANAGED = {"w1": 2, "w2": 3, "w3": 4}  # lab_config's links: name -> ifindex


def learn(book: DelegationBook, links, now, uplink=None, config=None, notes=False):  # type: ignore[no-untyped-def]
    """The book's answer when `uplink(link)` says (wan, source) of each LAN link -- said the way
    that source says it: the config's delegated_to:, networkd's file, NetworkManager's shared
    profile and default device.  Its delegations, and its changes (or its notes)."""
    uplink = uplink or always("w1")
    config = config or lab_config()
    told: dict[str, list[str]] = {}
    networkd: dict[str, str] = {}
    shared: list[str] = []
    defaults: list[MainDefault] = []
    for link in links:
        said = uplink(link)
        if said is None:
            continue
        wan_name, source = said
        if source == "delegated_to":
            told.setdefault(wan_name, []).append(link.name)
        elif source == "networkd":
            networkd[link.name] = wan_name
        else:
            shared.append(link.name)
            defaults = [main_default(6, MANAGED.get(wan_name, 99), "fe80::1")]
    config = replace(
        config, links=tuple(replace(e, delegated_to=tuple(told.get(e.interface, ()))) for e in config.links)
    )
    manager = tuple(ManagedDevice(name=name, shared6=True) for name in shared)
    observed = Observed(links=tuple(links), main_defaults=tuple(defaults), manager=manager)
    result = book.learn(observed, config, MANAGED, networkd, now)
    return result.delegations, list(result.notes if notes else result.changes)


def test_only_dynamic_global_lan_addresses_are_a_delegations_evidence() -> None:
    link = lan(
        10, "lan0",
        ("2001:db8:100:1::1/64", 150.0, 160.0),  # numbered from a delegation: dynamic
        ("2001:db8:100:1::2/64", 170.0, 180.0),  # the same /64: its latest deadlines count
        ("fd00:aa::1/64", None, None),  # the admin's, forever
        ("2001:db8:ff::5/128", 10.0, 20.0),  # a host's DHCPv6 lease, not a LAN prefix
    )  # fmt: skip
    assert lan_prefixes(link) == {P1: (170.0, 180.0)}
    tentative = replace(link, addresses=(replace(link.addresses[0], tentative=True),))
    assert lan_prefixes(tentative) == {}


def test_lifetimes_are_not_an_address_identity() -> None:
    """A renewal changes only lifetimes: the same address to the planner and the mirror."""
    a = Address(6, ipaddress.ip_address("2001:db8:100:1::1"), 64, preferred_until=1.0, valid_until=2.0)
    b = replace(a, preferred_until=100.0, valid_until=200.0)
    assert a == b and hash(a) == hash(b) and a.dynamic


def test_learned_moved_kept_for_its_hosts_then_expired() -> None:
    book = DelegationBook()
    found, changes = learn(book, [lan(10, "lan0", ("2001:db8:100:1::1/64", 120.0, 130.0))], 100.0)
    assert found == (Delegation("w1", P1, DelegationSource.DELEGATED_TO, "lan0", 120.0, 130.0, True),)
    assert changes == [
        "delegated prefix 2001:db8:100:1::/64 learned: lan0 is numbered from w1's delegation "
        "(says delegated_to); preferred 20 s, valid 30 s"
    ]
    # a renewal: new deadlines, nothing to tell
    found, changes = learn(book, [lan(10, "lan0", ("2001:db8:100:1::1/64", 140.0, 150.0))], 110.0)
    assert found[0].valid_until == 150.0 and changes == []
    # another manager's word moves it to another uplink
    found, changes = learn(
        book, [lan(10, "lan0", ("2001:db8:100:1::1/64", 140.0, 150.0))], 111.0, always("w2")
    )
    assert found[0].link == "w2" and changes[0].startswith(
        "delegated prefix 2001:db8:100:1::/64 moved from w1"
    )
    # renumbered: the old LAN address goes, the new comes; the old prefix stays while valid
    links = [lan(10, "lan0", ("2001:db8:200:1::1/64", 160.0, 170.0))]
    found, changes = learn(book, links, 120.0, always("w2"))
    assert [(d.prefix, d.present) for d in found] == [(P1, False), (P2, True)]
    assert "delegated prefix 2001:db8:100:1::/64 left lan0: kept on w2 for 30 s" in changes[1]
    assert book.next_expiry() == 150.0
    found, changes = learn(book, links, 149.0, always("w2"))
    assert len(found) == 2 and changes == []
    found, changes = learn(book, links, 150.0, always("w2"))
    assert [d.prefix for d in found] == [P2] and book.next_expiry() is None
    assert changes == ["delegated prefix 2001:db8:100:1::/64 (w2's) expired: its rule is removed"]


def test_a_prefix_back_before_it_expired_is_present_again() -> None:
    book = DelegationBook()
    address = ("2001:db8:100:1::1/64", 120.0, 130.0)
    learn(book, [lan(10, "lan0", address)], 100.0)
    found, _ = learn(book, [lan(10, "lan0")], 101.0)
    assert not found[0].present
    found, changes = learn(book, [lan(10, "lan0", address)], 102.0)
    assert found[0].present and changes[0].startswith("delegated prefix 2001:db8:100:1::/64 learned")


def with_delegated(config, index: int, prefix: str):  # type: ignore[no-untyped-def]
    links = list(config.links)
    links[index] = replace(links[index], delegated=(ipaddress.IPv6Network(prefix),))
    return replace(config, links=tuple(links))


def test_the_config_wins_over_a_learned_prefix_it_overlaps() -> None:
    config = with_delegated(lab_config(), 0, "2001:db8:100::/56")
    links = [lan(10, "lan0", ("2001:db8:100:1::1/64", 1.0, 9.0))]
    book = DelegationBook()
    found, notes = learn(book, links, 0.0, always("w2"), config, notes=True)
    assert found == ()
    assert notes == [
        "delegated prefix 2001:db8:100:1::/64 on lan0 (w2's, says delegated_to) overlaps "
        "the config's 2001:db8:100::/56 (w1's): the config wins"
    ]  # a note while it lasts: the round log says it once, status shows it
    assert learn(book, links, 1.0, always("w2"), config, notes=True) == ((), notes)
    # the same ISP's prefix in the config: nothing to say
    assert learn(DelegationBook(), links, 0.0, always("w1"), config, notes=True) == ((), [])


def test_a_prefix_kept_for_its_hosts_goes_when_the_config_names_it() -> None:
    book = DelegationBook()
    learn(book, [lan(10, "lan0", ("2001:db8:100:1::1/64", 1.0, 90.0))], 0.0, always("w2"))
    found, _ = learn(book, [lan(10, "lan0")], 1.0, always("w2"))
    assert not found[0].present
    found, changes = learn(
        book, [lan(10, "lan0")], 2.0, always("w2"), with_delegated(lab_config(), 0, "2001:db8:100::/56")
    )
    assert found == () and changes == [
        "delegated prefix 2001:db8:100:1::/64 (w2's) dropped: the config names it"
    ]


def test_an_uplink_that_is_no_managed_link_gets_no_prefix() -> None:
    links = [lan(10, "lan0", ("2001:db8:100:1::1/64", 1.0, 9.0))]
    found, notes = learn(DelegationBook(), links, 0.0, always("ppp0", "networkd"), notes=True)
    assert found == () and notes == [
        "lan0 is numbered from ppp0's delegation (says networkd), and ppp0 is no link of the config's now: "
        "its prefixes get no rule"
    ]


def test_two_lan_interfaces_with_one_prefix_from_two_uplinks_keep_the_first() -> None:
    links = [
        lan(10, "lan0", ("2001:db8:100:1::1/64", 1.0, 9.0)),
        lan(11, "lan1", ("2001:db8:100:1::2/64", 1.0, 9.0)),
    ]
    found, lines = learn(
        DelegationBook(),
        links,
        0.0,
        lambda link: ("w1" if link.name == "lan0" else "w2", "networkd"),
        notes=True,
    )
    assert [(d.link, d.lan) for d in found] == [("w1", "lan0")]
    assert "overlaps 2001:db8:100:1::/64 on lan0 (w1's): the one there first stays" in lines[0]


def test_an_overlapping_prefix_learned_later_never_displaces_the_one_there() -> None:
    """lan1 (a later ifindex than lan0) held P first: Q over it, learned later on lan0 from
    another uplink, is the one refused -- round after round, not only in the round it came."""
    book = DelegationBook()
    p_on_lan1 = lan(11, "lan1", ("2001:db8:100:1::1/64", 1.0, 90.0))
    uplinks = lambda link: ("w1" if link.name == "lan1" else "w2", "networkd")  # noqa: E731
    learn(book, [p_on_lan1], 0.0, uplinks)
    q_on_lan0 = lan(10, "lan0", ("2001:db8:100:1::2/64", 1.0, 90.0))
    for now in (1.0, 2.0):
        found, _ = learn(book, [q_on_lan0, p_on_lan1], now, uplinks)
        assert [(d.link, d.lan) for d in found] == [("w1", "lan1")]


def test_a_prefix_still_on_the_lan_keeps_its_uplink_when_its_manager_says_nothing() -> None:
    book = DelegationBook()
    on_lan = [lan(10, "lan0", ("2001:db8:100:1::1/64", 120.0, 130.0))]
    learn(book, on_lan, 100.0, always("w1", "NetworkManager"))
    renewed = [lan(10, "lan0", ("2001:db8:100:1::1/64", 220.0, 230.0))]
    found, changes = learn(book, renewed, 101.0, lambda link: None)  # NM's default went to a VPN
    assert [(d.link, d.present, d.valid_until) for d in found] == [("w1", True, 230.0)] and changes == []
    # the admin's word is not kept once it is withdrawn: the prefix is only kept for its hosts
    book = DelegationBook()
    learn(book, on_lan, 100.0, always("w1"))
    found, changes = learn(book, on_lan, 101.0, lambda link: None)
    assert [d.present for d in found] == [False] and any("left lan0" in line for line in changes)


def test_nobody_saying_which_uplink_learns_nothing() -> None:
    book = DelegationBook()
    links = [lan(10, "lan0", ("2001:db8:100:1::1/64", 1.0, 9.0))]  # a client's SLAAC from upstream, say
    assert learn(book, links, 0.0, lambda link: None) == ((), [])
    assert learn(book, links, 0.0, lambda link: None, notes=True) == ((), [])


def test_a_managed_links_own_addresses_are_never_a_lan_prefix() -> None:
    w1 = replace(
        wan(2, "w1", 1), addresses=(Address(6, ipaddress.ip_address("2001:db8:1::2"), 64, valid_until=9.0),)
    )
    assert learn(DelegationBook(), [w1], 0.0) == ((), [])


def test_the_plan_routes_learned_prefixes_by_their_uplink_with_the_configs() -> None:
    config = lab_config()
    config = replace(
        config,
        links=(
            replace(config.links[0], delegated=(ipaddress.IPv6Network("2001:db8:a::/56"),)),
            *config.links[1:],
        ),
    )
    links = (wan(2, "w1", 1), wan(3, "w2", 2), wan(4, "w3", 3))
    learned = (
        Delegation("w2", P1, DelegationSource.NETWORKD, "lan1", 5.0, 10.0, True),
        Delegation(
            "w2", P2, DelegationSource.NETWORKD, "lan1", 5.0, 10.0, False
        ),  # kept for its hosts: a rule all the same
        Delegation(
            "w9", ipaddress.IPv6Network("2001:db8:300:1::/64"), DelegationSource.NETWORKD, "lan2", 5.0, 10.0
        ),  # no such link
    )
    desired = plan(config, Observed(links=links, delegations=learned))
    rules = {
        (str(r.src), r.table)
        for r in desired.rules
        if r.family == 6 and r.src is not None and r.src.prefixlen < 128
    }
    assert rules == {
        ("2001:db8:a::/56", c.link_table(2)),
        (str(P1), c.link_table(3)),
        (str(P2), c.link_table(3)),
    }
    # with nat66, a learned prefix leaving by its own ISP keeps its address, as a configured one does
    nat66 = plan(replace(config, nat66=True), Observed(links=links, delegations=learned))
    by_name = {link.name: link for link in nat66.firewall.links}
    assert by_name["w2"].delegated == (P1, P2)


def test_status_shows_each_prefix_its_source_and_lifetimes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("wanhooks.observe.status.time.monotonic", lambda: 100.0)
    config = lab_config()
    config = replace(
        config,
        links=(
            replace(config.links[0], delegated=(ipaddress.IPv6Network("2001:db8:a::/56"),)),
            *config.links[1:],
        ),
    )
    observed = Observed(
        links=(wan(2, "w1", 1), wan(3, "w2", 2), wan(4, "w3", 3)),
        delegations=(
            Delegation("w2", P1, DelegationSource.NETWORKD, "lan1", 90.0, 130.0, False),
            Delegation("w2", P2, DelegationSource.NETWORKD, "lan1", 112.0, 125.0, True),
        ),
    )
    desired = plan(config, observed)
    doc = status_json(config, observed, desired, Owned(), resolve_group_kind(config, observed)[0], [])
    by_name = {link["name"]: link["delegated"] for link in doc["links"]}
    assert by_name["w1"] == [
        {"prefix": "2001:db8:a::/56", "source": "config", "lan": None, "preferred_s": None, "valid_s": None,
         "present": True}
    ]  # fmt: skip
    assert [(p["prefix"], p["present"], p["preferred_s"], p["valid_s"]) for p in by_name["w2"]] == [
        (str(P2), True, 12.0, 25.0), (str(P1), False, 0.0, 30.0)
    ]  # fmt: skip
    assert by_name["w3"] == []
    text = render_status(doc)
    assert "IPv6 delegated to w1: 2001:db8:a::/56 (config)" in text
    assert (
        "IPv6 delegated to w2: 2001:db8:200:1::/64 on lan1 (networkd; preferred 12s, valid 25s); "
        "2001:db8:100:1::/64 (networkd; gone from lan1, kept for its hosts 30s)"
    ) in text


# --- the config --------------------------------------------------------------------


def test_delegated_to_in_the_config_and_back() -> None:
    config = parse_config(
        "links:\n  - {interface: w1, delegated_to: [lan1, lan2]}\n  - {interface: w2}\n", "x.yaml"
    )
    assert config.links[0].delegated_to == ("lan1", "lan2")
    again = parse_config(to_yaml(config), "y.yaml")
    assert [replace(e, line=0) for e in again.links] == [replace(e, line=0) for e in config.links]


@pytest.mark.parametrize(
    ("links", "key", "message"),
    [
        ("  - {interface: w1, delegated_to: [lan1]}\n  - {interface: w2, delegated_to: lan1}\n",
         "links[2].delegated_to", "lan1 is already numbered from w1's delegation"),
        ("  - {interface: w1, delegated_to: w2}\n  - {interface: w2}\n",
         "links[1].delegated_to", "w2 is a link of this config, not a LAN interface"),
        ("  - {interface: w1, delegated_to: wl0}\n  - {interface: 'wl*'}\n",
         "links[1].delegated_to", "wl0 is a link of this config (as 'wl*')"),
        ("  - {interface: w1, delegated_to: 'lan*'}\n", "links[1].delegated_to", "lan*"),
        ("  - {interface: 'w*', delegated_to: lan0}\n", "links[1].delegated_to",
         "a glob ('w*') matches many links"),
    ],
)  # fmt: skip
def test_delegated_to_errors_name_the_line_and_key(links: str, key: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(f"links:\n{links}", "x.yaml")
    assert err.value.key == key and message in str(err.value)


# --- networkd's files ------------------------------------------------------------------


def test_unit_files_parse_as_systemd_reads_them() -> None:
    text = (
        "[Match]\nName=lan1\n# a comment\n; another\n[Network]\nDHCPPrefixDelegation=yes\n"
        "[DHCPPrefixDelegation]\nUplinkInterface=wan0\nSubnetId=\\\n# inside a continued value\n  1\n"
        "[dhcpprefixdelegation]\nUplinkInterface=wan9\n[DHCPPrefixDelegation]\nUplinkInterface=wan1\n"
    )
    settings = parse_unit(text)
    assert last(settings, [("Network", "DHCPPrefixDelegation")]) == "yes"
    assert last(settings, [("DHCPPrefixDelegation", "UplinkInterface")]) == "wan1"  # the last one given
    assert last(settings, [("DHCPPrefixDelegation", "SubnetId")]) == "1"
    assert (
        last(settings, [("dhcpprefixdelegation", "UplinkInterface")]) == "wan9"
    )  # another section to systemd
    # an assignment the program refuses is ignored: the one before it stands
    assert last(settings, [("DHCPPrefixDelegation", "UplinkInterface")], lambda v: v != "wan1") == "wan0"


def networkd_files(tmp: Path, links: dict[int, str], dropins: dict[int, list[str]] | None = None) -> Path:
    """networkd's state dir: one state file per ifindex naming a .network file with `text`
    and its drop-ins, written as networkd writes them (':'-joined, C-escaped, quoted)."""
    state = tmp / "links"
    state.mkdir()
    for index, text in links.items():
        unit = tmp / f"{index}.network"
        unit.write_text(text)
        extra = ""
        if dropins and index in dropins:
            names = []
            for n, dropin_text in enumerate(dropins[index]):
                dropin = tmp / f"{index}.network.d:x" / f"{n}.conf"  # a ':' in the path, escaped
                dropin.parent.mkdir(exist_ok=True)
                dropin.write_text(dropin_text)
                names.append(str(dropin).replace(":", "\\x3a"))
            extra = f'NETWORK_FILE_DROPINS="{":".join(names)}"\n'
        (state / str(index)).write_text(
            f"# This is private data. Do not parse.\nNETWORK_FILE={unit}\n{extra}"
        )
    return state


DOWNSTREAM = "[Network]\nDHCPPrefixDelegation=yes\nIPv6SendRA=yes\n"
WAN_DHCP6 = "[Network]\nDHCP=ipv6\n"


def test_networkd_names_the_uplink_by_name_index_or_auto(tmp_path: Path) -> None:
    state = networkd_files(
        tmp_path,
        {
            10: DOWNSTREAM + "[DHCPPrefixDelegation]\nUplinkInterface=w2\n",
            11: DOWNSTREAM + "[DHCPPrefixDelegation]\nUplinkInterface=3\n",
            12: DOWNSTREAM,  # :auto, the default
            13: DOWNSTREAM,
            14: DOWNSTREAM + "[DHCPPrefixDelegation]\nUplinkInterface=:self\n",
            # networkd ignores an assignment it refuses (a "comment" is in the value): the one before stands
            15: DOWNSTREAM + "[DHCPPrefixDelegation]\nUplinkInterface=w2\nUplinkInterface=w1 # no\n",
            16: DOWNSTREAM,
            2: WAN_DHCP6,
            3: "[Network]\nIPv6AcceptRA=no\nAddress=100.64.2.2/24\n",
        },
        # the second drop-in wins; the first would make it no downstream
        dropins={13: ["[Network]\nDHCPPrefixDelegation=no\n"], 16: ["[Network]\nDHCPPrefixDelegation=no\n",
                 "[Network]\nDHCPPrefixDelegation=yes\n[DHCPPrefixDelegation]\nUplinkInterface=w2\n"]},
    )  # fmt: skip
    nd = NetworkdUplinks(state)
    names = {
        2: "w1",
        3: "w2",
        10: "lan1",
        11: "lan2",
        12: "lan3",
        13: "lan4",
        14: "lan5",
        15: "lan6",
        16: "lan7",
    }
    managed = {"w1": 2, "w2": 3}
    nd.begin(names)
    assert nd.uplink(10, "lan1", names, managed) == "w2"
    assert nd.uplink(11, "lan2", names, managed) == "w2"
    assert nd.uplink(12, "lan3", names, managed) == "w1"  # the one link networkd's DHCPv6 runs on
    assert nd.uplink(13, "lan4", names, managed) is None
    assert nd.uplink(14, "lan5", names, managed) is None
    assert nd.uplink(15, "lan6", names, managed) == "w2"
    assert nd.uplink(16, "lan7", names, managed) == "w2"
    assert nd.uplink(99, "lan9", names, managed) is None  # networkd does not manage it


def test_networkd_auto_that_could_be_wrong_is_not_used_and_says_how_to_tell(tmp_path: Path) -> None:
    state = networkd_files(tmp_path, {12: DOWNSTREAM, 2: WAN_DHCP6, 3: WAN_DHCP6, 4: WAN_DHCP6})
    nd = NetworkdUplinks(state)
    names = {12: "lan3", 2: "w1", 3: "w2", 4: "ppp0"}
    nd.begin(names)
    assert nd.uplink(12, "lan3", names, {"w1": 2, "w2": 3}) is None
    assert "set UplinkInterface=" in nd.notes["lan3"] and "ppp0, w1, w2" in nd.notes["lan3"]
    # one DHCPv6 client, and it is no managed link: networkd may have taken its prefix there
    names = {12: "lan3", 4: "ppp0"}
    nd.begin(names)
    assert nd.uplink(12, "lan3", names, {"w1": 2}) is None and "lan3" in nd.notes
    nd.begin({})
    assert nd.notes == {} and nd._cache == {}  # links gone: nothing kept of them


def test_networkd_files_are_read_again_when_they_change(tmp_path: Path) -> None:
    state = networkd_files(tmp_path, {10: DOWNSTREAM + "[DHCPPrefixDelegation]\nUplinkInterface=w1\n"})
    nd = NetworkdUplinks(state)
    assert nd.uplink(10, "lan1", {}, {}) == "w1"
    unit = tmp_path / "10.network"
    unit.write_text(DOWNSTREAM + "[DHCPPrefixDelegation]\nUplinkInterface=w2\n")
    stat = unit.stat()
    os.utime(unit, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert nd.uplink(10, "lan1", {}, {}) == "w2"


def test_networkds_note_is_a_note_of_the_plan_and_one_shot_commands_log_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = networkd_files(tmp_path, {12: DOWNSTREAM, 2: WAN_DHCP6, 3: WAN_DHCP6})
    links = (wan(2, "w1", 1), wan(3, "w2", 2), lan(12, "lan3", ("2001:db8:100:1::1/64", 50.0, 60.0)))
    observed = LearnedPrefixes(NetworkdUplinks(state)).observe(lab_config(), Observed(links=links), now=0.0)
    assert observed.delegations == () and len(observed.delegation_notes) == 1
    assert "set UplinkInterface=" in observed.delegation_notes[0]
    assert observed.delegation_notes[0] in plan(lab_config(), observed).notes  # logged, shown, printed
    told = replace(
        lab_config(), links=(replace(lab_config().links[0], delegated_to=("lan3",)), *lab_config().links[1:])
    )
    with caplog.at_level(logging.DEBUG, logger="wanhooks"):
        quiet = LearnedPrefixes(NetworkdUplinks(state), quiet=True).observe(
            told, Observed(links=links), now=0.0
        )
    assert [d.prefix for d in quiet.delegations] == [P1] and caplog.text == ""


def test_the_configs_word_comes_before_networkds(tmp_path: Path) -> None:
    state = networkd_files(tmp_path, {10: DOWNSTREAM + "[DHCPPrefixDelegation]\nUplinkInterface=w2\n"})
    learned = LearnedPrefixes(NetworkdUplinks(state))
    links = (wan(2, "w1", 1), wan(3, "w2", 2), lan(10, "lan1", ("2001:db8:100:1::1/64", 50.0, 60.0)))
    config = lab_config()
    observed = learned.observe(config, Observed(links=links), now=0.0)
    assert [(d.link, d.source) for d in observed.delegations] == [("w2", "networkd")]
    told = replace(config, links=(replace(config.links[0], delegated_to=("lan1",)), *config.links[1:]))
    observed = learned.observe(told, Observed(links=links), now=1.0)
    assert [(d.link, d.source) for d in observed.delegations] == [("w1", "delegated_to")]


def test_a_managers_changed_answer_does_not_move_a_prefix_still_on_the_lan() -> None:
    """NetworkManager's IPv6 default device moved on: the prefix on the LAN is still the old
    ISP's (the new one's comes as a new prefix); only delegated_to: may move it."""
    book = DelegationBook()
    address = ("2001:db8:100:1::1/64", 120.0, 130.0)
    learn(book, [lan(10, "lan0", address)], 100.0, always("w1", "NetworkManager"))
    found, changes = learn(book, [lan(10, "lan0", address)], 101.0, always("w2", "NetworkManager"))
    assert [(d.link, d.source) for d in found] == [("w1", "NetworkManager")] and changes == []
    # another source's word, or the old uplink gone from the config, moves it
    found, changes = learn(book, [lan(10, "lan0", address)], 102.0, always("w2", "networkd"))
    assert found[0].link == "w2" and changes[0].startswith(
        "delegated prefix 2001:db8:100:1::/64 moved from w1"
    )


def test_networkmanager_shares_the_prefix_of_its_ipv6_default_device() -> None:
    links = (wan(2, "w1", 1), wan(3, "w2", 2), lan(10, "lan1", ("2001:db8:100:1::1/64", 50.0, 60.0)))
    defaults = (main_default(6, 2, "fe80::1", metric=200), main_default(6, 3, "fe80::1", metric=100))
    manager = (ManagedDevice(name="lan1", shared6=True), ManagedDevice(name="w1"), ManagedDevice(name="w2"))
    observed = Observed(links=links, main_defaults=defaults, manager=manager)
    learned = LearnedPrefixes(NetworkdUplinks(Path("/nonexistent")))
    found = learned.observe(lab_config(), observed, now=0.0).delegations
    assert [(d.link, d.source, d.lan) for d in found] == [("w2", "NetworkManager", "lan1")]
    # a profile that is not shared: its addresses are nobody's delegation
    plain = replace(observed, manager=(ManagedDevice(name="lan1"),))
    assert (
        LearnedPrefixes(NetworkdUplinks(Path("/nonexistent"))).observe(lab_config(), plain, 0.0).delegations
        == ()
    )


def test_the_nm_mirror_reads_a_shared_profile() -> None:
    path = "/org/freedesktop/NetworkManager/Devices/7"
    mirror = nm_mirror.update_device(nm_mirror.Mirror(), path, {"Interface": "lan1", "State": 100})
    mirror = nm_mirror.update_applied(mirror, path, {"ipv6": {"method": "shared"}, "ipv4": {}})
    assert [(d.name, d.shared6) for d in mirror.view()] == [("lan1", True)]
    mirror = nm_mirror.update_applied(mirror, path, {"ipv6": {"method": "auto"}})
    assert [d.shared6 for d in mirror.view()] == [False]


def test_address_lifetimes_from_the_kernels_cacheinfo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec.time, "monotonic", lambda: 1000.0)
    raw = ipaddress.IPv6Address("2001:db8:100:1::1").packed

    def address(preferred: int, valid: int) -> Address:
        cacheinfo = struct.pack("=IIII", preferred, valid, 0, 0)
        msg = Message(
            20, (socket.AF_INET6, 64, 0, 0, 7), {codec.IFA_ADDRESS: raw, codec.IFA_CACHEINFO: cacheinfo}
        )
        found = codec.address_from_msg(msg)
        assert found is not None and found[0] == 7
        return found[1]

    dynamic = address(20, 30)
    assert (dynamic.preferred_until, dynamic.valid_until, dynamic.dynamic) == (1020.0, 1030.0, True)
    forever = address(codec.INFINITY_LIFE_TIME, codec.INFINITY_LIFE_TIME)
    assert (forever.preferred_until, forever.valid_until, forever.dynamic) == (None, None, False)
    deprecated_forever = address(0, codec.INFINITY_LIFE_TIME)  # `ip addr change ... preferred_lft 0`
    assert not deprecated_forever.dynamic


def test_networkmanagers_default_device_on_a_link_of_no_config_names_none() -> None:
    links = (wan(2, "w1", 1), wan(3, "w2", 2))
    defaults = (main_default(6, 2, "fe80::1", metric=200), main_default(6, 9, "fe80::1", metric=100))
    observed = Observed(links=links, main_defaults=defaults)
    assert ipv6_default_device(observed, {"w1": 2, "w2": 3}) is None  # the best is if9's, no link of ours
    assert ipv6_default_device(observed, {"w1": 2, "x": 9}) == "x"
    assert ipv6_default_device(Observed(links=links), {"w1": 2}) is None


def test_networkd_settings_as_networkd_reads_them(tmp_path: Path) -> None:
    """An RA-triggered DHCPv6 WAN counts for :auto (networkd accepts RAs unless the file's own
    IPForward= forwards IPv6); a LAN interface does not; a digit that is no ifindex is a name."""
    state = networkd_files(
        tmp_path,
        {
            12: DOWNSTREAM,
            2: "[Network]\nAddress=fd00:1::2/64\n",  # DHCPv6 from the RA's M flag
            3: WAN_DHCP6,
            4: "[Network]\nIPForward=ipv6\n",  # forwards: no RAs, no DHCPv6
            13: DOWNSTREAM + "[DHCPPrefixDelegation]\nUplinkInterface=\u00b2\n",
        },
    )
    nd = NetworkdUplinks(state)
    names = {12: "lan3", 2: "w1", 3: "w2", 4: "w3", 13: "lan4"}
    nd.begin(names)
    assert nd.uplink(12, "lan3", names, {"w1": 2, "w2": 3, "w3": 4}) is None
    assert "w1, w2:" in nd.notes["lan3"]  # not w3, not the LAN interfaces
    assert nd.uplink(13, "lan4", names, {}) == "\u00b2"  # a name (no link of the config: learn() says so)


def test_a_bug_in_the_learning_never_stops_a_round(caplog: pytest.LogCaptureFixture) -> None:
    class Broken(NetworkdUplinks):
        def uplink(self, *args: object, **kwargs: object) -> str | None:
            raise RuntimeError("a bug")

    learned = LearnedPrefixes(Broken(Path("/nonexistent")))
    links = (wan(2, "w1", 1), lan(10, "lan0", ("2001:db8:100:1::1/64", 50.0, 60.0)))
    told = replace(lab_config(), links=(replace(lab_config().links[0], delegated_to=("lan0",)),))
    assert [d.prefix for d in learned.observe(told, Observed(links=links), now=0.0).delegations] == [P1]
    with caplog.at_level(logging.ERROR, logger="wanhooks"):
        found = learned.observe(lab_config(), Observed(links=links), now=1.0).delegations
    assert [d.prefix for d in found] == [P1] and "learning the delegated prefixes failed" in caplog.text


# --- kept across a restart -------------------------------------------------------------


def test_prefixes_kept_for_their_hosts_survive_a_restart(tmp_path: Path) -> None:
    now = time.monotonic()
    kept = Delegation("w1", P1, DelegationSource.NETWORKD, "lan1", now + 5, now + 50, present=False)
    there = Delegation("w2", P2, DelegationSource.NETWORKMANAGER, "lan2", now + 500, now + 900, present=True)
    gone = Delegation(
        "w1",
        ipaddress.IPv6Network("2001:db8:300:1::/64"),
        DelegationSource.NETWORKD,
        "lan1",
        now - 2,
        now - 1,
        False,
    )
    kept_prefixes.save(str(tmp_path), (kept, there, gone))
    assert (tmp_path / kept_prefixes.KEPT_FILE).stat().st_mode & 0o777 == 0o600
    loaded = kept_prefixes.load(str(tmp_path), now)  # `gone` is past its valid lifetime: not loaded
    assert [(d.link, d.prefix, d.source, d.lan, d.present) for d in loaded] == [
        ("w1", P1, "networkd", "lan1", False), ("w2", P2, "NetworkManager", "lan2", True)
    ]  # fmt: skip
    assert (
        abs(loaded[0].valid_until - (now + 50)) < 0.01 and abs(loaded[0].preferred_until - (now + 5)) < 0.01
    )
    # the file is input: what save() never writes is dropped, the rest stands
    doc = json.loads((tmp_path / kept_prefixes.KEPT_FILE).read_text())
    good = doc["delegations"][0]
    doc["delegations"] += [
        {**good, "link": "../etc"}, {**good, "prefix": "::/0"}, {**good, "source": "me"},
        {**good, "valid_until": float("nan")}, {**good, "valid_until": True}, {**good, "prefix": 7}, "x",
    ]  # fmt: skip
    (tmp_path / kept_prefixes.KEPT_FILE).write_text(json.dumps(doc))
    assert [d.prefix for d in kept_prefixes.load(str(tmp_path), now)] == [P1, P2]
    (tmp_path / kept_prefixes.KEPT_FILE).write_text("{not json")
    assert kept_prefixes.load(str(tmp_path), now) == ()


def test_the_daemons_book_is_written_when_it_changes_and_read_at_start(tmp_path: Path) -> None:
    t = time.monotonic()  # save and load count by the real clocks: the test's times are near them
    writes: list[tuple[Delegation, ...]] = []
    learned = LearnedPrefixes(NetworkdUplinks(Path("/nonexistent")), persist=writes.append)
    told = replace(lab_config(), links=(replace(lab_config().links[0], delegated_to=("lan0",)),))
    links = (wan(2, "w1", 1), lan(10, "lan0", ("2001:db8:100:1::1/64", t + 50, t + 60)))
    for now in (t, t + 0.1):  # the same twice: written once, after the round (save)
        learned.observe(told, Observed(links=links), now=now)
        assert [[d.prefix for d in w] for w in writes] == ([] if now == t else [[P1]])
        learned.save()
    assert [[d.prefix for d in w] for w in writes] == [[P1]]
    learned.observe(told, Observed(links=links[:1]), now=t + 0.2)  # it left the LAN: kept, written
    learned.save()
    assert [d.present for d in writes[-1]] == [False]
    kept_prefixes.save(str(tmp_path), writes[-1])
    restarted = LearnedPrefixes(NetworkdUplinks(Path("/nonexistent")))
    restarted.restore(kept_prefixes.load(str(tmp_path)))
    found = restarted.observe(told, Observed(links=links[:1]), now=t + 0.3).delegations
    assert [(d.prefix, d.link, d.present) for d in found] == [(P1, "w1", False)]
    assert restarted.book.next_expiry() == pytest.approx(t + 60, abs=0.05)
    # one still on the LAN keeps the uplink it was learned with, whatever NetworkManager says now
    nm = LearnedPrefixes(NetworkdUplinks(Path("/nonexistent")), persist=writes.append)
    shared = (ManagedDevice(name="lan0", shared6=True),)
    defaults = (main_default(6, 2, "fe80::1"),)
    nm.observe(lab_config(), Observed(links=links, main_defaults=defaults, manager=shared), now=t)
    nm.save()
    kept_prefixes.save(str(tmp_path), writes[-1])
    again = LearnedPrefixes(NetworkdUplinks(Path("/nonexistent")))
    again.restore(kept_prefixes.load(str(tmp_path)))
    moved = (wan(2, "w1", 1), wan(3, "w2", 2), links[1])
    defaults = (main_default(6, 3, "fe80::1"),)  # the default device is w2 now
    found = again.observe(
        lab_config(), Observed(links=moved, main_defaults=defaults, manager=shared), now=t
    ).delegations
    assert [(d.prefix, d.link, d.present) for d in found] == [(P1, "w1", True)]


def test_a_learned_prefix_is_on_link_on_its_lan_interface_behind_mains_routes() -> None:
    lan1 = lan(10, "lan1")
    links = (wan(2, "w1", 1), wan(3, "w2", 2), lan1)
    learned = (
        Delegation("w2", P1, DelegationSource.NETWORKMANAGER, "lan1", 5.0, 10.0, False),  # left lan1: kept
        Delegation(
            "w2", P2, DelegationSource.NETWORKMANAGER, "lan1", 5.0, 10.0, True
        ),  # on lan1: the manager's route
        Delegation(
            "w1",
            ipaddress.IPv6Network("2001:db8:300:1::/64"),
            DelegationSource.NETWORKD,
            "gone0",
            1.0,
            2.0,
            False,
        ),
    )
    desired = plan(lab_config(), Observed(links=links, delegations=learned))
    on_lan = sorted((r.dst, r.oif, r.gateway) for r in desired.routes if r.table == c.TABLE_LAN_PREFIXES)
    assert on_lan == [(P1, 10, None), (P2, 10, None)]  # kept and present; none on a LAN interface gone
    rules = sorted((r.dst, r.table, r.src) for r in desired.rules if r.priority == c.PRIO_LAN_PREFIX)
    assert rules == [(P1, c.TABLE_LAN_PREFIXES, None), (P2, c.TABLE_LAN_PREFIXES, None)]
    assert c.is_owned_table(c.TABLE_LAN_PREFIXES) and c.PRIO_MAIN_SUPPRESS < c.PRIO_LAN_PREFIX < c.PRIO_TUNNEL
