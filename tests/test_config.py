"""wanhooks.config: both formats, every error located, nothing but ConfigError escapes."""

from __future__ import annotations

import dataclasses
import ipaddress
import os
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from wanhooks.config.load import ConfigError, load_config, parse_config, to_yaml
from wanhooks.model import (
    HEALTH_DEFAULTS,
    BalanceMode,
    Config,
    GroupKind,
    HealthConfig,
    LinkConfig,
    SeedWatchdog,
)

DATA = Path(__file__).parent / "data" / "config"
A4 = ipaddress.IPv4Address
A6 = ipaddress.IPv6Address
N4 = ipaddress.IPv4Network
N6 = ipaddress.IPv6Network


def text(*lines: str) -> str:
    """Lines joined, so that a case's line numbers can be read off its position."""
    return "\n".join(lines) + "\n"


def comparable(config: Config) -> Config:
    """The config without what depends on where it was read from (path, lines)."""
    links = tuple(dataclasses.replace(link, line=0) for link in config.links)
    return dataclasses.replace(config, path="", links=links)


def error_of(content: str | bytes) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_config(content, "test.conf")
    return caught.value


# --------------------------------------------------------------------------
# YAML that parses
# --------------------------------------------------------------------------


def test_issue_example() -> None:
    config = load_config(str(DATA / "wanhooks.yaml"))
    assert config == Config(
        links=(
            LinkConfig("eth1", 2, gateway4=A4("198.51.100.1"), network4=N4("198.51.100.0/24"), line=2),
            LinkConfig("wl*", 1, line=6),
        ),
        balance=BalanceMode.PER_CONNECTION,
        group=GroupKind.AUTO,
        path=str(DATA / "wanhooks.yaml"),
    )
    assert config.links[1].is_glob


def test_defaults() -> None:
    config = parse_config("links:\n  - interface: eth0\n", "x.yaml")
    assert config == Config(links=(LinkConfig("eth0", line=2),), path="x.yaml")
    assert config.balance is BalanceMode.PER_CONNECTION
    assert config.group is GroupKind.AUTO
    assert config.seed_watchdog == SeedWatchdog()


def test_mode_daemon_or_hooks_only() -> None:
    from wanhooks.model import RunMode

    assert parse_config("links: [{interface: eth0}]\n", "x").mode is RunMode.DAEMON  # the default
    for mode in RunMode:
        config = parse_config(f"links: [{{interface: eth0}}]\nmode: {mode.value}\n", "x")
        assert config.mode is mode
        converted = to_yaml(config)
        # to_yaml writes it when it is not the default, and it reads back the same
        assert (f"mode: {mode.value}\n" in converted) == (mode is not RunMode.DAEMON)
        assert comparable(parse_config(converted, "y")) == comparable(config)
    column = parse_config('WANIFACE="eth0"\n', "x")
    assert column.mode is RunMode.DAEMON  # a column file has no mode: the default


@pytest.mark.parametrize("mode", list(BalanceMode))
def test_each_balance_value(mode: BalanceMode) -> None:
    config = parse_config(f"links: [{{interface: eth0}}]\nbalance: {mode.value}\n", "x")
    assert config.balance is mode


@pytest.mark.parametrize("kind", list(GroupKind))
def test_each_group_value(kind: GroupKind) -> None:
    config = parse_config(f"links: [{{interface: eth0}}]\ngroup: {kind.value}\n", "x")
    assert config.group is kind


@pytest.mark.parametrize("glob", ["wl*", "wwan*", "usb*", "ppp?", "eth[0-3]", "*"])
def test_globs(glob: str) -> None:
    config = parse_config(f'links:\n  - interface: "{glob}"\n    gateway: 192.0.2.1\n', "x")
    assert config.links[0].interface == glob
    assert config.links[0].is_glob
    assert config.links[0].gateway4 == A4("192.0.2.1")  # a gateway for a glob is allowed


def test_both_families_in_lists() -> None:
    config = parse_config(
        text(
            "links:",
            "  - interface: eth1",
            '    gateway: ["2001:db8:1::1", 198.51.100.1]',
            "    network:",
            "      - 198.51.100.0/24",
            "      - 2001:db8:1::/64",
        ),
        "x",
    )
    link = config.links[0]
    assert (link.gateway4, link.gateway6) == (A4("198.51.100.1"), A6("2001:db8:1::1"))
    assert (link.network4, link.network6) == (N4("198.51.100.0/24"), N6("2001:db8:1::/64"))


def test_ipv6_link_local_gateway_may_lie_outside_the_network() -> None:
    config = parse_config(
        "links:\n  - interface: eth1\n    gateway: fe80::1\n    network: 2001:db8::/64\n", "x"
    )
    assert config.links[0].gateway6 == A6("fe80::1")


def test_plain_ipv6_text_that_yaml_reads_as_a_number() -> None:
    # 1:2:3:4:5:6:7:8 is a YAML 1.1 sexagesimal integer; it is still an address here.
    config = parse_config("links:\n  - interface: eth1\n    gateway: 1:2:3:4:5:6:7:8\n", "x")
    assert config.links[0].gateway6 == A6("1:2:3:4:5:6:7:8")


def test_flow_style_and_explicit_document() -> None:
    config = parse_config("---\n{links: [{interface: eth0, weight: 256}], group: legacy}\n...\n", "x")
    assert config.links[0].weight == 256
    assert config.group is GroupKind.LEGACY


def test_format_is_recognised_by_content_not_name(tmp_path: Path) -> None:
    seed_named_yaml = tmp_path / "wanhooks.yaml"
    seed_named_yaml.write_text('WANIFACE="eth1 eth2"\n')
    yaml_named_sh = tmp_path / "generic-balancer.sh"
    # (a column file balances per destination, as the 2011 script did; YAML must say so)
    yaml_named_sh.write_text("links: [{interface: eth1}, {interface: eth2}]\nbalance: per-destination\n")
    assert comparable(load_config(str(seed_named_yaml))) == comparable(load_config(str(yaml_named_sh)))


def test_crlf_and_bom() -> None:
    config = parse_config(b"\xef\xbb\xbflinks:\r\n  - interface: eth0\r\n", "x")
    assert config.links == (LinkConfig("eth0", line=2),)


# --------------------------------------------------------------------------
# health: probe settings, top level and per link
# --------------------------------------------------------------------------

HEALTH_TOP = HealthConfig(
    targets=(A4("198.51.100.7"), A4("203.0.113.9"), A6("2001:db8::7")),
    interval=0.1,
    down_after=0.8,
    up_after=1.0,
    hold_down=5.0,
    silent_targets=2,
    enabled=True,
)


def test_health_both_levels() -> None:
    config = load_config(str(DATA / "health.yaml"))
    assert config.health == HEALTH_TOP
    assert config.links == (
        LinkConfig("eth1", 2, gateway4=A4("198.51.100.1"), line=3),
        LinkConfig(
            "wwan0",
            line=6,
            health=HealthConfig(
                targets=(A4("203.0.113.53"),), interval=1.0, down_after=5.0, silent_targets=1
            ),
        ),
        LinkConfig("wl*", line=8, health=HealthConfig(enabled=False)),
    )
    # A YAML health section stands for the seed's settings too (see the seed tests).
    assert config.seed_watchdog == SeedWatchdog(HEALTH_TOP.targets or (), enabled=True)


# Keys health.yaml leaves out: every link gets the defaults.
UNSET = (
    "heartbeat",
    "budget_mb_per_day",
    "kind",
    "port",
    "query",
    "max_rtt",
    "max_loss",
    "loss_window",
    "passive",
)
DEFAULTED = {name: getattr(HEALTH_DEFAULTS, name) for name in UNSET}


def test_health_resolved_per_link() -> None:
    config = load_config(str(DATA / "health.yaml"))
    eth1, wwan0, wl = (link.health or HealthConfig() for link in config.links)
    assert eth1.resolved(config.health) == dataclasses.replace(HEALTH_TOP, **DEFAULTED)  # inherited
    assert wwan0.resolved(config.health) == HealthConfig(
        targets=(A4("203.0.113.53"),),  # overridden
        interval=1.0,
        down_after=5.0,
        up_after=1.0,  # inherited
        hold_down=5.0,
        silent_targets=1,
        enabled=True,
        **DEFAULTED,
    )
    assert wl.resolved(config.health) == dataclasses.replace(HEALTH_TOP, enabled=False, **DEFAULTED)


def test_health_resolved_falls_back_to_the_defaults() -> None:
    config = parse_config(
        text(
            "links:",
            "  - interface: eth1",
            "    health: {interval: 0.2, up_after: 0}",
            "health:",
            "  targets: 2001:db8::53",  # one address needs no list
            "  hold_down: 30",
        ),
        "x",
    )
    assert config.health == HealthConfig(targets=(A6("2001:db8::53"),), hold_down=30.0)
    own = config.links[0].health
    assert own == HealthConfig(interval=0.2, up_after=0.0)
    assert own.resolved(config.health) == HealthConfig(
        targets=(A6("2001:db8::53"),),
        interval=0.2,
        down_after=HEALTH_DEFAULTS.down_after,
        up_after=0.0,  # 0 is a value, not "unset"
        hold_down=30.0,
        silent_targets=HEALTH_DEFAULTS.silent_targets,  # all targets
        enabled=True,
        **DEFAULTED,
    )


def test_health_probe_kinds_and_thresholds() -> None:
    config = parse_config(
        text(
            "links:",
            "  - interface: eth1",
            "    health: {kind: dns, query: example.org., port: 5353}",
            "  - interface: eth2",
            "    health: {kind: tcp}",
            "health:",
            "  targets: [198.51.100.7]",
            "  max_rtt: 0.25",
            "  max_loss: 20",
            "  loss_window: 30",
            "  passive: false",
        ),
        "x",
    )
    assert config.links[0].health == HealthConfig(kind="dns", query="example.org.", port=5353)
    assert config.links[1].health == HealthConfig(kind="tcp")
    assert config.health == HealthConfig(
        targets=(A4("198.51.100.7"),), max_rtt=0.25, max_loss=20.0, loss_window=30.0, passive=False
    )
    # and it writes back as it reads
    again = parse_config(to_yaml(config), "y")
    assert [link.health for link in again.links] == [link.health for link in config.links]
    assert again.health == config.health


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ("{kind: udp}", "x:3: links[1].health.kind: unknown probe kind 'udp': choose icmp, tcp, dns"),
        ("{kind: tcp, port: 0}", "x:3: links[1].health.port: port 0 is out of range: give 1 to 65535"),
        (
            "{kind: tcp, port: 70000}",
            "x:3: links[1].health.port: port 70000 is out of range: give 1 to 65535",
        ),
        (
            "{kind: icmp, port: 80}",
            "x:3: links[1].health.port: port applies to tcp and dns probes, not to kind icmp",
        ),
        (
            "{kind: tcp, query: a.b}",
            "x:3: links[1].health.query: query applies to dns probes, not to kind tcp",
        ),
        ("{kind: dns, query: 'a..b'}", "x:3: links[1].health.query: query 'a..b' is not a domain name"),
        ("{kind: dns, query: 'a b'}", "x:3: links[1].health.query: query 'a b' is not a domain name"),
        ("{max_loss: 150}", "x:3: links[1].health.max_loss: 150 % is out of range: 0 to 100"),
        (
            "{max_rtt: fast}",
            "x:3: links[1].health.max_rtt: expected a number of seconds, not the string 'fast'",
        ),
        (
            "{loss_window: 0}",
            "x:3: links[1].health.loss_window: 0 s is out of range: more than 0, at most 3600",
        ),
        ("{passive: maybe}", "x:3: links[1].health.passive: must be true or false"),
        (
            "{port: 53}",
            "x:2: links[1].health: port (set here) applies to tcp and dns probes, not to kind icmp",
        ),
    ],
)
def test_health_probe_settings_refused(section: str, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(
            text(
                "links:",
                "  - interface: eth1",
                f"    health: {section}",
                "health:",
                "  targets: [198.51.100.7]",
            ),
            "x",
        )
    assert str(err.value).startswith(message), str(err.value)


def test_health_every_key_optional() -> None:
    config = parse_config("links:\n  - interface: eth1\n    health: {}\nhealth: {}\n", "x")
    assert config.health == HealthConfig()
    assert config.links[0].health == HealthConfig()
    assert parse_config("links: [{interface: eth1}]\n", "x").health == HealthConfig()
    assert parse_config("links: [{interface: eth1}]\n", "x").links[0].health is None


def test_health_empty_targets_mean_no_probing() -> None:
    # Nothing is probed on eth2, so its inherited settings are not judged.
    config = parse_config(
        text(
            "links:",
            "  - interface: eth1",
            "  - interface: eth2",
            "    health: {targets: [], interval: 5}",
            "health: {targets: [192.0.2.7, 192.0.2.8], silent_targets: 2}",
        ),
        "x",
    )
    assert config.links[1].health == HealthConfig(targets=(), interval=5.0)
    resolved = config.links[1].health.resolved(config.health)
    assert resolved.targets == () and resolved.silent_targets == 2
    assert parse_config("links: [{interface: eth1}]\nhealth: {targets: []}\n", "x").health == HealthConfig(
        targets=()
    )


def test_health_rules_skip_links_that_are_not_probed() -> None:
    # Resolved, eth2 would probe every 1 s and fail sooner (the default): but it is disabled.
    config = parse_config(
        text(
            "links:",
            "  - interface: eth1",
            "  - interface: eth2",
            "    health: {interval: 1, enabled: false}",
            "health: {targets: [192.0.2.7]}",
        ),
        "x",
    )
    assert config.links[1].health == HealthConfig(interval=1.0, enabled=False)


def test_health_numbers_at_their_limits() -> None:
    config = parse_config(
        text(
            "links: [{interface: eth1}]",
            "health:",
            "  interval: 60",
            "  down_after: 600",
            "  up_after: 3600",
            "  hold_down: 86400",
            "  silent_targets: 1",
            "  enabled: false",
        ),
        "x",
    )
    assert config.health == HealthConfig(
        interval=60.0, down_after=600.0, up_after=3600.0, hold_down=86400.0, silent_targets=1, enabled=False
    )
    small = parse_config("links: [{interface: eth1}]\nhealth: {interval: 0.001, down_after: 0.002}\n", "x")
    assert (small.health.interval, small.health.down_after) == (0.001, 0.002)


# --------------------------------------------------------------------------
# Tiers, metered links, connectivity and hooks
# --------------------------------------------------------------------------


def test_tiers_and_their_settings() -> None:
    config = load_config(str(DATA / "tiers.yaml"))
    assert config.links == (
        LinkConfig("eth1", 2, line=3, tier=1),
        LinkConfig("eth2", line=6),  # no tier given: None, not 1
        LinkConfig("wwan*", line=7, tier=3),
    )
    assert config.metered_tier == 4
    assert config.require_full_connectivity is False
    assert config.hooks_dir == "/usr/local/lib/wanhooks/hooks.d"
    assert config.flush_lower_tiers is False


def test_tier_settings_defaults() -> None:
    for config in (
        parse_config("links:\n  - interface: eth0\n", "x"),
        parse_config('WANIFACE="eth0"\n', "x"),
    ):
        assert config.links[0].tier is None
        assert config.metered_tier == 2
        assert config.require_full_connectivity is True
        assert config.hooks_dir == "/etc/wanhooks/hooks.d"
        assert config.flush_lower_tiers is True


@pytest.mark.parametrize("tier", [1, 2, 3, 4, 5])
def test_each_tier(tier: int) -> None:
    config = parse_config(f"links: [{{interface: eth0, tier: {tier}}}]\n", "x")
    assert config.links[0].tier == tier
    seed = parse_config(f'WANIFACE="eth0"\nTIERS="{tier}"\n', "x")
    assert seed.links[0].tier == tier


@pytest.mark.parametrize("tier", [0, 1, 2, 3, 4, 5])
def test_each_metered_tier(tier: int) -> None:
    config = parse_config(f"links: [{{interface: eth0}}]\nmetered_tier: {tier}\n", "x")
    assert config.metered_tier == tier


@pytest.mark.parametrize(
    ("word", "value"), [("true", True), ("false", False), ("yes", True), ("off", False), ("False", False)]
)
def test_tier_switches(word: str, value: bool) -> None:
    config = parse_config(
        f"links: [{{interface: eth0}}]\nrequire_full_connectivity: {word}\nflush_lower_tiers: {word}\n", "x"
    )
    assert (config.require_full_connectivity, config.flush_lower_tiers) == (value, value)


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("/", "/"),
        ("/srv/does/not/exist", "/srv/does/not/exist"),
        ("'/opt/wan hooks/'", "/opt/wan hooks/"),
        ('"/opt/h\\u00e9\\x7f#:"', "/opt/h\u00e9\x7f#:"),
        ("/" + "d" * 4095, "/" + "d" * 4095),  # 4096 characters: the most allowed
    ],
)
def test_hooks_dir(written: str, expected: str) -> None:
    config = parse_config(f"links: [{{interface: eth0}}]\nhooks_dir: {written}\n", "x")
    assert config.hooks_dir == expected
    assert comparable(parse_config(to_yaml(config), "y")) == comparable(config)


def test_seed_tiers_column() -> None:
    config = load_config(str(DATA / "generic-balancer-tiers.conf"))
    assert comparable(config).links == (
        LinkConfig("eth1", 2, tier=1),
        LinkConfig("eth2"),
        LinkConfig("wwan0", tier=3),
    )


# --------------------------------------------------------------------------
# The seed's column file
# --------------------------------------------------------------------------


def test_seed_example_equals_its_yaml_equivalent() -> None:
    seed = load_config(str(DATA / "generic-balancer.conf"))
    # The column file balances per destination, as the 2011 script did (its multipath route
    # kept each destination on one link); a YAML file says so with balance:, or takes YAML's
    # default.  Apart from that the equivalents are the same config.
    assert seed.balance is BalanceMode.PER_DESTINATION
    for name in ("generic-balancer.yaml", "generic-balancer-health.yaml"):  # watchdog:, health:
        equivalent = comparable(load_config(str(DATA / name)))
        assert dataclasses.replace(equivalent, balance=seed.balance) == comparable(seed), name
    assert seed.health == HealthConfig(targets=(A4("198.51.100.7"), A4("203.0.113.9")))
    assert seed.links[1] == LinkConfig(
        "vlan100", 2, gateway4=A4("192.168.0.1"), network4=N4("192.168.0.0/24"), line=2
    )
    assert all(link.line == 2 for link in seed.links)  # the WANIFACE line
    assert seed.seed_watchdog == SeedWatchdog((A4("198.51.100.7"), A4("203.0.113.9")), enabled=True)
    # BALANCE chooses another, as balance: does
    chosen = parse_config(text('WANIFACE="eth1"', "BALANCE=per-connection"), "x")
    assert chosen.balance is BalanceMode.PER_CONNECTION


def test_seed_dash_means_not_given() -> None:
    config = parse_config(
        text(
            'WANIFACE="eth1 wwan0 eth2"',
            'GATEWAYS="192.0.2.1 - 2001:db8::1"',
            'NETWORKS="192.0.2.0/24 - -"',
            'WEIGHTS="3 - 1"',
        ),
        "x",
    )
    assert comparable(config).links == (
        LinkConfig("eth1", 3, gateway4=A4("192.0.2.1"), network4=N4("192.0.2.0/24")),
        LinkConfig("wwan0", 1),
        LinkConfig("eth2", 1, gateway6=A6("2001:db8::1")),
    )


def test_seed_shell_forms() -> None:
    config = parse_config(
        text(
            "#!/bin/sh",
            "  # indented comment",
            "",
            "export WANIFACE='eth1 eth2'   # single quotes, export",
            "WEIGHTS=\"2 \"'1'            # quoted parts run together",
            "BALANCE=per-destination      # a bare word",
            "WATCHDOG=off",
            "TESTIPS=''",
        ),
        "x",
    )
    assert [(link.interface, link.weight) for link in config.links] == [("eth1", 2), ("eth2", 1)]
    assert config.balance is BalanceMode.PER_DESTINATION
    assert config.seed_watchdog == SeedWatchdog()


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['TESTIPS="192.0.2.9"'], SeedWatchdog((A4("192.0.2.9"),), enabled=True)),
        (['TESTIPS="192.0.2.9"', "WATCHDOG=0"], SeedWatchdog((A4("192.0.2.9"),), enabled=False)),
        (['TESTIPS="192.0.2.9"', "WATCHDOG=True"], SeedWatchdog((A4("192.0.2.9"),), enabled=True)),
        (["WATCHDOG=no"], SeedWatchdog()),
    ],
)
def test_seed_watchdog(lines: list[str], expected: SeedWatchdog) -> None:
    config = parse_config(text('WANIFACE="eth1"', *lines), "x")
    assert config.seed_watchdog == expected


T1, T2 = A4("192.0.2.9"), A6("2001:db8::9")


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([], HealthConfig()),
        (["TESTIPS=''"], HealthConfig()),  # empty: not given
        (['TESTIPS="192.0.2.9 2001:db8::9"'], HealthConfig(targets=(T1, T2))),
        (['TESTIPS="192.0.2.9"', "WATCHDOG=on"], HealthConfig(targets=(T1,))),
        (['TESTIPS="192.0.2.9"', "WATCHDOG=0"], HealthConfig(targets=(T1,), enabled=False)),
        (["WATCHDOG=no"], HealthConfig(enabled=False)),
    ],
)
def test_seed_watchdog_becomes_health(lines: list[str], expected: HealthConfig) -> None:
    config = parse_config(text('WANIFACE="eth1"', *lines), "x")
    assert config.health == expected
    assert config.links[0].health is None
    # The same settings written as YAML's watchdog: or as health: give the same Config.
    assert comparable(parse_config(to_yaml(config), "y")) == comparable(config)


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("watchdog: {test_ips: [192.0.2.9]}", HealthConfig(targets=(T1,))),
        ("watchdog: {test_ips: [192.0.2.9], enabled: true}", HealthConfig(targets=(T1,))),
        ("watchdog: {test_ips: 192.0.2.9, enabled: false}", HealthConfig(targets=(T1,), enabled=False)),
        ("watchdog: {enabled: false}", HealthConfig(enabled=False)),
    ],
)
def test_yaml_watchdog_becomes_health(section: str, expected: HealthConfig) -> None:
    config = parse_config(f"links: [{{interface: eth1}}]\nbalance: per-destination\n{section}\n", "x")
    assert config.health == expected
    seed = parse_config(text('WANIFACE="eth1"', *_seed_lines(config.seed_watchdog)), "x")
    assert comparable(config) == comparable(seed)


def _seed_lines(watchdog: SeedWatchdog) -> list[str]:
    lines = [f"WATCHDOG={'yes' if watchdog.enabled else 'no'}"]
    if watchdog.test_ips:
        lines.append(f"TESTIPS='{' '.join(str(a) for a in watchdog.test_ips)}'")
    return lines


@pytest.mark.parametrize(
    ("section", "expected"),
    [
        ("", SeedWatchdog()),
        ("health: {targets: [192.0.2.9]}", SeedWatchdog((T1,), enabled=True)),
        ("health: {targets: [192.0.2.9], enabled: false}", SeedWatchdog((T1,), enabled=False)),
        ("health: {targets: [], interval: 1}", SeedWatchdog()),
        ("health: {enabled: true}", SeedWatchdog()),
    ],
)
def test_yaml_health_gives_seed_watchdog(section: str, expected: SeedWatchdog) -> None:
    config = parse_config(f"links: [{{interface: eth1}}]\n{section}\n", "x")
    assert config.seed_watchdog == expected


# --------------------------------------------------------------------------
# to_yaml
# --------------------------------------------------------------------------


def test_a_links_id_is_read_written_and_checked() -> None:
    """`id:` names one link on both routers of a pair: 1..255, unique, never on a glob."""
    config = parse_config(
        text("links:", "  - {interface: w1, id: 1}", "  - {interface: w2, id: 255}", "  - interface: w3"),
        "t.yaml",
    )
    assert [link.link_id for link in config.links] == [1, 255, None]
    assert comparable(parse_config(to_yaml(config), "back.yaml")) == comparable(config)
    for content, line, key, says in [
        (text("links:", "  - {interface: w1, id: 0}"), 2, "links[1].id", "1"),
        (text("links:", "  - {interface: w1, id: 256}"), 2, "links[1].id", "255"),
        (text("links:", "  - {interface: w1, id: two}"), 2, "links[1].id", "whole number"),
        (text("links:", "  - {interface: w1, id: 3}", "  - interface: w2", "    id: 3"), 4, "links[2].id",
         "id 3 is already w1's (line 2)"),
        (text("links:", "  - interface: 'w*'", "    id: 4"), 3, "links[1].id", "a glob"),
    ]:  # fmt: skip
        err = error_of(content)
        assert (err.line, err.key) == (line, key), err
        assert says in str(err), err


@pytest.mark.parametrize(
    "name",
    [
        "wanhooks.yaml",
        "generic-balancer.conf",
        "generic-balancer.yaml",
        "generic-balancer-health.yaml",
        "health.yaml",
        "tiers.yaml",
        "generic-balancer-tiers.conf",
    ],
)
def test_to_yaml_round_trip(name: str) -> None:
    config = load_config(str(DATA / name))
    converted = to_yaml(config)
    assert converted.startswith(f"# Converted by `wanhooks convert` from {DATA / name}.\n")
    assert comparable(parse_config(converted, "converted.yaml")) == comparable(config)


def test_to_yaml_round_trip_of_awkward_values() -> None:
    config = Config(
        links=(
            LinkConfig("yes", 7, gateway6=A6("1:2:3:4:5:6:7:8"), network6=N6("1:2:3:4::/64")),
            LinkConfig("1234", gateway4=A4("10.0.0.1"), gateway6=A6("fe80::1"), network4=N4("10.0.0.0/8")),
            LinkConfig("wl[0-9]*"),
        ),
        balance=BalanceMode.PER_CLIENT,
        group=GroupKind.HASH_THRESHOLD,
        seed_watchdog=SeedWatchdog((A6("2001:db8::9"),), enabled=False),
        # What parse_config makes of that watchdog: the two always agree.
        health=HealthConfig(targets=(A6("2001:db8::9"),), enabled=False),
    )
    converted = to_yaml(config)
    assert isinstance(yaml.safe_load(converted), dict)
    assert comparable(parse_config(converted, "x")) == comparable(config)


def test_to_yaml_round_trip_of_awkward_health() -> None:
    config = Config(
        links=(
            LinkConfig("eth1", health=HealthConfig()),  # health: {}
            LinkConfig("eth2", health=HealthConfig(targets=(), interval=1e-05, down_after=0.1234567891)),
            LinkConfig(
                "eth3", health=HealthConfig(targets=(A6("fe80::1"), A4("10.0.0.1")), silent_targets=2)
            ),
        ),
        gateway_hold=0.1234567,
        health=HealthConfig(
            interval=59.999999999, down_after=600.0, up_after=0.0, hold_down=86400.0, enabled=True
        ),
    )
    converted = to_yaml(config)
    assert "    health: {}\n" in converted
    assert "interval: 1.0e-05\n" in converted  # YAML 1.1 reads 1e-05 as a string
    assert comparable(parse_config(converted, "x")) == comparable(config)


TIER_SETTINGS = ("metered_tier", "require_full_connectivity", "hooks_dir", "flush_lower_tiers")


def test_to_yaml_writes_tier_settings_only_when_not_default() -> None:
    plain = to_yaml(parse_config("links: [{interface: eth1}]\n", "x"))
    for key in ("tier", *TIER_SETTINGS):
        assert key not in plain
    # Given explicitly but equal to the default: still left out, and still the same Config.
    explicit = parse_config(
        text(
            "links: [{interface: eth1}]",
            "metered_tier: 2",
            "require_full_connectivity: true",
            "hooks_dir: /etc/wanhooks/hooks.d",
            "flush_lower_tiers: true",
        ),
        "x",
    )
    assert to_yaml(explicit) == plain
    converted = to_yaml(load_config(str(DATA / "tiers.yaml")))
    assert (
        "  - interface: eth1\n    weight: 2\n    tier: 1\n  - interface: eth2\n    weight: 1\n" in converted
    )
    assert converted.count("tier: ") == 3  # two links and metered_tier
    assert "metered_tier: 4\n" in converted
    assert "require_full_connectivity: false\n" in converted
    assert "hooks_dir: /usr/local/lib/wanhooks/hooks.d\n" in converted  # plain, unquoted
    assert "flush_lower_tiers: false\n" in converted


def test_to_yaml_round_trip_of_tier_settings() -> None:
    config = Config(
        links=(LinkConfig("eth1", tier=5), LinkConfig("wwan*", 3, tier=1), LinkConfig("eth2")),
        metered_tier=0,
        require_full_connectivity=False,
        hooks_dir="/opt/yes: #no\t\u2028\u00e9\x7f'\"\\",
        flush_lower_tiers=False,
    )
    converted = to_yaml(config)
    assert isinstance(yaml.safe_load(converted), dict)
    assert comparable(parse_config(converted, "x")) == comparable(config)
    # Only one setting changed: only its key is written.
    for key, value in [
        ("metered_tier", 5),
        ("require_full_connectivity", False),
        ("hooks_dir", "/true"),
        ("flush_lower_tiers", False),
    ]:
        one = dataclasses.replace(Config(links=(LinkConfig("eth1"),)), **{key: value})
        converted = to_yaml(one)
        written = {line.split(":")[0] for line in converted.splitlines()} & set(TIER_SETTINGS)
        assert written == {key}, converted
        assert comparable(parse_config(converted, "x")) == comparable(one)


def test_to_yaml_writes_health_not_watchdog() -> None:
    converted = to_yaml(load_config(str(DATA / "generic-balancer.yaml")))
    assert "watchdog" not in converted
    assert "health:\n  targets: [198.51.100.7, 203.0.113.9]\n" in converted
    # A Config built with only the seed's watchdog still converts to something that loads.
    legacy = Config(links=(LinkConfig("eth1"),), seed_watchdog=SeedWatchdog((T1,), enabled=True))
    assert "watchdog:" in to_yaml(legacy)
    assert parse_config(to_yaml(legacy), "x").health == HealthConfig(targets=(T1,))


# --------------------------------------------------------------------------
# Errors: each names its line, its key and what is wrong
# --------------------------------------------------------------------------

LINK = "links:\n  - interface: eth1\n"  # lines 1-2 of many YAML cases below
SEED3 = 'WANIFACE=" vlan101 vlan100 vlan102"\n'  # line 1 of many seed cases below

MALFORMED: list[tuple[str, str | bytes, int, str, str]] = [
    # (case id, content, line, key, part of the message)
    (
        "unequal columns",
        SEED3 + 'GATEWAYS=" 192.168.1.1 192.168.0.1"\n',
        2,
        "GATEWAYS",
        "GATEWAYS has 2 columns but WANIFACE has 3",
    ),
    ("unequal weights", SEED3 + "\nWEIGHTS=1\n", 3, "WEIGHTS", "WEIGHTS has 1 column but WANIFACE has 3"),
    (
        "bad address",
        LINK + "    gateway: 198.51.100.300\n",
        3,
        "links[1].gateway",
        "gateway '198.51.100.300' is not an IP address",
    ),
    (
        "bad seed address",
        SEED3 + 'GATEWAYS="192.168.1.1 192.168.0.x -"\n',
        2,
        "GATEWAYS[2]",
        "'192.168.0.x' is not an IP address",
    ),
    ("multicast gateway", LINK + "    gateway: 224.0.0.1\n", 3, "links[1].gateway", "multicast"),
    ("gateway zone", LINK + "    gateway: fe80::1%eth1\n", 3, "links[1].gateway", "has a zone"),
    (
        "weight 0",
        LINK + "    weight: 0\n",
        3,
        "links[1].weight",
        "weight 0 is not allowed: remove the link or give it a weight of 1 to 256",
    ),
    (
        "weight 300",
        LINK + "    weight: 300\n",
        3,
        "links[1].weight",
        "weight 300 is out of range: give 1 to 256",
    ),
    ("weight -1", LINK + "    weight: -1\n", 3, "links[1].weight", "out of range"),
    (
        "weight string",
        LINK + '    weight: "2"\n',
        3,
        "links[1].weight",
        "not the string '2': write it without quotes",
    ),
    (
        "weight true",
        LINK + "    weight: true\n",
        3,
        "links[1].weight",
        "must be an integer from 1 to 256, or auto, not the boolean",
    ),
    ("weight float", LINK + "    weight: 2.5\n", 3, "links[1].weight", "not the number '2.5'"),
    ("weight octal", LINK + "    weight: 010\n", 3, "links[1].weight", "whole number"),
    ("weight empty", LINK + "    weight:\n", 3, "links[1].weight", "not empty"),
    ("seed weight 0", SEED3 + "WEIGHTS='1 0 1'\n", 2, "WEIGHTS[2]", "weight 0 is not allowed"),
    ("seed weight word", SEED3 + "WEIGHTS='1 2 x'\n", 2, "WEIGHTS[3]", "not 'x'"),
    (
        "unknown link key",
        LINK + "    wieght: 2\n",
        3,
        "links[1].wieght",
        "unknown key 'wieght': did you mean 'weight'?",
    ),
    ("unknown top key", LINK + "balanse: per-client\n", 3, "balanse", "did you mean 'balance'?"),
    ("unknown key no match", LINK + "colour: blue\n", 3, "colour", "known keys: links, balance, group"),
    (
        "unknown seed variable",
        SEED3 + "WEIGTHS='1 1 1'\n",
        2,
        "WEIGTHS",
        "unknown variable 'WEIGTHS': did you mean 'WEIGHTS'?",
    ),
    (
        "duplicate interface",
        LINK + "  - interface: eth2\n  - interface: eth1\n",
        4,
        "links[3].interface",
        "interface 'eth1' is already given by the link at line 2",
    ),
    ("duplicate seed interface", 'WANIFACE="eth1 eth2 eth1"\n', 1, "WANIFACE[3]", "already given"),
    (
        "duplicate interface one line",
        "links: [{interface: a}, {interface: a}]\n",
        1,
        "links[2].interface",
        "already given by the link at line 1",
    ),
    (
        "duplicate key",
        LINK + "    weight: 2\n    weight: 3\n",
        4,
        "links[1].weight",
        "duplicate key 'weight' (first given at line 3)",
    ),
    ("duplicate top key", LINK + "group: auto\ngroup: legacy\n", 4, "group", "duplicate key 'group'"),
    (
        "duplicate seed variable",
        SEED3 + "WEIGHTS='1 1 1'\nWEIGHTS='2 2 2'\n",
        3,
        "WEIGHTS",
        "WEIGHTS is assigned twice (first at line 2)",
    ),
    ("yaml syntax", LINK + "    weight: 2\n   gateway: 192.0.2.1\n", 4, "", "YAML syntax error"),
    ("yaml tab", LINK + "\tweight: 2\n", 3, "", "YAML syntax error"),
    ("two documents", LINK + "---\nlinks: []\n", 3, "", "expected a single document"),
    ("binary garbage", b"links:\n  - interface: eth1\x00\x01\x02\xff\n", 2, "", "not a text file"),
    ("invalid utf-8", b"links:\n\n  - interface: eth\xc3\x281\n", 3, "", "not a text file: invalid UTF-8"),
    ("control character", "links:\n  - interface: eth1\x07\n", 2, "", "control character U+0007"),
    ("empty file", "", 0, "", "the file is empty"),
    ("blank file", " \n\n\t\n", 0, "", "the file is empty"),
    ("comments only", "# nothing here\n\n   # still nothing\n", 0, "", "only comments"),
    (
        "top level scalar",
        "eth1 eth2\n",
        1,
        "",
        "expected a YAML config or a generic-balancer.sh column file (WANIFACE=...)",
    ),
    ("top level list", "- interface: eth1\n", 1, "", "must be a mapping with 'links', not a list"),
    ("shell file without WANIFACE", "IFACES='eth1 eth2'\n", 1, "", "must be a mapping"),
    ("links missing", "balance: per-client\ngroup: auto\n", 1, "links", "links is required"),
    ("links not a list", "links: eth1\n", 1, "links", "links must be a list"),
    ("links mapping", "links:\n  interface: eth1\n", 2, "links", "not a mapping"),
    ("links empty", "links: []\n", 1, "links", "links is empty"),
    ("links null", "links:\nbalance: per-client\n", 1, "links", "not empty"),
    ("link not a mapping", LINK + "  - eth2\n", 3, "links[2]", "did you mean '- interface: ...'?"),
    ("interface missing", LINK + "  - weight: 2\n", 3, "links[2].interface", "every link needs an interface"),
    ("interface a number", "links:\n  - interface: 1234\n", 2, "links[1].interface", "put it in quotes"),
    (
        "interface too long",
        "links:\n  - interface: abcdefghijklmnop\n",
        2,
        "links[1].interface",
        "is 16 characters: Linux allows at most 15",
    ),
    ("interface slash", "links:\n  - interface: eth0/1\n", 2, "links[1].interface", "must not contain '/'"),
    ("interface colon", "links:\n  - interface: eth0:1\n", 2, "links[1].interface", "must not contain ':'"),
    ("interface space", "links:\n  - interface: 'eth 0'\n", 2, "links[1].interface", "whitespace"),
    (
        "interface dotdot",
        "links:\n  - interface: ..\n",
        2,
        "links[1].interface",
        "not a valid interface name",
    ),
    ("interface non-ascii", "links:\n  - interface: éth0\n", 2, "links[1].interface", "printable ASCII"),
    ("interface empty", "links:\n  - interface: ''\n", 2, "links[1].interface", "empty"),
    ("seed interface dash", 'WANIFACE="eth1 -"\n', 1, "WANIFACE[2]", "must name an interface"),
    ("seed no interfaces", 'WANIFACE=""\n', 1, "WANIFACE", "lists no interfaces"),
    (
        "network host bits",
        LINK + "    network: 198.51.100.1/24\n",
        3,
        "links[1].network",
        "has host bits set: did you mean 198.51.100.0/24?",
    ),
    (
        "seed network host bits",
        SEED3 + "NETWORKS='- 10.1.2.3/8 -'\n",
        2,
        "NETWORKS[2]",
        "did you mean 10.0.0.0/8?",
    ),
    ("network not a prefix", LINK + "    network: lan\n", 3, "links[1].network", "is not a prefix"),
    ("network no length", LINK + "    network: 198.51.100.0\n", 3, "links[1].network", "198.51.100.0/24"),
    ("network everything", LINK + "    network: 0.0.0.0/0\n", 3, "links[1].network", "covers every address"),
    (
        "two IPv6 networks",
        LINK + "    network: [2001:db8::/64, 2001:db8:1::/64]\n",
        3,
        "links[1].network[2]",
        "two IPv6 networks",
    ),
    (
        "gateway outside network",
        LINK + "    network: 198.51.100.0/24\n    gateway: 10.0.0.1\n",
        4,
        "links[1].gateway",
        "gateway 10.0.0.1 is not inside network 198.51.100.0/24",
    ),
    (
        "IPv6 gateway outside network",
        LINK + "    gateway: [192.0.2.1, 2001:db8:2::1]\n    network: [192.0.2.0/24, 2001:db8:1::/64]\n",
        3,
        "links[1].gateway[2]",
        "not inside network",
    ),
    (
        "seed gateway outside network",
        SEED3 + "GATEWAYS='- 10.0.0.1 -'\nNETWORKS='- 192.168.0.0/24 -'\n",
        2,
        "GATEWAYS[2]",
        "gateway 10.0.0.1 is not inside network 192.168.0.0/24",
    ),
    (
        "two IPv4 gateways",
        LINK + "    gateway:\n      - 198.51.100.1\n      - 198.51.100.2\n",
        5,
        "links[1].gateway[2]",
        "two IPv4 gateways (198.51.100.1 and 198.51.100.2)",
    ),
    ("gateway empty list", LINK + "    gateway: []\n", 3, "links[1].gateway", "empty list"),
    ("gateway mapping", LINK + "    gateway: {via: 192.0.2.1}\n", 3, "links[1].gateway", "not a mapping"),
    (
        "balance value",
        LINK + "balance: per-conection\n",
        3,
        "balance",
        "is not one of per-connection, per-destination, per-client: did you mean 'per-connection'?",
    ),
    ("group value", LINK + "group: resilent\n", 3, "group", "did you mean 'resilient'?"),
    ("mode value", LINK + "mode: hook-only\n", 3, "mode", "is not one of daemon, hooks-only: did you mean"),
    ("mode number", LINK + "mode: 1\n", 3, "mode", "mode must be a string, not the number '1'"),
    ("mode list", LINK + "mode: [daemon]\n", 3, "mode", "mode must be a string, not a list"),
    ("seed balance value", SEED3 + "BALANCE=round-robin\n", 2, "BALANCE", "is not one of per-connection"),
    (
        "seed watchdog value",
        SEED3 + "TESTIPS=192.0.2.1\nWATCHDOG=maybe\n",
        3,
        "WATCHDOG",
        "is not one of yes, true",
    ),
    ("seed watchdog without targets", SEED3 + "WATCHDOG=yes\n", 2, "WATCHDOG", "no test addresses"),
    ("seed bad test address", SEED3 + "TESTIPS='192.0.2.1 ::1'\n", 2, "TESTIPS[2]", "loopback"),
    ("yaml watchdog", LINK + "watchdog:\n  enabled: yes\n", 4, "watchdog.enabled", "no test addresses"),
    (
        "yaml watchdog key",
        LINK + "watchdog:\n  testips: []\n",
        4,
        "watchdog.testips",
        "did you mean 'test_ips'?",
    ),
    (
        "shell expansion",
        SEED3 + 'GATEWAYS="$GW1 192.168.0.1 192.168.2.1"\n',
        2,
        "GATEWAYS",
        "shell expansion ($, `...`, $(...)) is not supported",
    ),
    ("command substitution", "WANIFACE=$(ls /sys/class/net)\n", 1, "WANIFACE", "shell expansion"),
    ("backticks", SEED3 + "WEIGHTS=`echo 1 1 1`\n", 2, "WEIGHTS", "shell expansion"),
    ("dollar in single quotes", SEED3 + "WEIGHTS='$W'\n", 2, "WEIGHTS", "shell expansion"),
    (
        "unterminated quote",
        SEED3 + 'GATEWAYS="192.168.1.1 192.168.0.1\n',
        2,
        "GATEWAYS",
        "unterminated quote",
    ),
    ("multi-line quote", 'WANIFACE="eth1\neth2"\n', 1, "WANIFACE", "unterminated quote"),
    ("unquoted space", "WANIFACE=eth1 eth2\n", 1, "WANIFACE", "unexpected 'eth2' after the value"),
    ("shell syntax", "WANIFACE=eth1; reboot\n", 1, "WANIFACE", "shell syntax ';' is not supported"),
    ("backslash", "WANIFACE=eth1\\ eth2\n", 1, "WANIFACE", "backslash"),
    ("duplicate empty seed variable", SEED3 + "WEIGHTS=\nWEIGHTS='1 1 1'\n", 3, "WEIGHTS", "assigned twice"),
    (
        "bool tag nonsense",
        LINK + "watchdog:\n  test_ips: [192.0.2.1]\n  enabled: !!bool maybe\n",
        5,
        "watchdog.enabled",
        "must be true or false",
    ),
    ("not an assignment", SEED3 + "ip route flush cache\n", 2, "", "not a NAME=value assignment"),
    (
        "alias",
        "base: &b {interface: eth1}\nlinks:\n  - *b\n",
        3,
        "links[1]",
        "YAML aliases (*b) are not supported",
    ),
    ("merge key", LINK + "  - <<: *x\n", 3, "links[2].<<", "aliases (*x) are not supported"),
    (
        "billion laughs",
        "a: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nlinks: *c\n",
        2,
        "b[1]",
        "aliases (*a) are not supported",
    ),
    ("deep nesting", "links: " + "[" * 1000 + "]" * 1000 + "\n", 1, "", "nested more than 16 levels"),
    ("custom tag", "links:\n  - interface: !ifname eth1\n", 2, "links[1].interface", "tagged '!ifname'"),
    # health
    (
        "health unknown key",
        LINK + "health:\n  intervall: 1\n",
        4,
        "health.intervall",
        "did you mean 'interval'?",
    ),
    (
        "link health unknown key",
        LINK + "    health:\n      down-after: 2\n",
        4,
        "links[1].health.down-after",
        "unknown key 'down-after': did you mean 'down_after'?",
    ),
    (
        "health duplicate key",
        LINK + "health:\n  interval: 1\n  interval: 2\n",
        5,
        "health.interval",
        "duplicate key 'interval' (first given at line 4)",
    ),
    ("health a scalar", LINK + "health: 198.51.100.7\n", 3, "health", "health must be a mapping"),
    ("health empty", LINK + "health:\n", 3, "health", "not empty"),
    ("link health a list", LINK + "    health: [192.0.2.1]\n", 3, "links[1].health", "not a list"),
    (
        "health duplicate target",
        LINK + "health:\n  targets: [198.51.100.7, 203.0.113.9, 198.51.100.7]\n",
        4,
        "health.targets[3]",
        "duplicate target 198.51.100.7: it is already targets[1]",
    ),
    (
        "link health duplicate IPv6 target",
        LINK + "  - interface: eth2\n    health:\n      targets:\n        - 2001:db8::1\n"
        "        - 192.0.2.1\n        - 2001:DB8:0::1\n",
        8,
        "links[2].health.targets[3]",
        "duplicate target 2001:db8::1: it is already targets[1]",
    ),
    (
        "health multicast target",
        LINK + "health: {targets: [224.0.0.1]}\n",
        3,
        "health.targets[1]",
        "multicast",
    ),
    ("health loopback target", LINK + "health: {targets: 127.0.0.1}\n", 3, "health.targets", "loopback"),
    (
        "health unspecified target",
        LINK + "health:\n  targets: [192.0.2.1, '::']\n",
        4,
        "health.targets[2]",
        "target :: is the unspecified address: not usable as a target",
    ),
    (
        "health target a name",
        LINK + "health: {targets: [example.com]}\n",
        3,
        "health.targets[1]",
        "target 'example.com' is not an IP address",
    ),
    ("health target zone", LINK + "health: {targets: [fe80::1%eth1]}\n", 3, "health.targets[1]", "zone"),
    (
        "health targets a mapping",
        LINK + "health: {targets: {a: 1}}\n",
        3,
        "health.targets",
        "target must be an address or a list of addresses, not a mapping",
    ),
    (
        "health interval 0",
        LINK + "health:\n  interval: 0\n",
        4,
        "health.interval",
        "0 s is out of range: more than 0, at most 60",
    ),
    ("health interval 61", LINK + "health: {interval: 61}\n", 3, "health.interval", "61 s is out of range"),
    (
        "health interval string",
        LINK + "health: {interval: '0.1'}\n",
        3,
        "health.interval",
        "expected a number of seconds, not the string '0.1'",
    ),
    ("health interval bool", LINK + "health: {interval: yes}\n", 3, "health.interval", "not the boolean"),
    (
        "link health down_after 0",
        LINK + "    health:\n      down_after: 0.0\n",
        4,
        "links[1].health.down_after",
        "0 s is out of range: more than 0, at most 600",
    ),
    ("health down_after 601", LINK + "health: {down_after: 601}\n", 3, "health.down_after", "at most 600"),
    (
        "health up_after -1",
        LINK + "health: {up_after: -1}\n",
        3,
        "health.up_after",
        "-1 s is out of range: 0 to 3600",
    ),
    ("health hold_down too long", LINK + "health: {hold_down: 86401}\n", 3, "health.hold_down", "0 to 86400"),
    ("health hold_down empty", LINK + "health: {hold_down: }\n", 3, "health.hold_down", "not empty"),
    (
        "health down_after not after interval",
        LINK + "health:\n  interval: 0.1\n  down_after: 0.05\n",
        5,
        "health.down_after",
        "down_after 0.05 s must be longer than the probe interval 0.1 s",
    ),
    (
        "link health down_after equals interval",
        LINK + "    health:\n      down_after: 1\n      interval: 1.0\n",
        4,
        "links[1].health.down_after",
        "down_after 1 s must be longer than the probe interval 1 s",
    ),
    (
        "health silent_targets 0",
        LINK + "health: {silent_targets: 0}\n",
        3,
        "health.silent_targets",
        "silent_targets 0 is too few: give 1 or more",
    ),
    (
        "health silent_targets quoted",
        LINK + "health: {silent_targets: '2'}\n",
        3,
        "health.silent_targets",
        "write it without quotes",
    ),
    (
        "health silent_targets float",
        LINK + "health: {silent_targets: 1.5}\n",
        3,
        "health.silent_targets",
        "1.5",
    ),
    (
        "health silent_targets huge",
        LINK + "health: {silent_targets: " + "9" * 5000 + "}\n",
        3,
        "health.silent_targets",
        "more than any list",
    ),
    (
        "health silent_targets over targets",
        LINK + "health:\n  targets: [192.0.2.1, 192.0.2.2]\n  silent_targets: 3\n",
        5,
        "health.silent_targets",
        "silent_targets 3 is more than the 2 targets given",
    ),
    (
        "health enabled not bool",
        LINK + "health: {enabled: 1}\n",
        3,
        "health.enabled",
        "must be true or false",
    ),
    (
        "health brief example: link interval over inherited down_after",
        text(
            "health:",
            "  targets: [198.51.100.7, 203.0.113.9]",
            "  interval: 0.1",
            "  down_after: 0.8",
            "  silent_targets: 2",
            "links:",
            "  - interface: eth1",
            "  - interface: wwan0",
            "    health: {targets: [203.0.113.53], interval: 1}",
        ),
        8,
        "links[2].health",
        "down_after 0.8 s (from health) must be longer than the probe interval 1 s (set here)",
    ),
    (
        "health top interval over default down_after",
        "links:\n  - interface: eth1\nhealth: {targets: [192.0.2.1], interval: 2}\n",
        2,
        "links[1].health",
        f"down_after {HEALTH_DEFAULTS.down_after:g} s (the default) must be longer than "
        "the probe interval 2 s (from health)",
    ),
    (
        "health silent_targets over the link's targets",
        text(
            "links:",
            "  - interface: eth1",
            "  - interface: eth2",
            "    health:",
            "      targets: [192.0.2.53]",
            "health: {targets: [192.0.2.1, 192.0.2.2], silent_targets: 2}",
        ),
        3,
        "links[2].health",
        "silent_targets 2 (from health) is more than the 1 target (set here)",
    ),
    (
        "health silent_targets over the inherited targets",
        "links:\n  - interface: eth1\n    health: {silent_targets: 3}\nwatchdog: {test_ips: [192.0.2.1]}\n",
        2,
        "links[1].health",
        "silent_targets 3 (set here) is more than the 1 target (from watchdog)",
    ),
    # tiers, metered_tier, require_full_connectivity, hooks_dir, flush_lower_tiers
    ("tier 0", LINK + "    tier: 0\n", 3, "links[1].tier", "tier 0 is out of range: give 1 to 5"),
    ("tier 6", LINK + "    tier: 6\n", 3, "links[1].tier", "tier 6 is out of range: give 1 to 5"),
    (
        "tier string",
        LINK + '    tier: "2"\n',
        3,
        "links[1].tier",
        "tier must be a whole number from 1 to 5, not the string '2': write it without quotes",
    ),
    ("tier true", LINK + "    tier: true\n", 3, "links[1].tier", "from 1 to 5, not the boolean 'true'"),
    ("tier float", LINK + "  - interface: eth2\n    tier: 2.0\n", 4, "links[2].tier", "not the number '2.0'"),
    ("tier empty", LINK + "    tier:\n", 3, "links[1].tier", "not empty"),
    ("tier list", LINK + "    tier: [1]\n", 3, "links[1].tier", "not a list"),
    ("tier octal", LINK + "    tier: 0o3\n", 3, "links[1].tier", "not the string '0o3'"),
    ("tier hex", LINK + "    tier: 0x2\n", 3, "links[1].tier", "whole number from 1 to 5, not '0x2'"),
    ("tier huge", LINK + "    tier: " + "9" * 5000 + "\n", 3, "links[1].tier", "is out of range"),
    (
        "tier duplicate key",
        LINK + "    tier: 1\n    weight: 2\n    tier: 2\n",
        5,
        "links[1].tier",
        "duplicate key 'tier' (first given at line 3)",
    ),
    (
        "tier unknown key",
        LINK + "    teir: 2\n",
        3,
        "links[1].teir",
        "unknown key 'teir': did you mean 'tier'?",
    ),
    ("tiers unknown key", LINK + "    tiers: 2\n", 3, "links[1].tiers", "did you mean 'tier'?"),
    (
        "seed tiers columns",
        SEED3 + "TIERS=' 1 2'\n",
        2,
        "TIERS",
        "TIERS has 2 columns but WANIFACE has 3",
    ),
    ("seed tier 0", SEED3 + "WEIGHTS='1 1 1'\nTIERS='1 - 0'\n", 3, "TIERS[3]", "tier 0 is out of range"),
    ("seed tier 6", SEED3 + "TIERS='6 - -'\n", 2, "TIERS[1]", "tier 6 is out of range: give 1 to 5"),
    ("seed tier word", SEED3 + "TIERS='1 two 1'\n", 2, "TIERS[2]", "whole number from 1 to 5, not 'two'"),
    ("seed tier float", SEED3 + "TIERS='1 1 1.5'\n", 2, "TIERS[3]", "not '1.5'"),
    ("seed tier variable typo", SEED3 + "TIER='1 1 1'\n", 2, "TIER", "did you mean 'TIERS'?"),
    (
        "seed tiers twice",
        SEED3 + "TIERS='1 1 1'\nTIERS='2 2 2'\n",
        3,
        "TIERS",
        "TIERS is assigned twice (first at line 2)",
    ),
    (
        "metered_tier 6",
        LINK + "metered_tier: 6\n",
        3,
        "metered_tier",
        "metered_tier 6 is out of range: give 0 to 5",
    ),
    ("metered_tier -1", LINK + "metered_tier: -1\n", 3, "metered_tier", "metered_tier -1 is out of range"),
    ("metered_tier bool", LINK + "metered_tier: no\n", 3, "metered_tier", "not the boolean 'no'"),
    ("metered_tier string", LINK + "metered_tier: '2'\n", 3, "metered_tier", "write it without quotes"),
    ("metered_tier float", LINK + "metered_tier: 1.5\n", 3, "metered_tier", "not the number '1.5'"),
    ("metered_tier empty", LINK + "metered_tier:\n", 3, "metered_tier", "from 0 to 5, not empty"),
    ("metered_tier typo", LINK + "metered_teir: 2\n", 3, "metered_teir", "did you mean 'metered_tier'?"),
    (
        "require_full_connectivity string",
        LINK + "require_full_connectivity: 'true'\n",
        3,
        "require_full_connectivity",
        "must be true or false, not the string 'true'",
    ),
    (
        "require_full_connectivity number",
        "links:\n  - interface: eth1\n\nrequire_full_connectivity: 1\n",
        4,
        "require_full_connectivity",
        "must be true or false, not the number '1'",
    ),
    (
        "require_full_connectivity typo",
        LINK + "require_full_conectivity: true\n",
        3,
        "require_full_conectivity",
        "did you mean 'require_full_connectivity'?",
    ),
    (
        "flush_lower_tiers empty",
        LINK + "flush_lower_tiers:\n",
        3,
        "flush_lower_tiers",
        "must be true or false, not empty",
    ),
    (
        "flush_lower_tiers typo",
        LINK + "flush_lower_tier: false\n",
        3,
        "flush_lower_tier",
        "did you mean 'flush_lower_tiers'?",
    ),
    (
        "flush_lower_tiers duplicate",
        LINK + "flush_lower_tiers: false\nflush_lower_tiers: true\n",
        4,
        "flush_lower_tiers",
        "duplicate key 'flush_lower_tiers' (first given at line 3)",
    ),
    (
        "hooks_dir relative",
        LINK + "hooks_dir: etc/wanhooks/hooks.d\n",
        3,
        "hooks_dir",
        "hooks_dir must be an absolute path (starting with '/'), not 'etc/wanhooks/hooks.d'",
    ),
    (
        "hooks_dir empty string",
        LINK + "hooks_dir: ''\n",
        3,
        "hooks_dir",
        "absolute path (starting with '/'), not ''",
    ),
    ("hooks_dir tilde", LINK + "hooks_dir: ~/hooks\n", 3, "hooks_dir", "not '~/hooks'"),
    ("hooks_dir null", LINK + "hooks_dir: ~\n", 3, "hooks_dir", "hooks_dir must be a string, not empty"),
    ("hooks_dir number", LINK + "hooks_dir: 42\n", 3, "hooks_dir", "not the number '42': put it in quotes"),
    ("hooks_dir list", LINK + "hooks_dir: [/a, /b]\n", 3, "hooks_dir", "must be a string, not a list"),
    ("hooks_dir NUL", LINK + 'hooks_dir: "/etc/\\0hooks"\n', 3, "hooks_dir", "must not contain a NUL"),
    (
        "hooks_dir newline",
        LINK + "\n" + 'hooks_dir: "/etc/hooks\\nx"\n',
        4,
        "hooks_dir",
        "hooks_dir must not contain a newline",
    ),
    (
        "hooks_dir folded newline",
        LINK + "hooks_dir: |\n  /etc/hooks.d\n",
        3,
        "hooks_dir",
        "must not contain a newline",
    ),
    (
        "hooks_dir too long",
        LINK + "hooks_dir: /" + "d" * 4096 + "\n",
        3,
        "hooks_dir",
        "hooks_dir is 4097 characters long: at most 4096",
    ),
    ("hooks_dir surrogate", LINK + 'hooks_dir: "/\\ud800"\n', 3, "hooks_dir", "is not valid Unicode text"),
    ("hooks_dir typo", LINK + "hook_dir: /x\n", 3, "hook_dir", "did you mean 'hooks_dir'?"),
    (
        "health and watchdog",
        LINK + "watchdog:\n  test_ips: [192.0.2.1]\nhealth:\n  interval: 1\n",
        5,
        "health",
        "watchdog: is already given at line 3: give health:, watchdog: is the 2011 script's form",
    ),
    (
        "watchdog and health",
        "health: {}\n" + LINK + "watchdog: {enabled: false}\n",
        4,
        "watchdog",
        "health: is already given at line 1: give health:",
    ),
]


@pytest.mark.parametrize(
    ("content", "line", "key", "message"),
    [case[1:] for case in MALFORMED],
    ids=[case[0] for case in MALFORMED],
)
def test_malformed(content: str | bytes, line: int, key: str, message: str) -> None:
    err = error_of(content)
    assert (err.line, err.key) == (line, key), str(err)
    assert message in err.message, str(err)
    assert str(err) == f"test.conf:{line}: {key}: {err.message}"
    assert "\n" not in str(err)


def test_malformed_cases_are_distinct() -> None:
    ids = [case[0] for case in MALFORMED]
    assert len(set(ids)) == len(ids) >= 20


def test_error_stays_on_one_line() -> None:
    err = error_of(b"links:\n  - interface: 'eth0\\n\\rx'\n".replace(b"\\n\\r", b"\xe2\x80\xa8"))
    assert "\n" not in str(err) and "\u2028" not in str(err)
    assert ConfigError("a\nb", 1, "k", "m\nn").__str__() == "a\\nb:1: k: m\\nn"


def test_huge_file_is_refused() -> None:
    err = error_of(b"#" * (1024 * 1024 + 1))
    assert (err.line, err.key) == (0, "")
    assert "larger than" in err.message


# --------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(caught.value) == f"{path}:0: : no such file"


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a directory"):
        load_config(str(tmp_path))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("links: [{interface: eth0}]\n")
    path.chmod(0)
    with pytest.raises(ConfigError, match="permission denied"):
        load_config(str(path))


def test_permission_denied(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("wanhooks.config.load.open", refuse, raising=False)
    with pytest.raises(ConfigError) as caught:
        load_config("/etc/wanhooks/wanhooks.yaml")
    assert str(caught.value) == "/etc/wanhooks/wanhooks.yaml:0: : permission denied"


def test_load_reports_the_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("links:\n  - interface: eth1\n    weight: 0\n")
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value).startswith(f"{path}:3: links[1].weight: weight 0 is not allowed")


# --------------------------------------------------------------------------
# Hostile input: nothing but ConfigError, ever
# --------------------------------------------------------------------------

FRAGMENTS = [
    "links:",
    "\n",
    "\n  - ",
    "interface: ",
    "weight: ",
    "gateway: ",
    "network: ",
    "balance: ",
    "group: ",
    "watchdog:",
    "test_ips: ",
    "enabled: ",
    "eth1",
    "'wl*'",
    "2",
    "0",
    "256",
    "true",
    "~",
    "198.51.100.1",
    "198.51.100.0/24",
    "fe80::1",
    "2001:db8::/64",
    "[",
    "]",
    "{",
    "}",
    ", ",
    "&a ",
    "*a",
    "!!str ",
    "#",
    " ",
    "!!bool ",
    "!!int ",
    "!!float ",
    "WANIFACE=",
    "GATEWAYS=",
    "WEIGHTS=",
    "NETWORKS=",
    "TESTIPS=",
    "WATCHDOG=",
    '"',
    "'",
    "$",
    "-",
    "export ",
    "health:",
    "health: {",
    "targets: ",
    "interval: ",
    "down_after: ",
    "up_after: ",
    "silent_targets: ",
    "0.5",
    "1e-05",
    "1.0e-05",
    "tier: ",
    "metered_tier: ",
    "require_full_connectivity: ",
    "hooks_dir: ",
    "flush_lower_tiers: ",
    "TIERS=",
    "/etc/h",
    "5",
    "6",
    "pins:",
    "  - {",
    "to: ",
    "from: ",
    "proto: tcp",
    "proto: ",
    "port: 80-81",
    "port: ",
    "link: w1",
    "tier: 2",
    "when_down: fail",
    "when_down: ",
    "delegated: ",
    "fd00:1::/48",
    "::/0",
    "tunnel_mark: ",
    "0xca6c",
    "nat: masquerade",
    "nat66: ",
    "sticky: ",
    "mss_clamp: ",
    "true",
    "}",
]


def _survives(content: str | bytes) -> None:
    try:
        config = parse_config(content, "fuzz")
    except ConfigError as err:
        assert "\n" not in str(err)
        return
    assert comparable(parse_config(to_yaml(config), "fuzz")) == comparable(config)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes(content: bytes) -> None:
    _survives(content)


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=200))
def test_random_text(content: str) -> None:
    _survives(content)


@settings(max_examples=2000, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=40).map("".join))
def test_random_config_like_text(content: str) -> None:
    _survives(content)


@pytest.mark.parametrize(
    ("value", "listen"),
    [("true", ("127.0.0.1", 9737)), ("false", None), ('"100.64.0.1:9100"', ("100.64.0.1", 9100)),
     ('"[::1]:9737"', ("::1", 9737)), ('"[fd00::1]:9737"', ("fd00::1", 9737))],
)  # fmt: skip
def test_metrics_listen(value: str, listen: tuple[str, int] | None) -> None:
    config = parse_config(f"links: [{{interface: eth0}}]\nmetrics: {value}\n", "m.yaml")
    assert config.metrics == listen
    assert parse_config(to_yaml(config), "m.yaml").metrics == listen


@pytest.mark.parametrize("value", ['"localhost:9737"', '"127.0.0.1"', '"127.0.0.1:99999"', "9737"])
def test_bad_metrics_listen_is_located(value: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"links: [{{interface: eth0}}]\nmetrics: {value}\n", "m.yaml")
    assert caught.value.key == "metrics" and caught.value.line == 2


@pytest.mark.parametrize(
    "value", ["0.0.0.0:9737", '"0.0.0.0:9737"', '"[::]:9737"', '"[0::0]:9100"', '"[::ffff:0.0.0.0]:9737"']
)
def test_metrics_on_every_address_is_refused(value: str) -> None:
    # the endpoint shows the routing state to anyone who can reach it: no wildcard
    with pytest.raises(ConfigError) as caught:
        parse_config(f"links: [{{interface: eth0}}]\nmetrics: {value}\n", "m.yaml")
    err = caught.value
    assert (err.path, err.line, err.key) == ("m.yaml", 2, "metrics")
    assert "every address" in err.message and "give a specific address" in err.message
    assert str(err).startswith("m.yaml:2: metrics: ")


# --------------------------------------------------------------------------
# Delegated prefixes: overlap detection on large inputs
# --------------------------------------------------------------------------


def _overlap_pairwise(links: tuple[LinkConfig, ...]) -> tuple[int, str] | None:
    """The check as it was (pairwise, quadratic): the reference the fast one must agree with."""
    seen: list[tuple[N6, str]] = []
    for index, entry in enumerate(links, 1):
        for prefix in entry.delegated:
            for other, owner in seen:
                if prefix.overlaps(other):
                    return index, f"{prefix} overlaps {other} ({owner})"
            seen.append((prefix, entry.interface))
    return None


def _delegated_yaml(groups: list[list[str]]) -> str:
    lines = ["links:"]
    for i, prefixes in enumerate(groups, 1):
        lines.append(f"  - interface: w{i}")
        if prefixes:
            lines.append("    delegated: [" + ", ".join(f"'{p}'" for p in prefixes) + "]")
    return "\n".join(lines) + "\n"


def _overlap_of(groups: list[list[str]]) -> tuple[int, str] | None:
    try:
        parse_config(_delegated_yaml(groups), "d.yaml")
    except ConfigError as err:
        assert err.key.endswith("].delegated") and err.path == "d.yaml", str(err)
        return int(err.key[len("links[") : -len("].delegated")]), err.message
    return None


def _thousands() -> list[list[str]]:
    """3,000 disjoint prefixes: a link of /48s, one of /56s, one of /64s."""
    return [
        [f"fd00:{k:x}::/48" for k in range(1, 1001)],
        [f"fd01:{k:x}:100::/56" for k in range(1, 1001)],
        [f"fd02:0:0:{k:x}::/64" for k in range(1, 1001)],
    ]


def test_thousands_of_disjoint_delegated_prefixes_load() -> None:
    config = parse_config(_delegated_yaml(_thousands()), "d.yaml")
    assert sum(len(link.delegated) for link in config.links) == 3000


@pytest.mark.parametrize(
    ("where", "extra", "expected"),
    [
        (2, "fd00:3e8::/64", (3, "fd00:3e8::/64 overlaps fd00:3e8::/48 (w1)")),  # inside w1's last /48
        (0, "fd02::/48", (3, "fd02:0:0:1::/64 overlaps fd02::/48 (w1)")),  # holds all of w3's, earlier
        (1, "fd00:1f4::/48", (2, "fd00:1f4::/48 overlaps fd00:1f4::/48 (w1)")),  # the same prefix
        (2, "fd01:3e8:100::/48", (3, "fd01:3e8:100::/48 overlaps fd01:3e8:100::/56 (w2)")),  # holds w2's last
        (2, "fd03::/48", None),  # beside them all
    ],
)
def test_an_overlap_among_thousands_is_found_and_named(
    where: int, extra: str, expected: tuple[int, str] | None
) -> None:
    groups = _thousands()
    groups[where].append(extra)
    assert _overlap_of(groups) == expected


def test_the_first_overlap_in_file_order_is_the_one_named() -> None:
    groups = _thousands()
    groups[2].insert(500, "fd01:1:100::/56")  # the same as w2's first: this one is named,
    groups[2].append("fd01::/32")  # not this later one, though it holds all of w2's
    assert _overlap_of(groups) == (3, "fd01:1:100::/56 overlaps fd01:1:100::/56 (w2)")


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.lists(
            st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from([16, 46, 47, 48, 56, 64])),
            max_size=8,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_overlap_detection_agrees_with_the_pairwise_check(groups: list[list[tuple[int, int, int]]]) -> None:
    # few distinct bits at two levels and mixed lengths: overlaps nested, equal and side by side
    texts = [
        [
            str(N6(((0xFD00 << 112) | (high << 80) | (low << 72), length), strict=False))
            for high, low, length in g
        ]
        for g in groups
    ]
    links = tuple(
        LinkConfig(interface=f"w{i}", delegated=tuple(N6(t) for t in prefixes))
        for i, prefixes in enumerate(texts, 1)
    )
    assert _overlap_of(texts) == _overlap_pairwise(links)


@pytest.mark.parametrize(
    ("text", "timers"),
    [
        ("", None),
        ("resilient: {unbalanced_timer: 0}\n", (1, 0)),
        ("sticky: false\nresilient: {idle_timer: 2}\n", (2, 30)),  # the other from sticky's default
        ("resilient: {idle_timer: 7, unbalanced_timer: 60}\nsticky: false\n", (7, 60)),
    ],
)
def test_resilient_timers(text: str, timers: tuple[int, int] | None) -> None:
    config = parse_config("links: [{interface: eth0}]\n" + text, "x.yaml")
    assert config.resilient_timers == timers
    assert parse_config(to_yaml(config), "y.yaml").resilient_timers == timers


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("resilient: 5\n", "x.yaml:2: resilient: resilient must be a mapping"),
        ("resilient: {idle_timer: 0}\n", "x.yaml:2: resilient.idle_timer: idle_timer 0 is out of range"),
        ("resilient: {unbalanced: 3}\n", "x.yaml:2: resilient.unbalanced: unknown key"),
        ("resilient: {unbalanced_timer: 1.5}\n", "unbalanced_timer must be a whole number"),
    ],
)
def test_resilient_timers_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("links: [{interface: eth0}]\n" + text, "x.yaml")
    assert message in str(caught.value)


def test_weight_auto_per_link_and_as_the_top_level_default() -> None:
    text = """\
weight: auto
links:
  - {interface: fibre, capacity: 100mbit}
  - {interface: lte, weight: 3}
  - {interface: adsl, capacity: {down: 20.5mbit, up: 1mbit}}
  - {interface: wl0, weight: auto}
  - {interface: sat, capacity: 1.2345678gbit}
"""
    config = parse_config(text, "x.yaml")
    got = {link.interface: (link.auto_weight, link.weight, link.capacity) for link in config.links}
    assert got["fibre"][0] and got["fibre"][2] is not None and got["fibre"][2].down_bps == 100e6
    assert got["lte"][:2] == (False, 3)  # its own weight wins over the default
    adsl = got["adsl"][2]
    assert adsl is not None and (adsl.down_bps, adsl.up_bps) == (20.5e6, 1e6)
    assert got["wl0"][0] and got["wl0"][2] is None
    again = parse_config(to_yaml(config), "y.yaml")
    assert [(x.auto_weight, x.weight, x.capacity) for x in again.links] == list(got.values())
    numbered = parse_config("weight: 3\nlinks: [{interface: a}, {interface: b, weight: 1}]\n", "x.yaml")
    assert [link.weight for link in numbered.links] == [3, 1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "links:\n  - {interface: a, capacity: 20mbit}\n",
            "x.yaml:2: links[1].capacity: capacity is read only with weight: auto",
        ),
        (
            "links:\n  - {interface: a, weight: auto, capacity: 20mbps}\n",
            "x.yaml:2: links[1].capacity: capacity must be a rate such as 20mbit",
        ),
        (
            "links:\n  - interface: a\n    weight: auto\n    capacity: {down: 0kbit}\n",
            "x.yaml:4: links[1].capacity.down: capacity '0kbit' is out of range",
        ),
        (
            "links:\n  - {interface: a, weight: auto, capacity: {upload: 1mbit}}\n",
            "links[1].capacity.upload: unknown key",
        ),
        (
            "links:\n  - {interface: a, weight: auto, capacity: {}}\n",
            "x.yaml:2: links[1].capacity: capacity gives no rate",
        ),
        (
            "weight: fast\nlinks: [{interface: a}]\n",
            "x.yaml:1: weight: weight must be an integer from 1 to 256, or auto",
        ),
    ],
)
def test_weight_auto_and_capacity_refused(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "x.yaml")
    assert message in str(caught.value)


def test_a_links_nat_address_is_read_written_and_checked() -> None:
    config = parse_config(text("links:", "  - {interface: w1, nat_address: 198.51.100.10}"), "t.yaml")
    assert config.links[0].nat_address == A4("198.51.100.10")
    assert comparable(parse_config(to_yaml(config), "back.yaml")) == comparable(config)
    err = error_of(text("links:", "  - interface: w1", "    nat_address: 2001:db8::1"))
    assert (err.line, err.key) == (3, "links[1].nat_address") and "IPv6" in str(err)
    err = error_of(text("links:", "  - interface: w1", "    nat_address: nowhere"))
    assert (err.line, err.key) == (3, "links[1].nat_address") and "not an IP address" in str(err)
