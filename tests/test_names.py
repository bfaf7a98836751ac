"""Interface names (plan/names.py): which ones wanhooks manages, and any text shown safely."""

from __future__ import annotations

import pytest

from wanhooks.plan.names import IFNAME_MAX, ifname_problem, printable_line, shown


@pytest.mark.parametrize("name", ["eth0", "enp3s0", "wlp2s0", "wwan0", "br-lan", "eth0.100", "usb0@x", "a+b"])
def test_real_uplink_names_are_managed(name: str) -> None:
    assert ifname_problem(name) is None


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("", "empty"),
        ("..", "not a valid interface name"),
        ("a/b", "must not contain '/'"),
        ("a b", "whitespace"),
        ("wl*", "must not contain '*'"),
        ('eth"0', "printable ASCII letters"),
        ("x" * (IFNAME_MAX + 1), f"at most {IFNAME_MAX}"),
    ],
)
def test_other_names_are_refused_saying_why(name: str, says: str) -> None:
    problem = ifname_problem(name)
    assert problem is not None and says in problem


def test_a_glob_may_use_glob_characters_where_allowed() -> None:
    assert ifname_problem("wl*", glob=True) is None and ifname_problem("usb[0-9]", glob=True) is None
    assert ifname_problem("wl;*", glob=True) is not None


def test_hostile_text_is_shown_on_one_printable_line() -> None:
    assert shown("eth0\n\x1b[31mred") == "eth0\\x0a\\x1b[31mred"
    assert shown("a\\b") == "a\\\\b"
    assert shown("x" * 50) == "x" * 40 + "..."
    assert printable_line("round 3: 2 changes") == "round 3: 2 changes"
    assert printable_line("bad\u202eevil") == "bad\\u202eevil"
