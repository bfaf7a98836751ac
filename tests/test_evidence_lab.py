"""Evidence of life against the real kernel and nft (root only): per link and family, the
packets of established connections that arrive from beyond the link's own prefix, and the
packets sent beyond it -- read over netlink as the daemon reads them.  What only the near
side sends (the gateway's own answers, ARP) and ICMP errors (ct state related) are no
evidence that the internet answers, and are not counted."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import Router

from wanhooks.lab import SERVER4

pytestmark = pytest.mark.kernel

CONFIG = """\
links:
  - {interface: w1, gateway: 100.64.1.1}
  - {interface: w2, gateway: 100.64.2.1}
"""
READ = (
    "import json; from wanhooks.kernel.linux import LinuxKernel; "
    "print(json.dumps({f'{link}/{family}': v for (link, family), v in LinuxKernel().evidence().items()}))"
)


def evidence(router: Router) -> dict[str, list[int]]:
    """(link/family) -> [heard, sent], as the daemon reads them, inside the router."""
    return dict(json.loads(router.lab.ns_exec(router.lab.router, [sys.executable, "-c", READ]).stdout))


def test_only_answers_from_beyond_the_link_count_as_evidence(router: Router) -> None:
    lab = router.lab
    router.write_config(CONFIG)
    router.wanhooks("apply")
    before = evidence(router)
    assert set(before) >= {"w1/4", "w2/4", "w1/6", "w2/6"}, before

    def ping(target: str, count: int) -> None:
        argv = ["ping", "-n", "-q", "-c", str(count), "-i", "0.05", "-W", "1", "-I", "100.64.1.2", target]
        lab.ns_exec(lab.router, argv)

    ping("100.64.1.1", 5)  # the gateway itself: the near side
    near = evidence(router)
    assert near["w1/4"] == before["w1/4"], (before, near)
    ping(SERVER4, 5)  # the internet, answering on an established (echo) connection
    far = evidence(router)
    assert far["w1/4"][0] - near["w1/4"][0] == 5 and far["w1/4"][1] - near["w1/4"][1] == 5, (near, far)
    assert far["w2/4"] == before["w2/4"]  # another link's evidence is its own
    # a UDP datagram to a closed port beyond: sent, and answered only by an ICMP error
    # (port unreachable: ct state related), which is no evidence
    lab.send_udp_flows(lab.router, SERVER4, 1, dport=9999, bind="100.64.1.2", sport_base=41000)
    error = evidence(router)
    assert error["w1/4"][0] == far["w1/4"][0] and error["w1/4"][1] == far["w1/4"][1] + 1, (far, error)
