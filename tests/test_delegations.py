"""Delegated prefixes learned from the LAN's addresses (plan/delegations.py), the managers'
word on which uplink (sources/networkd_pd.py, sources/prefix_delegation.py), and what the
plan and status make of them.  No root: the kernel's part is test_delegation_lab.py."""

from __future__ import annotations

import ipaddress
import logging
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import lab_config, wan

from wanhooks import constants as c
from wanhooks.config.load import ConfigError, parse_config, to_yaml
from wanhooks.model import Address, Delegation, Observed, ObservedLink
from wanhooks.observe.status import render_status, status_json
from wanhooks.plan.delegations import DelegationBook, lan_prefixes
from wanhooks.plan.planner import plan, resolve_group_kind
from wanhooks.sources.networkd_pd import NetworkdUplinks, parse_unit
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


def learn(book: DelegationBook, links, now, uplink=None, config=None):  # type: ignore[no-untyped-def]
    return book.learn(links, config or lab_config(), {"w1", "w2", "w3"}, uplink or always("w1"), now)


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


def test_learned_moved_kept_for_its_hosts_then_expired(caplog: pytest.LogCaptureFixture) -> None:
    book = DelegationBook()
    found, changes = learn(book, [lan(10, "lan0", ("2001:db8:100:1::1/64", 120.0, 130.0))], 100.0)
    assert found == (Delegation("w1", P1, "delegated_to", "lan0", 120.0, 130.0, True),)
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


def test_the_config_wins_over_a_learned_prefix_it_overlaps(caplog: pytest.LogCaptureFixture) -> None:
    config = lab_config()
    config = replace(
        config,
        links=(
            replace(config.links[0], delegated=(ipaddress.IPv6Network("2001:db8:100::/56"),)),
            *config.links[1:],
        ),
    )
    with caplog.at_level(logging.WARNING, logger="wanhooks"):
        found, changes = learn(DelegationBook(), [lan(10, "lan0", ("2001:db8:100:1::1/64", 1.0, 9.0))], 0.0,
                               always("w2"), config)  # fmt: skip
    assert found == () and changes == []
    assert "overlaps the config's delegated w1's 2001:db8:100::/56: the config wins" in caplog.text


def test_nobody_saying_which_uplink_learns_nothing() -> None:
    found, changes = learn(DelegationBook(), [lan(10, "lan0", ("2001:db8:100:1::1/64", 1.0, 9.0))], 0.0,
                           lambda link: None)  # fmt: skip
    assert found == () and changes == []


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
        Delegation("w2", P1, "networkd", "lan1", 5.0, 10.0, True),
        Delegation("w2", P2, "networkd", "lan1", 5.0, 10.0, False),  # kept for its hosts: a rule all the same
        Delegation("w9", ipaddress.IPv6Network("2001:db8:300:1::/64"), "networkd", "lan2"),  # no such link
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
            Delegation("w2", P1, "networkd", "lan1", 90.0, 130.0, False),
            Delegation("w2", P2, "networkd", "lan1", 112.0, 125.0, True),
        ),
    )
    desired = plan(config, observed)
    from wanhooks.model import Owned

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
        "[DHCPPrefixDelegation]\nUplinkInterface=wan0\nSubnetId=\\\n  1\n[dhcpprefixdelegation]\n"
        "UplinkInterface=wan1\n"
    )
    settings = parse_unit(text)
    assert settings[("network", "dhcpprefixdelegation")] == "yes"
    assert settings[("dhcpprefixdelegation", "uplinkinterface")] == "wan1"  # the last one given
    assert settings[("dhcpprefixdelegation", "subnetid")] == "1"


def networkd_files(tmp: Path, links: dict[int, str], dropins: dict[int, str] | None = None) -> Path:
    """networkd's state dir: one state file per ifindex naming a .network file with `text`."""
    state = tmp / "links"
    state.mkdir()
    for index, text in links.items():
        unit = tmp / f"{index}.network"
        unit.write_text(text)
        extra = ""
        if dropins and index in dropins:
            dropin = tmp / f"{index}.conf"
            dropin.write_text(dropins[index])
            extra = f'NETWORK_FILE_DROPINS="{dropin}"\n'
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
            13: "[Network]\nAddress=fd00::1/64\n",  # not a downstream of a delegation
            14: DOWNSTREAM + "[DHCPPrefixDelegation]\nUplinkInterface=:self\n",
            2: WAN_DHCP6,
            3: "[Network]\nIPv6AcceptRA=no\nAddress=100.64.2.2/24\n",
        },
        dropins={13: "[Network]\nDHCPPrefixDelegation=no\n"},
    )
    nd = NetworkdUplinks(state)
    names = {2: "w1", 3: "w2", 10: "lan1", 11: "lan2", 12: "lan3", 13: "lan4", 14: "lan5"}
    managed = {"w1": 2, "w2": 3}
    assert nd.uplink(10, "lan1", names, managed) == "w2"
    assert nd.uplink(11, "lan2", names, managed) == "w2"
    assert nd.uplink(12, "lan3", names, managed) == "w1"  # the one link networkd's DHCPv6 runs on
    assert nd.uplink(13, "lan4", names, managed) is None
    assert nd.uplink(14, "lan5", names, managed) is None
    assert nd.uplink(99, "lan9", names, managed) is None  # networkd does not manage it


def test_networkd_auto_with_two_possible_uplinks_says_how_to_tell(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = networkd_files(tmp_path, {12: DOWNSTREAM, 2: WAN_DHCP6, 3: WAN_DHCP6})
    nd = NetworkdUplinks(state)
    with caplog.at_level(logging.WARNING, logger="wanhooks"):
        assert nd.uplink(12, "lan3", {}, {"w1": 2, "w2": 3}) is None
        assert nd.uplink(12, "lan3", {}, {"w1": 2, "w2": 3}) is None
    assert caplog.text.count("set UplinkInterface=") == 1 and "w1, w2" in caplog.text


def test_networkd_files_are_read_again_when_they_change(tmp_path: Path) -> None:
    state = networkd_files(tmp_path, {10: DOWNSTREAM + "[DHCPPrefixDelegation]\nUplinkInterface=w1\n"})
    nd = NetworkdUplinks(state)
    assert nd.uplink(10, "lan1", {}, {}) == "w1"
    unit = tmp_path / "10.network"
    unit.write_text(DOWNSTREAM + "[DHCPPrefixDelegation]\nUplinkInterface=w2\n")
    stat = unit.stat()
    import os

    os.utime(unit, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert nd.uplink(10, "lan1", {}, {}) == "w2"


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


def test_networkmanager_shares_the_prefix_of_its_ipv6_default_device() -> None:
    from fakes import main_default

    from wanhooks.model import ManagedDevice

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
    from wanhooks.sources import nm_mirror

    path = "/org/freedesktop/NetworkManager/Devices/7"
    mirror = nm_mirror.update_device(nm_mirror.Mirror(), path, {"Interface": "lan1", "State": 100})
    mirror = nm_mirror.update_applied(mirror, path, {"ipv6": {"method": "shared"}, "ipv4": {}})
    assert [(d.name, d.shared6) for d in mirror.view()] == [("lan1", True)]
    mirror = nm_mirror.update_applied(mirror, path, {"ipv6": {"method": "auto"}})
    assert [d.shared6 for d in mirror.view()] == [False]
