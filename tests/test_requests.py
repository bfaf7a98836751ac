"""What control requests mean (service/requests.py): checked, turned into events or refused
with a reason; nothing from a request is trusted."""

from __future__ import annotations

from fakes import lab_config

from wanhooks.events import HookNotified, LinkCommand
from wanhooks.model import Overrides
from wanhooks.service.requests import Refused, hook_notice, link_command


def test_a_hooks_notice_becomes_an_event() -> None:
    event = hook_notice({"op": "notify", "source": "nm-dispatcher", "iface": "w1", "action": "dhcp4-change"})
    assert event == HookNotified(source="nm-dispatcher", iface="w1", action="dhcp4-change")
    assert hook_notice({"op": "notify"}) == HookNotified(source="unknown", iface="", action="changed")


def test_hostile_notices_are_refused_with_the_reason() -> None:
    bad_source = hook_notice({"source": "Evil Source!"})
    assert isinstance(bad_source, Refused) and "1-32 of a-z" in bad_source.error
    bad_iface = hook_notice({"source": "manual", "iface": "../../etc"})
    assert isinstance(bad_iface, Refused) and "refused" in bad_iface.logged
    bad_action = hook_notice({"source": "manual", "iface": "w1", "action": "$(reboot)"})
    assert isinstance(bad_action, Refused) and bad_action.error.startswith("unknown action")
    assert "\n" not in hook_notice({"action": "x\ny"}).logged  # type: ignore[union-attr]


def test_a_link_command_returns_the_overrides_it_leaves() -> None:
    outcome = link_command({"action": "disable", "name": "w2"}, lab_config(), Overrides())
    assert not isinstance(outcome, str)
    overrides, event = outcome
    assert "w2" in overrides.disabled and event == LinkCommand(action="disable", name="w2")
    again = link_command({"action": "enable", "name": "w2"}, lab_config(), overrides)
    assert not isinstance(again, str) and "w2" not in again[0].disabled


def test_a_link_command_names_what_is_wrong() -> None:
    unknown = link_command({"action": "disable", "name": "w9"}, lab_config(), Overrides())
    assert isinstance(unknown, str) and "w9" in unknown
    assert isinstance(link_command({"action": "explode", "name": "w1"}, lab_config(), Overrides()), str)
    assert isinstance(link_command({"action": "disable", "name": "a/b"}, lab_config(), Overrides()), str)
    # enable clears an override of a link no longer configured
    stale = Overrides(disabled=frozenset({"w9"}))
    cleared = link_command({"action": "enable", "name": "w9"}, lab_config(), stale)
    assert not isinstance(cleared, str) and "w9" not in cleared[0].disabled
