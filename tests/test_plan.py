"""plan() is pure: these tests need no root and no kernel."""

from __future__ import annotations

import ast
import ipaddress
from dataclasses import replace
from pathlib import Path

import pytest
from fakes import lab_config, lab_kernel, main_default, tun, wan

from wanhooks import constants as c
from wanhooks.model import (
    Address,
    BalanceMode,
    Config,
    GroupKind,
    KernelFeatures,
    LinkConfig,
    MainDefault,
    ManagedDevice,
    Observed,
    PolicyDefault,
    Rule,
)
from wanhooks.plan.planner import match_entry, plan, resilient_buckets
from wanhooks.plan.verdicts import HealthDown, HealthState, HealthVerdicts


def observed(*links, defaults=(), features=None) -> Observed:  # type: ignore[no-untyped-def]
    return Observed(links=tuple(links), main_defaults=tuple(defaults), features=features or KernelFeatures())


def balance_members(desired, family):  # type: ignore[no-untyped-def]
    group = next(g for g in desired.groups if g.family == family)
    nexthops = {n.id: n for n in desired.nexthops}
    return {nexthops[i].oif: w for i, w in group.members}


def test_plan_imports_no_io() -> None:
    source = Path(__file__).parent.parent / "wanhooks" / "plan" / "planner.py"
    imported = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            imported.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            imported.add(node.module.split(".")[0])
    assert not imported & {"pyroute2", "dbus_next", "asyncio", "time", "socket", "os", "subprocess"}


def test_three_links_weighted_both_families() -> None:
    desired = plan(lab_config((1, 2, 1)), lab_kernel().observe())
    assert balance_members(desired, 4) == {11: 1, 12: 2, 13: 1}
    assert balance_members(desired, 6) == {11: 1, 12: 2, 13: 1}
    group = next(g for g in desired.groups if g.family == 4)
    assert group.resilient and group.buckets >= 128 and group.id == c.NH_GROUP_V4
    balance = {r for r in desired.routes if r.table == c.TABLE_BALANCE}
    assert {(r.family, r.nhid) for r in balance} == {(4, c.NH_GROUP_V4), (6, c.NH_GROUP_V6)}
    for family in (4, 6):
        prios = sorted(r.priority for r in desired.rules if r.family == family)
        assert prios == [c.PRIO_MAIN_SUPPRESS] + [c.PRIO_LINK_SOURCE] * 3 + [c.PRIO_MARK] * 3 + [
            c.PRIO_BALANCE
        ]
    assert (
        Rule(4, c.PRIO_LINK_SOURCE, c.link_table(12), ipaddress.ip_network("100.64.2.2/32")) in desired.rules
    )
    assert (
        Rule(6, c.PRIO_LINK_SOURCE, c.link_table(12), ipaddress.ip_network("fd00:2::2/128")) in desired.rules
    )


def test_tables_never_depend_on_config_order() -> None:
    kernel = lab_kernel()
    forward = plan(lab_config((1, 2, 1)), kernel.observe())
    cfg = lab_config((1, 2, 1))
    backward = plan(replace(cfg, links=tuple(reversed(cfg.links))), kernel.observe())
    assert forward.routes == backward.routes and forward.rules == backward.rules
    assert forward.groups == backward.groups


@pytest.mark.parametrize(
    ("link", "reason"),
    [
        (wan(12, "w2", 2, up=False), "administratively down"),
        (wan(12, "w2", 2, carrier=False), "no carrier"),
        (replace(wan(12, "w2", 2), addresses=()), "no IPv4 address"),
    ],
)
def test_ineligible_links_are_left_out_with_a_reason(link, reason) -> None:  # type: ignore[no-untyped-def]
    kernel = lab_kernel()
    kernel.set_link(link)
    desired = plan(lab_config(), kernel.observe())
    assert balance_members(desired, 4) == {11: 1, 13: 1}
    w2 = next(lp for lp in desired.links if lp.name == "w2")
    assert str(w2.reasons[4]) == reason and not w2.eligible[4]


def test_failed_link_keeps_table_and_source_rule_when_carrier_is_lost() -> None:
    kernel = lab_kernel()
    kernel.set_link(wan(12, "w2", 2, carrier=False))
    desired = plan(lab_config(), kernel.observe())
    assert any(r.table == c.link_table(12) for r in desired.routes)
    assert any(r.table == c.link_table(12) for r in desired.rules)


def test_gateway_learned_from_main_defaults_ipv4_and_ipv6() -> None:
    kernel = lab_kernel()
    cfg = Config(links=(LinkConfig("w1"), LinkConfig("w2")))
    kernel.main_defaults = [
        main_default(4, 11, "100.64.1.1", 101),
        main_default(6, 11, "fe80::1", 101),
        main_default(4, 12, "100.64.2.1", 102),
    ]
    desired = plan(cfg, kernel.observe())
    w1 = next(lp for lp in desired.links if lp.name == "w1")
    w2 = next(lp for lp in desired.links if lp.name == "w2")
    assert str(w1.gateways[4]) == "100.64.1.1" and str(w1.gateways[6]) == "fe80::1"
    assert w2.gateways[6] is None and "no IPv6 gateway" in str(w2.reasons[6])
    assert balance_members(desired, 4) == {11: 1, 12: 1}
    assert balance_members(desired, 6) == {11: 1}


def test_no_eligible_link_means_no_balance_route() -> None:
    kernel = lab_kernel(2)
    kernel.set_link(wan(11, "w1", 1, carrier=False))
    kernel.set_link(wan(12, "w2", 2, up=False))
    desired = plan(lab_config((1, 1)), kernel.observe())
    assert not desired.groups and not desired.nexthops
    assert not any(r.table == c.TABLE_BALANCE for r in desired.routes)
    assert not any(r.priority == c.PRIO_BALANCE for r in desired.rules)


def test_vpn_default_in_main_withholds_the_balance_rule() -> None:
    kernel = lab_kernel()
    kernel.set_link(tun(50, "tun0", "100.80.0.2"))
    kernel.main_defaults = [main_default(4, 50, None, 0)]
    desired = plan(lab_config(), kernel.observe())
    assert not any(r.priority == c.PRIO_BALANCE and r.family == 4 for r in desired.rules)
    assert any(r.priority == c.PRIO_BALANCE and r.family == 6 for r in desired.rules)
    assert any("tun0" in n for n in desired.notes)
    assert balance_members(desired, 4)  # the group stays ready for when the VPN goes


def test_point_to_point_link_gets_a_device_only_nexthop() -> None:
    kernel = lab_kernel(1)
    kernel.set_link(tun(50, "ppp0", "100.80.0.2"))
    cfg = Config(links=(LinkConfig("w1", gateway4=ipaddress.IPv4Address("100.64.1.1")), LinkConfig("ppp*")))
    desired = plan(cfg, kernel.observe())
    nh = next(n for n in desired.nexthops if n.oif == 50)
    assert nh.gateway is None and nh.family == 4
    assert balance_members(desired, 4) == {11: 1, 50: 1}


def test_duplicate_address_excludes_the_later_link() -> None:
    kernel = lab_kernel(2)
    clone = replace(wan(12, "w2", 2), addresses=(Address(4, ipaddress.ip_address("100.64.1.2"), 24),))
    kernel.set_link(clone)
    desired = plan(lab_config((1, 1)), kernel.observe())
    w2 = next(lp for lp in desired.links if lp.name == "w2")
    assert "also on w1" in str(w2.reasons[4])
    assert balance_members(desired, 4) == {11: 1}
    assert not any(r.table == c.link_table(12) and r.family == 4 for r in desired.rules)


def test_exact_name_beats_glob() -> None:
    cfg = Config(links=(LinkConfig("w*", weight=3), LinkConfig("w2", weight=7)))
    assert match_entry(cfg, "w2") is cfg.links[1]
    assert match_entry(cfg, "w9") is cfg.links[0]
    assert match_entry(cfg, "eth0") is None


@pytest.mark.parametrize(
    ("features", "wanted", "resilient", "legacy"),
    [
        (KernelFeatures(), GroupKind.AUTO, True, False),
        (KernelFeatures(resilient_groups=False), GroupKind.AUTO, False, False),
        (KernelFeatures(nexthop_objects=False, resilient_groups=False), GroupKind.AUTO, False, True),
        (KernelFeatures(), GroupKind.LEGACY, False, True),
        (KernelFeatures(), GroupKind.HASH_THRESHOLD, False, False),
    ],
)
def test_group_kind(features, wanted, resilient, legacy) -> None:  # type: ignore[no-untyped-def]
    kernel = lab_kernel()
    kernel.features = features
    desired = plan(lab_config(group=wanted), kernel.observe())
    balance = next(r for r in desired.routes if r.table == c.TABLE_BALANCE and r.family == 4)
    if legacy:
        assert not desired.groups and len(balance.multipath) == 3
        assert sorted(h.weight for h in balance.multipath) == [1, 1, 2]
    else:
        assert next(g for g in desired.groups if g.family == 4).resilient is resilient


@pytest.mark.parametrize(
    ("sticky", "given", "idle", "unbalanced"),
    [
        (True, None, 1, 1),  # marks keep established connections: rebalance at once
        (False, None, 5, 30),  # a moved bucket moves its connections: force only after 30 s
        (True, c.ResilientTimers(5, 0), 5, 0),  # the config's own timers win
    ],
)
def test_resilient_timers_follow_sticky_unless_given(sticky, given, idle, unbalanced) -> None:  # type: ignore[no-untyped-def]
    desired = plan(replace(lab_config(), sticky=sticky, resilient_timers=given), lab_kernel().observe())
    for group in desired.groups:
        assert (group.idle_timer, group.unbalanced_timer) == (idle, unbalanced)


@pytest.mark.parametrize(
    ("mode", "fields"),
    [(BalanceMode.PER_CONNECTION, "55"), (BalanceMode.PER_DESTINATION, "3"), (BalanceMode.PER_CLIENT, "1")],
)
def test_hash_policy_sysctls(mode, fields) -> None:  # type: ignore[no-untyped-def]
    desired = plan(lab_config(balance=mode), lab_kernel().observe())
    values = {s.path: s.value for s in desired.sysctls}
    for proto in ("ipv4", "ipv6"):
        assert values[f"net/{proto}/fib_multipath_hash_policy"] == "3"
        assert values[f"net/{proto}/fib_multipath_hash_fields"] == fields
    assert values["net/ipv4/conf/w1/rp_filter"] == "2"
    assert values["net/ipv6/conf/w3/ignore_routes_with_linkdown"] == "1"


def test_hash_policy_fallback_without_hash_fields() -> None:
    kernel = lab_kernel()
    kernel.features = KernelFeatures(hash_fields=False)
    values = {s.path: s.value for s in plan(lab_config(), kernel.observe()).sysctls}
    assert values["net/ipv4/fib_multipath_hash_policy"] == "1"
    assert "net/ipv4/fib_multipath_hash_fields" not in values


def test_buckets_depend_on_config_not_on_which_links_are_up() -> None:
    cfg = lab_config((1, 2, 1))
    kernel = lab_kernel()
    before = next(g for g in plan(cfg, kernel.observe()).groups if g.family == 4)
    kernel.set_link(wan(12, "w2", 2, carrier=False))
    after = next(g for g in plan(cfg, kernel.observe()).groups if g.family == 4)
    assert before.buckets == after.buckets == resilient_buckets(cfg)


def test_configured_gateway_outside_the_prefix_is_onlink() -> None:
    kernel = lab_kernel(1)
    cfg = Config(links=(LinkConfig("w1", gateway4=ipaddress.IPv4Address("198.51.100.1")),))
    nh = next(iter(plan(cfg, kernel.observe()).nexthops))
    assert nh.onlink and str(nh.gateway) == "198.51.100.1"


def test_dormant_link_is_not_eligible() -> None:
    kernel = lab_kernel()
    kernel.set_link(replace(wan(12, "w2", 2), oper_state="dormant"))
    desired = plan(lab_config(), kernel.observe())
    w2 = next(lp for lp in desired.links if lp.name == "w2")
    assert str(w2.reasons[4]) == "not operational (dormant)"
    assert balance_members(desired, 4) == {11: 1, 13: 1}


def test_a_dead_default_on_an_unmanaged_link_is_not_a_vpn() -> None:
    kernel = lab_kernel()
    kernel.set_link(wan(20, "mgmt0", 9, carrier=False))
    kernel.main_defaults = [replace(main_default(4, 20, "100.64.9.1", 900), dead=True)]
    desired = plan(lab_config(), kernel.observe())
    assert any(r.priority == c.PRIO_BALANCE and r.family == 4 for r in desired.rules)
    assert not desired.notes


def test_a_blackhole_default_in_main_is_reported() -> None:
    kernel = lab_kernel()
    kernel.main_defaults = [MainDefault(family=4, oif=0, gateway=None, metric=5000, kind="blackhole")]
    desired = plan(lab_config(), kernel.observe())
    assert any("blackhole" in n and "IPv4" in n for n in desired.notes)


def test_ipv6_gateway_outside_the_links_prefixes_is_onlink() -> None:
    kernel = lab_kernel(1)
    cfg = Config(links=(LinkConfig("w1", gateway6=ipaddress.IPv6Address("fd00:99::1")),))
    nh = next(n for n in plan(cfg, kernel.observe()).nexthops if n.family == 6)
    assert nh.onlink
    cfg = Config(links=(LinkConfig("w1", gateway6=ipaddress.IPv6Address("fe80::1")),))
    nh = next(n for n in plan(cfg, kernel.observe()).nexthops if n.family == 6)
    assert not nh.onlink


def test_legacy_ipv6_leaves_point_to_point_links_out_of_the_multipath_route() -> None:
    kernel = lab_kernel(1)
    tun6 = replace(
        tun(50, "tun0", "100.80.0.2"),
        addresses=(Address(6, ipaddress.ip_address("fd00:80::2"), 128),),
    )
    kernel.set_link(tun6)
    cfg = Config(
        links=(LinkConfig("w1", gateway6=ipaddress.IPv6Address("fe80::1")), LinkConfig("tun*")),
        group=GroupKind.LEGACY,
    )
    desired = plan(cfg, kernel.observe())
    route = next(r for r in desired.routes if r.table == c.TABLE_BALANCE and r.family == 6)
    assert route.oif == 11 and not route.multipath
    t = next(lp for lp in desired.links if lp.name == "tun0")
    assert "point-to-point" in str(t.reasons[6])


def test_a_wg_quick_style_policy_tunnel_withholds_balancing() -> None:
    kernel = lab_kernel()
    observed = replace(
        kernel.observe(), policy_defaults=(PolicyDefault(family=4, priority=32765, table=51820),)
    )
    desired = plan(lab_config(), observed)
    assert not any(r.priority == c.PRIO_BALANCE and r.family == 4 for r in desired.rules)
    assert any(r.priority == c.PRIO_BALANCE and r.family == 6 for r in desired.rules)
    assert any("51820" in n for n in desired.notes)


def nm_device(name: str, **kw: str) -> ManagedDevice:
    return ManagedDevice(name=name, **kw)  # type: ignore[arg-type]


def test_a_tier_2_link_stands_by_while_a_tier_1_link_is_up() -> None:
    kernel = lab_kernel()
    cfg = lab_config()
    cfg = replace(cfg, links=(cfg.links[0], cfg.links[1], replace(cfg.links[2], tier=2)))
    desired = plan(cfg, kernel.observe())
    assert balance_members(desired, 4) == {11: 1, 12: 2}
    w3 = next(lp for lp in desired.links if lp.name == "w3")
    assert w3.tier == 2 and str(w3.reasons[4]).startswith("standby (tier 2)")
    assert any(r.table == c.link_table(13) for r in desired.rules)  # it still answers
    kernel.set_link(wan(11, "w1", 1, carrier=False))
    kernel.set_link(wan(12, "w2", 2, carrier=False))
    assert balance_members(plan(cfg, kernel.observe()), 4) == {13: 1}  # nothing else: it carries all


def test_networkmanager_metered_implies_tier_2() -> None:
    kernel = lab_kernel()
    observed = replace(kernel.observe(), manager=(nm_device("w3", metered="yes"),))
    assert balance_members(plan(lab_config(), observed), 4) == {11: 1, 12: 2}
    no_metered = replace(lab_config(), metered_tier=0)
    assert balance_members(plan(no_metered, observed), 4) == {11: 1, 12: 2, 13: 1}


def test_a_captive_portal_carries_no_balanced_traffic_until_full() -> None:
    kernel = lab_kernel()
    portal = replace(kernel.observe(), manager=(nm_device("w2", connectivity4="portal"),))
    desired = plan(lab_config(), portal)
    assert balance_members(desired, 4) == {11: 1, 13: 1}
    w2 = next(lp for lp in desired.links if lp.name == "w2")
    assert "captive portal" in str(w2.reasons[4])
    assert any(r.table == c.link_table(12) for r in desired.rules)  # the login page can go through it
    full = replace(kernel.observe(), manager=(nm_device("w2", connectivity4="full"),))
    assert balance_members(plan(lab_config(), full), 4) == {11: 1, 12: 2, 13: 1}
    relaxed = replace(lab_config(), require_full_connectivity=False)
    assert balance_members(plan(relaxed, portal), 4) == {11: 1, 12: 2, 13: 1}


def test_limited_counts_only_when_networkmanager_really_checks() -> None:
    kernel = lab_kernel()
    unchecked = replace(kernel.observe(), manager=(nm_device("w2", connectivity4="limited"),))
    assert balance_members(plan(lab_config(), unchecked), 4) == {11: 1, 12: 2, 13: 1}
    checked = replace(
        kernel.observe(),
        manager=(ManagedDevice(name="w2", connectivity4="limited", connectivity_checked=True),),
    )
    assert balance_members(plan(lab_config(), checked), 4) == {11: 1, 13: 1}


def test_health_verdicts_take_links_out_but_not_all_of_them() -> None:
    kernel = lab_kernel()
    one = HealthVerdicts(
        down={("w2", 4): HealthDown(HealthState.DOWN, "no reply from 203.0.113.10 for 0.7 s")}
    )
    desired = plan(lab_config(), kernel.observe(), verdicts=one)
    assert balance_members(desired, 4) == {11: 1, 13: 1} and balance_members(desired, 6) == {
        11: 1,
        12: 2,
        13: 1,
    }
    every = HealthVerdicts(down={(f"w{i}", 4): HealthDown(HealthState.DOWN) for i in (1, 2, 3)})
    desired = plan(lab_config(), kernel.observe(), verdicts=every)
    assert balance_members(desired, 4) == {11: 1, 12: 2, 13: 1}
    assert any("likelier fault" in n for n in desired.notes)


def test_probes_wanted_per_link_and_family_with_the_budget_on_standby_links() -> None:
    from wanhooks.model import HealthConfig
    from wanhooks.plan.planner import probes_wanted

    kernel = lab_kernel()
    targets = (ipaddress.ip_address("203.0.113.10"), ipaddress.ip_address("fd00:ffff::10"))
    cfg = replace(lab_config(), health=HealthConfig(targets=targets))
    cfg = replace(cfg, links=(*cfg.links[:2], replace(cfg.links[2], tier=2)))
    keys = {(k.link, k.family): k for k in probes_wanted(cfg, kernel.observe())}
    assert set(keys) == {(f"w{i}", f) for i in (1, 2, 3) for f in (4, 6)}
    assert str(keys[("w1", 4)].source) == "100.64.1.2" and keys[("w1", 4)].params.interval == 0.1
    # a standby link keeps to its budget: its heartbeat stretches where it must (IPv6's
    # bigger echoes), a steady one's interval
    assert keys[("w3", 4)].params.budget_mb_per_day == 5 and keys[("w1", 4)].params.budget_mb_per_day == 0
    assert keys[("w3", 6)].params.heartbeat > keys[("w1", 6)].params.heartbeat == 2
    steady = replace(cfg, health=HealthConfig(targets=targets, heartbeat=0))
    keys = {(k.link, k.family): k for k in probes_wanted(steady, kernel.observe())}
    assert keys[("w3", 4)].params.interval > 1 and keys[("w1", 4)].params.interval == 0.1
    off = replace(cfg, health=HealthConfig(targets=targets, enabled=False))
    assert probes_wanted(off, kernel.observe()) == []


def test_an_unlisted_ethernet_uplink_with_a_default_is_not_a_vpn() -> None:
    """Only a tunnel's default in main means a full-tunnel VPN; another uplink the config
    does not list is left alone, and balancing goes on (it is main's fallback)."""
    kernel = lab_kernel()
    kernel.set_link(wan(20, "usb0", 9))
    kernel.main_defaults = [main_default(4, 20, "100.64.9.1", 600)]
    desired = plan(lab_config(), kernel.observe())
    assert any(r.priority == c.PRIO_BALANCE and r.family == 4 for r in desired.rules)
    assert any("usb0 holds a default route in main but is not in the config" in n for n in desired.notes)


def test_a_tap_vpn_with_an_ethernet_address_is_still_a_vpn() -> None:
    kernel = lab_kernel()
    kernel.set_link(replace(wan(21, "tap0", 9), kind="tun"))  # OpenVPN dev tap: kind tun, a MAC
    kernel.main_defaults = [main_default(4, 21, "100.64.9.1", 0)]
    desired = plan(lab_config(), kernel.observe())
    assert not any(r.priority == c.PRIO_BALANCE and r.family == 4 for r in desired.rules)
    assert any("tap0" in n and "full-tunnel" in n for n in desired.notes)


def test_auto_weights_follow_the_applied_capacities_with_a_fixed_bucket_count() -> None:
    config = lab_config()
    config = replace(config, links=tuple(replace(e, auto_weight=True) for e in config.links))
    measured = {"w1": 5e6, "w2": 20e6, "w3": 10e6}
    desired = plan(config, lab_kernel().observe(), capacities=measured)
    assert balance_members(desired, 4) == {11: 64, 12: 256, 13: 128}
    assert {g.buckets for g in desired.groups} == {c.RES_BUCKETS_AUTO} == {resilient_buckets(config)}
    assert [lp.weight for lp in desired.links] == [64, 256, 128] and all(
        lp.auto_weight for lp in desired.links
    )
    # nothing measured (a one-shot apply, or before the first measurement): all alike
    assert set(balance_members(plan(config, lab_kernel().observe()), 4).values()) == {256}


def test_an_auto_link_without_probes_gets_a_note() -> None:
    from wanhooks.model import HealthConfig

    config = lab_config()
    probed = HealthConfig(targets=(ipaddress.ip_address("203.0.113.10"),))
    links = (replace(config.links[0], auto_weight=True), *config.links[1:])
    notes = plan(replace(config, links=links), lab_kernel().observe()).notes
    assert [n for n in notes if "weight: auto" in n] == [
        "w1: weight: auto without health probes cannot tell when the link is full: it is weighed by "
        "what it carried, at least the measured auto links' mean (give it health targets, or a weight)"
    ]
    quiet = plan(replace(config, links=links, health=probed), lab_kernel().observe()).notes
    assert not [n for n in quiet if "weight: auto" in n]
