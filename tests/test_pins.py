"""Policy pins: parsed with located errors, planned into rules (pure, no root)."""

from __future__ import annotations

import ipaddress
from dataclasses import replace

import pytest
from fakes import lab_config, lab_kernel

from wanhooks import constants as c
from wanhooks.config.load import ConfigError, parse_config, to_yaml
from wanhooks.model import Config, Overrides, Pin, Rule
from wanhooks.plan.planner import connections_to_end, plan
from wanhooks.plan.verdicts import HealthDown, HealthState, HealthVerdicts
from wanhooks.reconcile.diff import reconcile

HEAD = "links:\n  - {interface: w1, gateway: 100.64.1.1}\n  - {interface: w2, gateway: 100.64.2.1}\npins:\n"

DOWN = HealthDown(HealthState.DOWN, "lost")


def net(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(text)


def pin_rules(config: Config, **kw: object) -> list[Rule]:
    desired = plan(config, lab_kernel().observe(), **kw)  # type: ignore[arg-type]
    return sorted(
        (r for r in desired.rules if c.PRIO_PIN_FIRST <= r.priority < c.PRIO_BALANCE),
        key=lambda r: (r.priority, r.family, str(r.src), str(r.dst)),
    )


def test_pins_parse_with_every_selector() -> None:
    config = parse_config(
        HEAD
        + "  - {to: [198.51.100.0/24, 'fd00:ffff::/64'], link: w2}\n"
        + "  - {from: 100.64.100.3, link: 'w*', when_down: fail}\n"
        + "  - {proto: udp, port: 5060-5061, tier: 2}\n",
        "p.yaml",
    )
    first, second, third = config.pins
    assert first == Pin(line=5, to=(net("198.51.100.0/24"), net("fd00:ffff::/64")), link="w2")
    assert second.sources == (net("100.64.100.3/32"),) and second.fail_closed and second.link == "w*"
    assert (third.proto, third.ports, third.tier) == (17, (5060, 5061), 2)


@pytest.mark.parametrize(
    ("text", "key", "words"),
    [
        ("  - {to: 198.51.100.0/24}\n", "pins[1]", "exactly one of link"),
        ("  - {to: 198.51.100.0/24, link: w1, tier: 2}\n", "pins[1]", "exactly one of link"),
        ("  - {link: w1}\n", "pins[1]", "must select something"),
        ("  - {to: 198.51.100.1/24, link: w1}\n", "pins[1].to", "did you mean 198.51.100.0/24"),
        ("  - {proto: gre, link: w1}\n", "pins[1].proto", "unknown protocol"),
        ("  - {proto: icmp, port: 80, link: w1}\n", "pins[1].port", "needs proto: tcp, udp or sctp"),
        ("  - {proto: tcp, port: 70000, link: w1}\n", "pins[1].port", "ports are 1-65535"),
        ("  - {to: 198.51.100.0/24, link: w1, when_down: drop}\n", "pins[1].when_down", "fallback"),
        ("  - {to: 198.51.100.0/24, from: 'fd00:aa::/64', link: w1}\n", "pins[1]", "no address family"),
        ("  - {to: 198.51.100.0/24, lnk: w1}\n", "pins[1].lnk", "did you mean 'link'"),
        ("  - {to: 198.51.100.0/24, link: eth9}\n", "pins[1].link", "none of the links (w1, w2)"),
        ("  - to: 198.51.100.0/24\n    link: w1\n  - {to: x, link: w1}\n", "pins[2].to", "not an address"),
    ],
)
def test_bad_pins_name_the_line_and_key(text: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(HEAD + text, "p.yaml")
    assert caught.value.key == key and words in caught.value.message
    assert caught.value.line >= 5


@pytest.mark.parametrize(
    ("links", "key", "words"),
    [
        ("  - {interface: w1, delegated: '::/0'}\n", "links[1].delegated", "a /16 to a /64"),
        ("  - {interface: w1, delegated: 'fd00:1::/72'}\n", "links[1].delegated", "a /16 to a /64"),
        ("  - {interface: w1, delegated: 100.64.0.0/16}\n", "links[1].delegated", "is IPv4"),
        (
            "  - {interface: w1, delegated: 'fd00:1::/32'}\n"
            "  - {interface: w2, delegated: 'fd00:1:2::/56'}\n",
            "links[2].delegated",
            "overlaps fd00:1::/32 (w1)",
        ),
        ("  - {interface: w1, tunnel_mark: 0x1000000}\n", "links[1].tunnel_mark", "top byte"),
        ("  - {interface: w1, tunnel_mark: mark}\n", "links[1].tunnel_mark", "such as 0xca6c"),
    ],
)
def test_bad_delegated_prefixes_and_tunnel_marks_are_located(links: str, key: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("links:\n" + links, "p.yaml")
    assert caught.value.key == key and words in caught.value.message


def test_a_link_pin_points_at_its_links_table_in_config_order() -> None:
    config = replace(
        lab_config((1, 1, 1)),
        pins=(
            Pin(to=(net("198.51.100.0/24"),), link="w2"),
            Pin(
                sources=(net("100.64.100.3/32"), net("fd00:aa::3/128")), proto=6, ports=(443, 443), link="w3"
            ),
        ),
    )
    rules = pin_rules(config)
    assert rules == [
        Rule(4, c.PRIO_PIN_FIRST, c.link_table(12), dst=net("198.51.100.0/24")),
        Rule(
            4,
            c.PRIO_PIN_FIRST + 1,
            c.link_table(13),
            src=net("100.64.100.3/32"),
            ip_proto=6,
            dport=(443, 443),
        ),
        Rule(
            6, c.PRIO_PIN_FIRST + 1, c.link_table(13), src=net("fd00:aa::3/128"), ip_proto=6, dport=(443, 443)
        ),
    ]


def test_a_pin_falls_back_or_fails_closed_when_its_link_is_down() -> None:
    pin = Pin(to=(net("198.51.100.0/24"),), link="w2")
    down = HealthVerdicts(down={("w2", 4): HealthDown(HealthState.DOWN, "3 probes lost")})
    fallback = replace(lab_config((1, 1, 1)), pins=(pin,))
    assert pin_rules(fallback, verdicts=down) == []  # no rule: the balance takes it
    desired = plan(fallback, lab_kernel().observe(), verdicts=down)
    assert any("pin 1" in note and "takes the balance" in note for note in desired.notes)
    closed = replace(fallback, pins=(replace(pin, fail_closed=True),))
    assert pin_rules(closed, verdicts=down) == [
        Rule(4, c.PRIO_PIN_FIRST, 0, dst=net("198.51.100.0/24"), unreachable=True)
    ]
    drained = pin_rules(closed, overrides=Overrides(draining=frozenset({"w2"})))
    assert [r.unreachable for r in drained] == [True]


def test_a_glob_pin_takes_the_first_usable_link() -> None:
    config = replace(lab_config((1, 1, 1)), pins=(Pin(proto=17, ports=(5060, 5060), link="w*"),))
    assert {r.table for r in pin_rules(config)} == {c.link_table(11)}
    down = HealthVerdicts(down={("w1", 4): DOWN, ("w1", 6): DOWN})
    assert {r.table for r in pin_rules(config, verdicts=down)} == {c.link_table(12)}


def test_a_tier_pin_gets_a_weighted_table_of_that_tiers_standby_links() -> None:
    base = lab_config((1, 2, 3))
    links = tuple(replace(e, tier=2) if e.interface != "w1" else e for e in base.links)
    config = replace(base, links=links, pins=(Pin(to=(net("198.51.100.0/24"),), tier=2),))
    desired = plan(config, lab_kernel().observe())
    tier_routes = [r for r in desired.routes if r.table == c.tier_table(2)]
    (route,) = tier_routes
    assert sorted((hop.oif, hop.weight) for hop in route.multipath) == [(12, 2), (13, 3)]
    assert pin_rules(config) == [Rule(4, c.PRIO_PIN_FIRST, c.tier_table(2), dst=net("198.51.100.0/24"))]
    # the balance meanwhile uses tier 1 only
    assert [lp.name for lp in desired.links if lp.eligible[4]] == ["w1"]


def test_pins_reach_a_kernel_and_settle() -> None:
    kernel = lab_kernel()
    config = replace(
        lab_config((1, 1, 1)),
        links=tuple(replace(e, tier=2) if e.interface == "w3" else e for e in lab_config((1, 1, 1)).links),
        pins=(
            Pin(to=(net("198.51.100.0/24"),), link="w2", fail_closed=True),
            Pin(proto=17, tier=2),
        ),
    )
    report = reconcile(plan(config, kernel.observe()), kernel, "/nonexistent")
    assert report.ok
    assert Rule(4, c.PRIO_PIN_FIRST, c.link_table(12), dst=net("198.51.100.0/24")) in kernel.rules
    assert any(key[1] == c.tier_table(2) for key in kernel.routes)
    again = reconcile(plan(config, kernel.observe()), kernel, "/nonexistent")
    assert not again.changed


def test_pins_survive_to_yaml() -> None:
    text = (
        HEAD + "  - {to: 198.51.100.0/24, from: 100.64.100.3, proto: tcp, port: 80-81, link: w2,"
        " when_down: fail}\n"
    )
    config = parse_config(text, "p.yaml")
    again = parse_config(to_yaml(config), "p.yaml")
    assert [replace(p, line=0) for p in again.pins] == [replace(p, line=0) for p in config.pins]


@pytest.mark.parametrize("pinned", [False, True])
def test_a_standby_link_that_a_pin_uses_keeps_its_connections(pinned: bool) -> None:
    base = lab_config((1, 1, 1))
    links = tuple(replace(e, tier=2) if e.interface == "w3" else e for e in base.links)
    pins = (Pin(to=(net("198.51.100.0/24"),), link="w3"),) if pinned else ()
    config = replace(base, links=links, pins=pins)
    observed = lab_kernel().observe()
    tier1_down = HealthVerdicts(down={(f"w{i}", f): DOWN for i in (1, 2) for f in (4, 6)})
    before = plan(config, observed, verdicts=tier1_down)  # w3 carries everything
    after = plan(config, observed)  # tier 1 is back: w3 stands by
    ended = {(lp.name, family) for lp, family, _why in connections_to_end(before, after, config)}
    assert ended == ({("w3", 6)} if pinned else {("w3", 4), ("w3", 6)})  # the pin is IPv4 only
