"""The Debian package, built from this checkout and installed into a throwaway Debian 12
whose PID 1 is a real systemd (tests/container.py) -- never on the host.

One container for the module, the tests in order: what an admin does on a new router.
It gets two links from namespaces of this test (two ISPs, each answering probes).
"""

from __future__ import annotations

import json
import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from container import Container, make_root, missing_tools

import wanhooks

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(bool(missing_tools()), reason=missing_tools() or "-"),
]

REPO = Path(__file__).resolve().parent.parent
ISPS = (("whpkg-isp1", "wan1", "203.0.113"), ("whpkg-isp2", "wan2", "198.51.100"))
TARGET = "100.64.0.7"  # on each ISP's loopback: the probes' target
CONFIG = f"""\
mode: daemon
links:
  - interface: wan1
    gateway: 203.0.113.1
  - interface: wan2
    gateway: 198.51.100.1
    weight: 2
health:
  targets: [{TARGET}]
  up_after: 0.3
"""
CONFIG_PATH = "/etc/wanhooks/wanhooks.yaml"


@pytest.fixture(scope="module")
def deb() -> Path:
    proc = subprocess.run(["bash", ".ci/dev", "deb"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    path = REPO / "dist" / f"wanhooks_{wanhooks.__version__}_all.deb"
    assert path.exists(), proc.stdout
    return path


@pytest.fixture(scope="module")
def box(deb: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Container]:
    root = tmp_path_factory.mktemp("package") / "bookworm"
    make_root(root)
    (root / "root" / deb.name).write_bytes(deb.read_bytes())
    container = Container(root)
    try:
        container.boot()
        for netns, wan, prefix in ISPS:
            subprocess.run(["ip", "netns", "add", netns], check=True)
            sh = f"""
                ip -n {netns} link add isp type veth peer name {wan} netns {container.leader}
                ip -n {netns} addr add {prefix}.1/24 dev isp
                ip -n {netns} addr add {TARGET}/32 dev lo
                ip -n {netns} link set lo up
                ip -n {netns} link set isp up
            """
            subprocess.run(["sh", "-ec", sh], check=True)
            container.sh(f"ip addr add {prefix}.2/24 dev {wan}; ip link set {wan} up")
        yield container
    finally:
        container.stop()
        for netns, _wan, _prefix in ISPS:
            subprocess.run(["ip", "netns", "del", netns], capture_output=True)


def _status(box: Container) -> dict[str, object]:
    doc = json.loads(box.run("wanhooks", "status", "--json").stdout)
    assert isinstance(doc, dict)
    return doc


def _wanhooks_rules(box: Container) -> list[str]:
    rules = box.run("ip", "-4", "rule", "show").stdout.splitlines()
    return [rule for rule in rules if not re.search(r"lookup (local|main|default)\s*$", rule)]


def test_lintian_reports_no_errors(deb: Path) -> None:
    proc = subprocess.run(["lintian", "--no-tag-display-limit", str(deb)], capture_output=True, text=True)
    errors = [line for line in proc.stdout.splitlines() if line.startswith("E:")]
    print(f"\nlintian: {proc.stdout.strip() or 'nothing to say'}")
    assert not errors, proc.stdout


def test_installs_from_the_archive_alone_and_runs_with_no_network(box: Container) -> None:
    # the container has no network at all: apt may not fetch anything.  A policy-rc.d that
    # says no (a chroot being built, an image): the service is enabled but not started
    box.sh("printf '#!/bin/sh\\nexit 101\\n' > /usr/sbin/policy-rc.d")
    box.run("apt-get", "install", "-y", f"/root/{box_deb_name()}", timeout=300)
    assert box.run("systemctl", "is-enabled", "wanhooks", check=False).stdout.strip() == "enabled"
    assert box.run("systemctl", "is-active", "wanhooks", check=False).stdout.strip() == "inactive"
    box.sh("printf '#!/bin/sh\\nexit 0\\n' > /usr/sbin/policy-rc.d")
    version = box.run("wanhooks", "--version").stdout.strip()
    assert version == f"wanhooks {wanhooks.__version__}"
    assert "OK" in box.run("wanhooks", "check").stdout  # the shipped config
    page = box.run("man", "-P", "cat", "wanhooks").stdout
    assert "wanhooks" in page and "apply" in page
    assert "links" in box.run("man", "-P", "cat", "wanhooks.yaml").stdout
    verify = box.run("systemd-analyze", "verify", "wanhooks.service", check=False)
    assert verify.returncode == 0 and "wanhooks" not in verify.stderr, verify.stderr
    security = box.run("systemd-analyze", "security", "--offline=yes", "wanhooks.service", check=False)
    level = re.findall(r"Overall exposure level for wanhooks.service: ([0-9.]+)", security.stdout)
    exposure = float(level[0])
    print(f"\nsystemd-analyze security --offline=yes: exposure {exposure}")
    assert exposure <= 2.5, security.stdout


def box_deb_name() -> str:
    return f"wanhooks_{wanhooks.__version__}_all.deb"


def test_the_service_is_active_only_once_the_kernel_matches_the_plan(box: Container) -> None:
    box.sh(f"cat > {CONFIG_PATH} <<'EOF'\n{CONFIG}EOF")
    box.run("systemctl", "restart", "wanhooks")  # Type=notify: returns once READY=1 came
    doc = _status(box)  # asked at once: the first round is done
    assert doc["in_sync"] is True, doc
    assert len(_wanhooks_rules(box)) >= 2  # each link's source rule, at least
    show = box.run("systemctl", "show", "wanhooks", "-p", "StatusText", "-p", "ActiveState").stdout
    assert "ActiveState=active" in show and "StatusText=" in show and "StatusText=\n" not in show
    deadline = time.monotonic() + 10
    while True:  # both healthy: the default route is the weighted group of both
        default = box.run("ip", "-4", "route", "show", "table", "2000000000", check=False).stdout
        groups = re.findall(r"group (\S+)", box.run("ip", "nexthop", "show", "group").stdout)
        weights = [sorted(int((m + ",1").split(",")[1]) for m in g.split("/")) for g in groups]
        if "nhid" in default and [1, 2] in weights:
            break
        assert time.monotonic() < deadline, box.run("wanhooks", "status").stdout
        time.sleep(0.2)


def test_a_refused_reload_fails_and_the_running_config_stays(box: Container) -> None:
    box.sh(f"sed -i 's/weight: 2/weight: 3/' {CONFIG_PATH}")
    box.run("systemctl", "reload", "wanhooks")
    weights = {link["name"]: link["weight"] for link in _status(box)["links"]}  # type: ignore[attr-defined]
    assert weights == {"wan1": 1, "wan2": 3}
    box.sh(f"sed -i 's/weight: 3/weight: banana/' {CONFIG_PATH}")
    reload = box.run("systemctl", "reload", "wanhooks", check=False)
    assert reload.returncode != 0
    assert box.run("systemctl", "is-active", "wanhooks", check=False).stdout.strip() == "active"
    weights = {link["name"]: link["weight"] for link in _status(box)["links"]}  # type: ignore[attr-defined]
    assert weights == {"wan1": 1, "wan2": 3}  # the old config keeps running
    warnings = box.run("journalctl", "-u", "wanhooks", "-p", "warning", "-o", "cat").stdout
    assert "banana" in warnings and CONFIG_PATH in warnings, warnings
    per_link = box.run("journalctl", "-u", "wanhooks", "WANHOOKS_LINK=wan2", "-o", "cat").stdout
    assert per_link.strip() and "wan1" not in per_link.replace("wan1 ", ""), per_link
    box.sh(f"sed -i 's/weight: banana/weight: 2/' {CONFIG_PATH}")
    box.run("systemctl", "reload", "wanhooks")


def test_a_stopped_loop_is_restarted_by_the_watchdog(box: Container) -> None:
    # shorter times than the unit's (a drop-in, as an admin would): the test waits less
    box.sh(
        "mkdir -p /etc/systemd/system/wanhooks.service.d\n"
        "printf '[Service]\\nWatchdogSec=3\\nTimeoutAbortSec=2\\n' "
        "> /etc/systemd/system/wanhooks.service.d/t.conf\n"
        "systemctl daemon-reload\nsystemctl restart wanhooks"
    )
    before = box.run("systemctl", "show", "wanhooks", "-p", "MainPID", "--value").stdout.strip()
    box.sh(f"kill -STOP {before}")
    deadline = time.monotonic() + 30
    while True:
        now = box.run("systemctl", "show", "wanhooks", "-p", "MainPID", "--value").stdout.strip()
        active = box.run("systemctl", "is-active", "wanhooks", check=False).stdout.strip()
        if now not in ("0", before) and active == "active":
            break
        assert time.monotonic() < deadline, box.run("journalctl", "-u", "wanhooks", "-n", "30").stdout
        time.sleep(0.5)
    log = box.run("journalctl", "-u", "wanhooks", "-o", "cat").stdout
    assert "atchdog" in log, log[-2000:]
    box.sh("rm -r /etc/systemd/system/wanhooks.service.d && systemctl daemon-reload")


def test_a_bad_config_at_start_stops_the_restart_loop(box: Container) -> None:
    bad = "links: [{interface: wan1, weight: 0}]"
    box.sh(f"cp {CONFIG_PATH} /root/good.yaml && echo '{bad}' > {CONFIG_PATH}")
    assert box.run("systemctl", "restart", "wanhooks", check=False).returncode != 0
    time.sleep(5)  # RestartSec=2: a loop would have come round twice by now
    show = box.run("systemctl", "show", "wanhooks", "-p", "ActiveState", "-p", "NRestarts").stdout
    assert "ActiveState=failed" in show and "NRestarts=0" in show, show
    errors = box.run("journalctl", "-u", "wanhooks", "-p", "err", "-o", "cat").stdout
    assert CONFIG_PATH in errors, errors
    box.sh(f"cp /root/good.yaml {CONFIG_PATH} && systemctl reset-failed wanhooks && systemctl start wanhooks")


def test_an_upgrade_keeps_the_admins_config_and_drop_ins_and_restarts_the_service(box: Container) -> None:
    box.sh(
        "mkdir -p /etc/systemd/system/wanhooks.service.d\n"
        "printf '[Service]\\nEnvironment=ADMIN=1\\n' > /etc/systemd/system/wanhooks.service.d/admin.conf\n"
        "systemctl daemon-reload"
    )
    config = box.run("cat", CONFIG_PATH).stdout
    before = box.run("systemctl", "show", "wanhooks", "-p", "MainPID", "--value").stdout.strip()
    box.run("dpkg", "-i", f"/root/{box_deb_name()}", timeout=120)  # the same version again: an upgrade
    assert box.run("cat", CONFIG_PATH).stdout == config  # a conffile the admin changed: kept
    after = box.run("systemctl", "show", "wanhooks", "-p", "MainPID", "-p", "Environment").stdout
    assert "ADMIN=1" in after and f"MainPID={before}\n" not in after  # restarted, the drop-in in force
    assert box.run("systemctl", "is-active", "wanhooks", check=False).stdout.strip() == "active"
    box.sh("rm -r /etc/systemd/system/wanhooks.service.d && systemctl daemon-reload")


def test_stop_leaves_the_routing_and_remove_and_purge_leave_nothing(box: Container) -> None:
    rules = _wanhooks_rules(box)
    box.run("systemctl", "stop", "wanhooks")
    assert _wanhooks_rules(box) == rules  # SIGTERM: a restart must not drop traffic
    files = [line for line in box.run("dpkg", "-L", "wanhooks").stdout.splitlines() if line]
    main_before = box.run("ip", "route", "show", "table", "main").stdout
    box.run("systemctl", "start", "wanhooks")
    box.run("apt-get", "remove", "-y", "wanhooks", timeout=120)
    assert _wanhooks_rules(box) == []  # wanhooks' routing is gone with it...
    assert box.run("ip", "route", "show", "table", "main").stdout == main_before  # ...main's stays
    assert box.run("systemctl", "is-active", "wanhooks", check=False).stdout.strip() != "active"
    box.run("apt-get", "purge", "-y", "wanhooks", timeout=120)
    shared = ("/", "/etc", "/lib", "/usr", "/usr/lib", "/usr/sbin", "/usr/share", "/usr/share/doc")
    left = box.sh(
        "for f in " + " ".join(f"'{f}'" for f in files if f not in shared) + "; do "
        '[ -e "$f" ] && [ ! -d "$f" -o -z "$(ls -A "$f" 2>/dev/null)" ] && echo "$f"; done; true'
    ).stdout.split()
    # a directory still holding another package's files is not ours to remove
    left = [f for f in left if box.run("dpkg-query", "-S", f, check=False).returncode != 0]
    assert left == [], left
    assert box.run("ls", "/run/wanhooks", "/etc/wanhooks", check=False).returncode != 0
