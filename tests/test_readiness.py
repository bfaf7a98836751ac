"""What systemd hears (service/readiness.py): READY=1 once, when the kernel first matches the
plan or at the deadline anyway; STATUS= only when it changes; RELOADING=1 ... READY=1 pairs."""

from __future__ import annotations

import asyncio

from wanhooks.service.readiness import Readiness
from wanhooks.service.sd_notify import Notifier


class Recorder(Notifier):
    def __init__(self) -> None:
        super().__init__(None)
        self.sent: list[tuple[str, ...]] = []

    def notify(self, *lines: str) -> bool:
        self.sent.append(lines)
        return True


def test_ready_once_the_kernel_matches_and_status_only_when_it_changes() -> None:
    systemd = Readiness(notifier := Recorder())
    systemd.round_failed("round failed: EPERM")
    assert notifier.sent == [("STATUS=round failed: EPERM; retrying",)] and not systemd.ready
    systemd.round_ended("2 of 2 links balanced", "1 change refused")
    assert not systemd.ready and "not in sync: 1 change refused" in notifier.sent[-1][0]
    systemd.round_ended("2 of 2 links balanced", "")
    assert notifier.sent[-1] == ("READY=1", "STATUS=2 of 2 links balanced") and systemd.ready
    systemd.round_ended("2 of 2 links balanced", "")
    assert len(notifier.sent) == 3  # nothing new: nothing sent


def test_ready_anyway_at_the_deadline_says_what_failed() -> None:
    systemd = Readiness(notifier := Recorder())
    systemd.round_failed("round failed: ENOBUFS")
    systemd.anyway()
    assert (
        notifier.sent[-1][0] == "READY=1" and "up, not in sync: round failed: ENOBUFS" in notifier.sent[-1][1]
    )
    systemd.anyway()
    systemd.round_ended("1 of 2 links balanced", "")
    assert sum(lines.count("READY=1") for lines in notifier.sent) == 1


def test_a_reload_is_bracketed_and_a_refusal_shows_in_the_status_after() -> None:
    systemd = Readiness(notifier := Recorder())

    async def reload(refuse: bool) -> None:
        async with systemd.reloading():
            if refuse:
                systemd.refused("/etc/wanhooks/wanhooks.yaml:3: weight: must be 1..256")

    asyncio.run(reload(refuse=False))
    assert notifier.sent == []  # not ready yet: systemd has no service to reload
    systemd.round_ended("2 of 2 links balanced", "")
    asyncio.run(reload(refuse=True))
    first, last = notifier.sent[-2], notifier.sent[-1]
    assert first[0] == "RELOADING=1" and first[1].startswith("MONOTONIC_USEC=")
    assert last[0] == "READY=1" and "reload refused, the running config stays" in last[1]
