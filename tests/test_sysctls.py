"""The sysctl record: cleanup writes back only the knobs wanhooks sets, whatever the record says (no root)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fakes import lab_config, lab_kernel

from wanhooks import constants as c
from wanhooks.kernel.fake import FakeKernel
from wanhooks.model import BalanceMode, Desired, KernelFeatures, Sysctl
from wanhooks.plan.planner import plan
from wanhooks.reconcile.diff import cleanup, reconcile
from wanhooks.router import sysctls

# Entries a tampered record might carry, and why each must never be written
HOSTILE = {
    "../../../tmp/x": "a path out of /proc/sys",
    "../../../../etc/cron.d/x": "a path out of /proc/sys",
    "net/ipv4/conf/../../../../../tmp/x": "a link name of '..'",
    "net/ipv4/conf/../rp_filter": "a link name of '..'",
    "net/ipv4/conf/w1/../../../../../tmp/x": "more parts than a link knob",
    "/etc/shadow": "an absolute path",
    "kernel/modprobe": "a knob wanhooks never sets",
    "kernel/core_pattern": "a knob wanhooks never sets",
    "net/ipv4/ip_forward": "a knob wanhooks never sets",
    "net/ipv4/conf/w1/forwarding": "not one of the link knobs",
    "net/ipv6/conf/w1/rp_filter": "rp_filter is IPv4's",
    "net/ipv4/conf/all/rp_filter": "conf/all is every interface",
    "net/ipv4/conf/default/rp_filter": "conf/default is every new interface",
    "net/ipv4/conf/w*/rp_filter": "a glob, not a link",
    "net//ipv4/fib_multipath_hash_policy": "an empty part",
    "net/ipv4/fib_multipath_hash_policy/": "a trailing slash",
}


@dataclass
class FileKernel(FakeKernel):
    """The fake kernel with its sysctls in files under a directory, joined as linux.py joins
    /proc/sys and a knob's path -- so a traversal key would really reach outside it."""

    proc_sys: str = ""
    opened: list[str] = field(default_factory=list)

    def read_sysctl(self, path: str) -> str | None:
        self.opened.append(path)
        try:
            return Path(os.path.join(self.proc_sys, path)).read_text().strip()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def write_sysctl(self, path: str, value: str) -> None:
        self.opened.append(path)
        Path(os.path.join(self.proc_sys, path)).write_text(value)


def file_kernel(tmp_path: Path) -> FileKernel:
    """lab_kernel()'s links and knobs, its knobs as files under tmp/a/b/c/proc/sys."""
    template = lab_kernel()
    root = tmp_path / "a" / "b" / "c" / "proc" / "sys"
    for knob, value in template.sysctls.items():
        (root / knob).parent.mkdir(parents=True, exist_ok=True)
        (root / knob).write_text(value + "\n")
    kernel = FileKernel(features=template.features, proc_sys=str(root))
    for link in template.links:
        kernel.set_link(link)
    return kernel


def tamper(record_path: Path, entries: dict[str, dict[str, str]]) -> None:
    data = json.loads(record_path.read_text())
    data.update(entries)
    record_path.write_text(json.dumps(data))


def test_a_tampered_record_restores_only_the_knobs_wanhooks_sets(tmp_path: Path) -> None:
    kernel = file_kernel(tmp_path)
    run = tmp_path / "run"
    proc_sys = Path(kernel.proc_sys)
    before = {p: p.read_text().strip() for p in proc_sys.rglob("*") if p.is_file()}
    assert reconcile(plan(lab_config(), kernel.observe()), kernel, str(run)).ok
    # every target a hostile key could reach, as it would be if cleanup wrote it: holding the
    # record's "written" value, so only the key's own check stands between it and the write
    targets = {}
    for key in HOSTILE:
        target = Path(os.path.normpath(os.path.join(kernel.proc_sys, key)))
        if key.startswith("/") or target in before:
            continue  # not a file to plant (the knob a key aliases is checked with the others below)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text("wanhooks-wrote\n")
        targets[key] = target
    tamper(
        run / c.SYSCTL_RECORD, {key: {"original": "PWNED", "written": "wanhooks-wrote"} for key in HOSTILE}
    )
    # a whitelisted knob with a value no such knob holds: dropped too
    tamper(run / c.SYSCTL_RECORD, {"net/ipv4/conf/w3/rp_filter": {"original": "1; reboot", "written": "2"}})
    kernel.opened.clear()

    report = cleanup(kernel, str(run))

    for key, target in targets.items():
        assert target.read_text() == "wanhooks-wrote\n", f"{key!r} ({HOSTILE[key]}) was written"
    for key in HOSTILE:
        assert any(repr(key) in error and "dropped" in error for error in report.sysctl_errors), key
    assert all(sysctls.knob_problem(path) is None for path in kernel.opened)  # not even read
    assert any("'net/ipv4/conf/w3/rp_filter'" in e and "values" in e for e in report.sysctl_errors)
    # every knob wanhooks really set is back, but w3's rp_filter, whose entry was dropped
    after = {p: p.read_text().strip() for p in before}
    changed = {str(p.relative_to(proc_sys)) for p in before if after[p] != before[p]}
    assert changed == {"net/ipv4/conf/w3/rp_filter"}
    assert (run / c.SYSCTL_RECORD).exists()  # kept: the errors are worth a look


def test_the_dropped_keys_are_named_one_error_each(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    record = {
        "net/ipv4/conf/w1/rp_filter": {"original": "0", "written": "2"},
        "../../../tmp/x": {"original": "0", "written": "2"},
        "net/ipv4/conf/w1\n/rp_filter": {"original": "0", "written": "2"},
        "x" * 500: {"original": "0", "written": "2"},
    }
    (run / c.SYSCTL_RECORD).write_text(json.dumps(record))
    report = sysctls.SysctlReport()
    loaded = sysctls.load(str(run), report)
    assert list(loaded) == ["net/ipv4/conf/w1/rp_filter"]
    assert len(report.errors) == 3
    assert any("'../../../tmp/x'" in e for e in report.errors)
    assert any(repr("net/ipv4/conf/w1\n/rp_filter") in e for e in report.errors)  # escaped, one line
    assert all("\n" not in e and len(e) < 400 for e in report.errors)  # a long key is cut short


def test_the_record_is_not_read_through_a_symlink(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    elsewhere = tmp_path / "planted.json"
    elsewhere.write_text(json.dumps({"net/ipv4/conf/w1/rp_filter": {"original": "1", "written": "2"}}))
    (run / c.SYSCTL_RECORD).symlink_to(elsewhere)
    kernel = lab_kernel()
    kernel.sysctls["net/ipv4/conf/w1/rp_filter"] = "2"
    report = sysctls.restore(kernel, str(run))
    assert kernel.sysctls["net/ipv4/conf/w1/rp_filter"] == "2"  # the planted record was not followed
    assert any("symbolic link" in e for e in report.errors)
    assert elsewhere.exists() and not (run / c.SYSCTL_RECORD).is_symlink()  # the link itself moved aside
    assert [p.is_symlink() for p in run.glob(c.SYSCTL_RECORD + ".corrupt-*")] == [True]


def test_a_fifo_or_a_huge_record_is_refused_without_hanging_or_reading_it(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    os.mkfifo(run / c.SYSCTL_RECORD)  # open() of a FIFO blocks until a writer comes: not here
    report = sysctls.SysctlReport()
    assert sysctls.load(str(run), report) == {}
    assert any("not a regular file" in e for e in report.errors)
    with open(run / c.SYSCTL_RECORD, "w") as f:
        f.truncate(sysctls.RECORD_MAX + 1)
    report = sysctls.SysctlReport()
    assert sysctls.load(str(run), report) == {}
    assert any(f"at most {sysctls.RECORD_MAX}" in e for e in report.errors)


@pytest.mark.parametrize("balance", list(BalanceMode))
@pytest.mark.parametrize("hash_fields", [True, False])
def test_every_knob_the_planner_sets_is_one_cleanup_restores(balance: BalanceMode, hash_fields: bool) -> None:
    kernel = lab_kernel(features=KernelFeatures(hash_fields=hash_fields))
    desired = plan(lab_config(balance=balance), kernel.observe())
    assert desired.sysctls
    assert {s.path: sysctls.knob_problem(s.path) for s in desired.sysctls} == dict.fromkeys(
        (s.path for s in desired.sysctls), None
    )


def test_the_knob_builders_refuse_what_the_record_would_refuse() -> None:
    assert sysctls.family_knob("ipv6", "fib_multipath_hash_policy") == "net/ipv6/fib_multipath_hash_policy"
    assert sysctls.link_knob("ipv4", "eth0.100", "rp_filter") == "net/ipv4/conf/eth0.100/rp_filter"
    for proto, knob in (("ipv4", "ip_forward"), ("ipx", "fib_multipath_hash_policy")):
        with pytest.raises(ValueError):
            sysctls.family_knob(proto, knob)
    for proto, name, knob in (("ipv4", "..", "rp_filter"), ("ipv4", "a/b", "rp_filter"),
                              ("ipv4", "all", "rp_filter"), ("ipv6", "w1", "rp_filter"),
                              ("ipv4", "w1", "forwarding"), ("ipv4", "", "rp_filter")):  # fmt: skip
        with pytest.raises(ValueError):
            sysctls.link_knob(proto, name, knob)


def test_apply_sets_no_knob_outside_the_list(tmp_path: Path) -> None:
    kernel = lab_kernel()
    kernel.sysctls["kernel/modprobe"] = "/sbin/modprobe"
    desired = Desired(
        sysctls=frozenset({Sysctl("kernel/modprobe", "/tmp/x"), Sysctl("net/ipv4/conf/w1/rp_filter", "2")})
    )
    report = sysctls.apply(desired, kernel, str(tmp_path))
    assert kernel.sysctls["kernel/modprobe"] == "/sbin/modprobe"
    assert kernel.sysctls["net/ipv4/conf/w1/rp_filter"] == "2"
    assert any("'kernel/modprobe'" in e for e in report.errors)
    assert "kernel/modprobe" not in json.loads((tmp_path / c.SYSCTL_RECORD).read_text())


def test_a_missing_record_is_no_error(tmp_path: Path) -> None:
    report = sysctls.SysctlReport()
    assert sysctls.load(str(tmp_path), report) == {} and not report.errors  # as after a cleanup
