"""Runs inside a lab's router namespace for tests/test_mirror_lab.py: a MirroredKernel
driven one command per line on stdin, one JSON answer per line on stdout.

  converge   a round (plan from the mirror, write, as the daemon does); how many full
             dumps the kernel has taken so far
  check      differences between the mirror and a full dump, as JSON (none: [])
  corrupt    drop one owned rule from the mirror, as a bug in its rules would
  confirm    a confirming full dump as the periodic check does; the differences it reported
"""

from __future__ import annotations

import ipaddress
import json
import sys
import time

from wanhooks.kernel.linux import LinuxKernel
from wanhooks.kernel.mirror import differences
from wanhooks.kernel.mirrored import MirroredKernel
from wanhooks.model import Config, LinkConfig
from wanhooks.reconcile.round import converge

CONFIG = Config(
    links=tuple(
        LinkConfig(
            f"w{i}",
            weight=i,
            gateway4=ipaddress.IPv4Address(f"100.64.{i}.1"),
            gateway6=ipaddress.IPv6Address("fe80::1"),
        )
        for i in (1, 2, 3, 9)  # w9 comes and goes (the test makes it)
    )
)


def check(kernel: MirroredKernel) -> list[str]:
    """The mirror against a full dump, until they agree or 3 s have passed: the kernel
    changes a link's flags at once but tells of it when its link watch runs (up to a
    second later), and the mirror can only follow what it is told."""
    deadline = time.monotonic() + 3.0
    while True:
        mirrored = (kernel.observe(), kernel.dump_owned())
        found = differences(mirrored, (LinuxKernel.observe(kernel), LinuxKernel.dump_owned(kernel)))
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def main() -> None:
    run_dir = sys.argv[1]
    kernel = MirroredKernel()
    print(json.dumps("ready"), flush=True)
    for line in sys.stdin:
        command = line.strip()
        if command == "converge":
            report = converge(CONFIG, kernel, run_dir).report
            answer: object = {
                "done": len(report.done),
                "failed": [str(r) for r in report.failed],
                "full_dumps": kernel.confirms,  # the rounds read the mirror, not dumps
            }
        elif command == "check":
            answer = check(kernel)
        elif command == "corrupt":
            kernel.observe()
            rule = sorted(kernel.mirror.rules)[0]
            kernel.mirror.rules.discard(rule)
            kernel.mirror._owned = None
            answer = repr(rule)
        elif command == "confirm":
            kernel.drain()
            kernel.request_confirm("the test's check", agree=True)
            answer = kernel.confirm()
        else:
            answer = f"unknown command {command!r}"
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    main()
