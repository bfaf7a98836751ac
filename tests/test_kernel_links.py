"""Kinds of links and the ways they come and go, against the real kernel (root only)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable

import pytest
from conftest import Router

from wanhooks import constants as c
from wanhooks.lab import SERVER4, Lab

pytestmark = pytest.mark.kernel
Holder = Callable[[str], subprocess.Popen[str]]

THREE = """\
links:
  - {interface: w1, gateway: [100.64.1.1, "fe80::1"]}
  - {interface: w2, weight: 2, gateway: [100.64.2.1, "fe80::1"]}
  - {interface: w3, gateway: [100.64.3.1, "fe80::1"]}
group: GROUP
"""


def ifindex(lab: Lab, name: str) -> int:
    return int(lab.ip_json(lab.router, "link", "show", "dev", name)[0]["ifindex"])


def test_without_cap_net_admin_apply_says_so_and_changes_nothing(router: Router) -> None:
    lab = router.lab
    router.write_config(THREE.replace("GROUP", "auto"))
    before = router.snapshot()
    argv = ["setpriv", "--bounding-set=-all", "--inh-caps=-all", sys.executable, "-m", "wanhooks"]
    proc = lab.ns_exec(lab.router, [*argv, "-c", str(router.config), "apply"], check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "wanhooks apply: needs root (CAP_NET_ADMIN) to change routing"
    assert router.snapshot() == before


def test_a_point_to_point_tun_link_gets_a_device_only_nexthop(router: Router, hold_tun: Holder) -> None:
    lab = router.lab
    hold_tun("tun7")
    lab.r(["ip", "addr", "add", "100.80.0.2", "peer", "100.80.0.1/32", "dev", "tun7"])
    lab.r(["ip", "link", "set", "tun7", "up"])
    router.write_config("links:\n  - {interface: w1, gateway: 100.64.1.1}\n  - interface: 'tun*'\n")
    router.wanhooks("apply")
    index = ifindex(lab, "tun7")
    nexthops = lab.ip(lab.router, "nexthop", "show")
    assert re.search(rf"id {c.link_nexthop_id(4, index)} dev tun7 scope \w+ proto 87", nexthops), nexthops
    assert "via" not in next(line for line in nexthops.splitlines() if "tun7" in line)
    route = lab.ip(lab.router, "route", "get", SERVER4, "from", "100.80.0.2")
    assert "dev tun7" in route and f"table {c.link_table(index)}" in route
    status = json.loads(router.wanhooks("status", "--json").stdout)
    tun = next(link for link in status["links"] if link["name"] == "tun7")
    assert tun["ipv4"]["in_balance"] and tun["ipv4"]["gateway"] is None
    assert (
        "no changes" not in router.wanhooks("apply").stdout
        and "nothing to change" in router.wanhooks("apply").stdout
    )


def _rx_packets(lab: Lab, ns: str, dev: str) -> int:
    return int(lab.ip_json(ns, "-s", "link", "show", "dev", dev)[0]["stats64"]["rx"]["packets"])


def test_a_tunnel_over_a_wan_joins_carries_its_share_and_leaves(router: Router) -> None:
    """A tun pair joined by a UDP relay (what WireGuard/OpenVPN are to the kernel): the router's
    end marks its own datagrams 0xca6c, and that mark must take them by main's route (w1),
    never into the group the tunnel itself is a member of."""
    lab = router.lab
    server = lab.spawn(
        lab.internet, "tun-relay", "--name", "vpn0", "--listen", "203.0.113.20:5555", "--seconds", "60"
    )
    assert server.stdout is not None and server.stdout.readline().strip() == "ready"
    lab.ns_exec(lab.internet, ["ip", "addr", "add", "100.80.0.1", "peer", "100.80.0.2/32", "dev", "vpn0"])
    lab.ns_exec(lab.internet, ["ip", "link", "set", "vpn0", "up"])
    lab.set_main_default(1)  # what the network manager gave the host: the tunnel's underlay
    client = lab.spawn(
        lab.router, "tun-relay", "--name", "tun7", "--peer", "203.0.113.20:5555", "--mark", "0xca6c"
    )
    assert client.stdout is not None and client.stdout.readline().strip() == "ready"
    lab.r(["ip", "addr", "add", "100.80.0.2", "peer", "100.80.0.1/32", "dev", "tun7"])
    lab.r(["ip", "link", "set", "tun7", "up"])
    router.write_config(
        "links:\n  - {interface: w1, gateway: 100.64.1.1}\n  - {interface: w2, gateway: 100.64.2.1}\n"
        "  - {interface: tun7, tunnel_mark: 0xca6c}\n"
    )
    router.wanhooks("apply")
    tun_nh = c.link_nexthop_id(4, ifindex(lab, "tun7"))
    assert str(tun_nh) in lab.ip(lab.router, "nexthop", "show", "id", str(c.group_id(4)))
    assert "dev w1" in lab.ip(lab.router, "route", "get", "203.0.113.20", "mark", "0xca6c")
    assert "fwmark 0xca6c/0xffffff lookup main" in lab.ip(lab.router, "rule", "show")
    assert lab.ping(lab.router, SERVER4, bind="100.80.0.2", count=3)  # through the tunnel and back
    before = _rx_packets(lab, lab.internet, "vpn0")
    lab.send_udp_flows(lab.router, None, 300)
    via_tunnel = 300 - sum(lab.flows_per_link(4).values())  # weights 1:1:1, so about 100
    arrived = _rx_packets(lab, lab.internet, "vpn0") - before  # (a stray late echo may add one)
    assert 50 < via_tunnel < 150 and via_tunnel <= arrived <= via_tunnel + 3, (via_tunnel, arrived)
    # the relay dies, its device with it: the tunnel leaves and every flow takes a WAN
    client.kill()
    client.wait()
    time.sleep(0.2)
    router.wanhooks("apply")
    assert str(tun_nh) not in lab.ip(lab.router, "nexthop", "show")
    lab.reset_flows()
    lab.send_udp_flows(lab.router, None, 300, sport_base=30000)
    assert sum(lab.flows_per_link(4).values()) == 300
    server.terminate()


def test_a_tun_link_whose_daemon_dies_leaves_the_group(router: Router, hold_tun: Holder) -> None:
    lab = router.lab
    tun_holder = hold_tun("tun7")
    lab.r(["ip", "addr", "add", "100.80.0.2", "peer", "100.80.0.1/32", "dev", "tun7"])
    lab.r(["ip", "link", "set", "tun7", "up"])
    router.write_config("links:\n  - {interface: w1, gateway: 100.64.1.1}\n  - interface: 'tun*'\n")
    router.wanhooks("apply")
    table = c.link_table(ifindex(lab, "tun7"))
    tun_holder.kill()  # a non-persistent tun device goes with the process that held it
    tun_holder.wait()
    time.sleep(0.2)
    router.wanhooks("apply")
    status = json.loads(router.wanhooks("status", "--json").stdout)
    assert [link["name"] for link in status["links"]] == ["w1"]
    assert status["balance"]["ipv4"]["members"] == [{"link": "w1", "weight": 1}]
    assert f"lookup {table}" not in lab.ip(lab.router, "rule", "show")
    assert "nothing to change" in router.wanhooks("apply").stdout


def test_a_link_that_appears_later_joins_and_a_recreated_link_gets_fresh_ids(router: Router) -> None:
    lab = router.lab
    router.write_config(
        "links:\n  - {interface: 'w*', gateway: 100.64.9.1}\n  - {interface: w1, gateway: 100.64.1.1}\n"
    )
    router.wanhooks("apply")

    def make_w9() -> int:
        lab.r(["ip", "link", "add", "w9", "type", "veth", "peer", "name", "x9", "netns", lab.isp(1)])
        lab.r(["ip", "addr", "add", "100.64.9.2/24", "dev", "w9"])
        lab.r(["ip", "link", "set", "w9", "up"])
        lab.ns_exec(lab.isp(1), ["ip", "addr", "add", "100.64.9.1/24", "dev", "x9"])
        lab.ns_exec(lab.isp(1), ["ip", "link", "set", "x9", "up"])
        time.sleep(0.1)
        router.wanhooks("apply")
        return ifindex(lab, "w9")

    first = make_w9()
    assert f"lookup {c.link_table(first)}" in lab.ip(lab.router, "rule", "show")
    assert "via 100.64.9.1 dev w9" in lab.ip(lab.router, "nexthop", "show")
    assert lab.r(["sysctl", "-n", "net.ipv4.conf.w9.rp_filter"]).stdout.strip() == "2"
    lab.r(["ip", "link", "del", "w9"])
    router.wanhooks("apply")
    assert f"lookup {c.link_table(first)}" not in lab.ip(lab.router, "rule", "show")
    second = make_w9()
    assert second != first
    rules = lab.ip(lab.router, "rule", "show")
    assert f"lookup {c.link_table(second)}" in rules and f"lookup {c.link_table(first)}" not in rules
    assert lab.r(["sysctl", "-n", "net.ipv4.conf.w9.ignore_routes_with_linkdown"]).stdout.strip() == "1"
    assert "nothing to change" in router.wanhooks("apply").stdout


def test_onlink_gateway_learned_from_main_is_copied(router: Router) -> None:
    lab = router.lab
    router.write_config("links:\n  - interface: w1\n  - interface: w3\n")
    lab.set_main_default(1, 4)
    lab.r(["ip", "route", "add", "default", "via", "198.51.100.77", "dev", "w3", "onlink", "metric", "103"])
    router.wanhooks("apply")
    nexthops = lab.ip(lab.router, "nexthop", "show")
    assert re.search(r"via 198\.51\.100\.77 dev w3 .*onlink", nexthops), nexthops
    assert "nothing to change" in router.wanhooks("apply").stdout


@pytest.mark.parametrize("group", ["legacy", "hash-threshold", "resilient"])
def test_each_group_kind_follows_links_in_both_families_and_settles(router: Router, group: str) -> None:
    lab = router.lab
    router.write_config(THREE.replace("GROUP", group))
    router.wanhooks("apply")
    assert "nothing to change" in router.wanhooks("apply").stdout
    table = str(c.TABLE_BALANCE)

    def hops(family: int) -> int:
        if group == "legacy":
            text = lab.ip(lab.router, f"-{family}", "route", "show", "table", table)
            return text.count("nexthop via") or text.count("default via")
        members = [n for n in lab.ip_json(lab.router, "nexthop", "show") if "gateway" in n]
        return sum(1 for n in members if (":" in n["gateway"]) == (family == 6))

    assert hops(4) == 3 and hops(6) == 3
    lab.carrier_off(1)
    router.wanhooks("apply")
    assert hops(4) == 2 and hops(6) == 2
    assert "nothing to change" in router.wanhooks("apply").stdout
    lab.carrier_on(1)
    router.wanhooks("apply")
    assert hops(4) == 3 and hops(6) == 3
    assert "nothing to change" in router.wanhooks("apply").stdout
    lab.reset_flows()
    lab.send_udp_flows(lab.router, None, 400, family=6)
    assert all(n > 0 for n in lab.flows_per_link(6).values())


def test_status_json_matches_the_kernel(router: Router) -> None:
    lab = router.lab
    router.write_config(THREE.replace("GROUP", "auto"))
    router.wanhooks("apply")
    lab.carrier_off(3)
    router.wanhooks("apply")
    doc = json.loads(router.wanhooks("status", "--json").stdout)
    assert doc["schema"] == 2 and doc["in_sync"] and doc["group_kind"] == "resilient"
    links = {link["name"]: link for link in doc["links"]}
    for name in ("w1", "w2", "w3"):
        assert links[name]["index"] == ifindex(lab, name)
        assert links[name]["table"] == c.link_table(ifindex(lab, name))
    assert links["w2"]["weight"] == 2 and links["w2"]["ipv4"]["gateway"] == "100.64.2.1"
    assert links["w2"]["ipv6"]["gateway"] == "fe80::1" and links["w2"]["ipv4"]["addresses"] == ["100.64.2.2"]
    assert links["w1"]["state"] == "active" and links["w3"]["state"] == "excluded"
    assert links["w3"]["ipv4"]["reason"] == "no carrier"
    assert doc["balance"]["ipv4"]["members"] == [{"link": "w1", "weight": 1}, {"link": "w2", "weight": 2}]
    group = lab.ip(lab.router, "nexthop", "show", "id", str(c.NH_GROUP_V4))
    assert f"{c.link_nexthop_id(4, ifindex(lab, 'w2'))},2" in group
    text = router.wanhooks("status").stdout
    assert re.search(r"^w3\s+excluded\s+1 \(0%\)\s+100\.64\.3\.1, fe80::1\s+no carrier$", text, re.M), text


def test_cap_net_admin_and_cap_net_raw_are_all_it_needs(router: Router) -> None:
    """What the systemd unit grants (CapabilityBoundingSet=CAP_NET_ADMIN CAP_NET_RAW), for real:
    routing, sysctls, NAT and sticky marks, probes and the control socket all work with only
    those two, and every file it leaves is root's alone."""
    lab = router.lab
    router.write_config(
        "links:\n  - {interface: w1, gateway: 100.64.1.1}\n  - {interface: w2, gateway: 100.64.2.1}\n"
        "nat: masquerade\nhealth:\n  targets: [203.0.113.10]\n"
    )
    drop = ["setpriv", "--bounding-set=-all,+net_admin,+net_raw", "--no-new-privs"]
    caps = lab.ns_exec(lab.router, [*drop, "grep", "CapEff", "/proc/self/status"]).stdout.split()[1]
    assert int(caps, 16) == (1 << 12) | (1 << 13), caps  # CAP_NET_ADMIN, CAP_NET_RAW
    base = [
        *drop,
        sys.executable,
        "-m",
        "wanhooks",
        "-c",
        str(router.config),
        "--run-dir",
        str(router.run_dir),
    ]
    applied = lab.ns_exec(lab.router, [*base, "apply"], check=False)
    assert applied.returncode == 0, applied.stderr
    assert "table inet wanhooks" in lab.r(["nft", "list", "tables"]).stdout
    daemon = subprocess.Popen(
        ["ip", "netns", "exec", lab.router, *base, "run"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            status = json.loads(lab.ns_exec(lab.router, [*base, "status", "--json"]).stdout)
            health = [link["ipv4"].get("health") or {} for link in status["links"]]
            if status.get("daemon") and all(h.get("state") == "up" for h in health):
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"probes never came up with only the two capabilities: {status}")
        assert lab.ns_exec(lab.router, [*base, "link", "disable", "w2"], check=False).returncode == 0
    finally:
        daemon.terminate()
        out = daemon.communicate(timeout=10)[0]
    assert "Operation not permitted" not in out and "Permission denied" not in out, out
    for path in router.run_dir.iterdir():
        mode = path.stat().st_mode & 0o777
        assert path.stat().st_uid == 0 and mode & 0o077 == 0, (path, oct(mode))


def test_it_writes_nothing_outside_its_run_dir(router: Router) -> None:
    """The whole filesystem read-only (a private mount namespace: the host is untouched) but a
    tmpfs on the run dir: apply, the daemon and cleanup still do all their work."""
    lab = router.lab
    router.write_config(
        "links:\n  - {interface: w1, gateway: 100.64.1.1}\n  - {interface: w2, gateway: 100.64.2.1}\n"
        "nat: masquerade\nhealth:\n  targets: [203.0.113.10]\n"
    )
    router.run_dir.mkdir(exist_ok=True)
    wanhooks = f"{sys.executable} -m wanhooks -c {router.config} --run-dir {router.run_dir}"
    script = (
        f"mount --make-rprivate / && mount --rbind / / && mount -o remount,bind,ro / "
        # every other mount too, but the kernel's own (/proc/sys is where sysctls are written)
        "&& findmnt -rn -o TARGET | grep -vE '^/(proc|sys|dev)(/|$)|^/run/netns' "
        '| while read -r t; do mount -o remount,bind,ro "$t" 2>/dev/null || true; done '
        f"&& mount -t tmpfs -o mode=0700 tmpfs {router.run_dir} "
        f"&& ip netns exec {lab.router} {wanhooks} apply "
        f"&& (ip netns exec {lab.router} timeout -s TERM 3 {wanhooks} run; true) "
        f"&& ls {router.run_dir} && ip netns exec {lab.router} {wanhooks} cleanup"
    )
    proc = subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Read-only file system" not in proc.stderr, proc.stderr
    assert "round 1:" in proc.stderr and "sysctl-saved.json" in proc.stdout  # it did its work there
    assert "table inet wanhooks" not in lab.r(["nft", "list", "tables"]).stdout  # and cleaned up


def test_a_namespace_with_no_main_table_yet_is_read_not_refused(tmp_path: object) -> None:
    """A fresh namespace (lo down, no address) has no main table, and the kernel refuses a
    dump filtered to it (ENOENT): status reads it as empty instead of crashing."""
    netns = "whtest-bare"
    subprocess.run(["ip", "netns", "add", netns], check=True)
    try:
        config = f"{tmp_path}/wanhooks.yaml"
        with open(config, "w") as f:
            f.write('links:\n  - interface: "eth*"\n')
        argv = [sys.executable, "-m", "wanhooks", "-c", config, "--run-dir", f"{tmp_path}/run", "status"]
        proc = subprocess.run(["ip", "netns", "exec", netns, *argv], capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        assert "no interface matches the config" in proc.stdout and not proc.stderr
    finally:
        subprocess.run(["ip", "netns", "del", netns], check=False)
