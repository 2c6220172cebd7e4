"""The outer-layer checks (supervisor.sandbox.host) on fake /proc, /sys and cgroup trees."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from prism_eval.supervisor.sandbox.host import (
    HOST_LAYERS,
    HostPaths,
    capability_names,
    check_capabilities,
    check_memory_limit,
    check_network,
    check_no_new_privs,
    check_pids_limit,
    check_read_only_root,
    check_seccomp,
    check_user,
    host_checks,
    read_status,
)

NET_DEV = """Inter-|   Receive                            |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes
    lo:     100       1    0    0    0     0          0         0      100
  eth0:    5000      10    0    0    0     0          0         0     4000
"""
IFF_UP = 0x1


@pytest.fixture
def paths(tmp_path: Path) -> HostPaths:
    proc = tmp_path / "proc" / "self"
    (proc / "net").mkdir(parents=True)
    (proc / "net" / "dev").write_text(NET_DEV)
    (proc / "status").write_text(
        "Name:\tpython\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t1\n"
        "CapPrm:\t0000000000000000\nCapEff:\t0000000000000000\nCapBnd:\t0000000000000000\n"
    )
    (proc / "cgroup").write_text("")
    return HostPaths(
        proc_self=proc,
        sys_class_net=tmp_path / "sys" / "class" / "net",
        cgroup_root=tmp_path / "cgroup",
        root=tmp_path,
    )


def test_only_loopback_up_is_active(paths: HostPaths) -> None:
    report = check_network(paths, lambda name: 0)
    assert report.state == "active"
    assert "1 other interface(s) down" in report.detail


def test_a_non_loopback_interface_up_is_reported_by_name(paths: HostPaths) -> None:
    report = check_network(paths, lambda name: 0x1043)
    assert report.state == "unavailable"
    assert report.detail == "interfaces up besides lo: eth0"


def test_sysfs_flags_are_read_when_the_ioctl_fails(paths: HostPaths) -> None:
    def refused(name: str) -> int:
        raise OSError("ioctl refused")

    (paths.sys_class_net / "eth0").mkdir(parents=True)
    (paths.sys_class_net / "eth0" / "flags").write_text("0x1003\n")
    assert check_network(paths, refused).state == "unavailable"
    (paths.sys_class_net / "eth0" / "flags").write_text("0x1002\n")
    assert check_network(paths, refused).state == "active"


def test_an_interface_of_unknown_state_counts_as_up(paths: HostPaths) -> None:
    def refused(name: str) -> int:
        raise OSError("ioctl refused")

    report = check_network(paths, refused)
    assert report.state == "unavailable"
    assert "eth0 (state unknown)" in report.detail


def test_no_interfaces_at_all_is_active(paths: HostPaths) -> None:
    (paths.proc_self / "net" / "dev").write_text("header\nheader\n")
    assert check_network(paths, lambda name: IFF_UP).detail == "only lo"


def test_a_read_only_root_is_active(paths: HostPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    assert check_read_only_root(paths).state == "unavailable"  # tmp_path is writable
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_flag=os.ST_RDONLY))
    assert check_read_only_root(paths).state == "active"


def test_capabilities_dropped_everywhere_are_active(paths: HostPaths) -> None:
    assert check_capabilities(read_status(paths.proc_self)).state == "active"


def test_held_capabilities_are_named() -> None:
    sys_admin_and_net_raw = (1 << 21) | (1 << 13)
    status = {"CapEff": f"{sys_admin_and_net_raw:016x}", "CapPrm": f"{sys_admin_and_net_raw:016x}",
              "CapBnd": "000001ffffffffff"}  # fmt: skip
    report = check_capabilities(status)
    assert report.state == "unavailable"
    assert "net_raw, sys_admin" in report.detail
    assert "bounding set: 41 capabilities" in report.detail


def test_a_bounding_set_alone_is_not_enough() -> None:
    status = {"CapEff": "0", "CapPrm": "0", "CapBnd": "00000000a80425fb"}
    assert check_capabilities(status).state == "unavailable"


def test_unknown_capability_bits_get_numbers() -> None:
    assert capability_names((1 << 0) | (1 << 50)) == ["chown", "cap_50"]


def test_missing_capability_lines_are_unavailable() -> None:
    assert check_capabilities({}).state == "unavailable"


def test_no_new_privs_set_by_the_engine_is_active() -> None:
    assert check_no_new_privs({"NoNewPrivs": "1"}).state == "active"
    assert check_no_new_privs({"NoNewPrivs": "0"}).state == "unavailable"


def test_seccomp_filter_that_refuses_inet_sockets() -> None:
    report = check_seccomp({"Seccomp": "2", "Seccomp_filters": "1"}, lambda: "not supported")
    assert report.state == "active"
    assert report.detail == "1 filter(s); socket(AF_INET) refused (not supported)"


def test_seccomp_filter_that_allows_inet_sockets_says_so() -> None:
    report = check_seccomp({"Seccomp": "2"}, lambda: None)
    assert report.state == "active"
    assert "socket(AF_INET) allowed" in report.detail


def test_no_seccomp_filter_is_unavailable() -> None:
    def never() -> str | None:
        raise AssertionError("no probe without a filter")

    assert check_seccomp({"Seccomp": "0"}, never).detail == "no filter"


def test_a_non_root_user_is_active(paths: HostPaths, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 10001)
    monkeypatch.setattr(os, "getegid", lambda: 10001)
    assert check_user(paths).detail == "uid 10001, gid 10001"


def test_root_mapped_to_another_host_uid_is_active(
    paths: HostPaths, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    (paths.proc_self / "uid_map").write_text("         0     100000      65536\n")
    assert check_user(paths).state == "active"
    (paths.proc_self / "uid_map").write_text("         0          0 4294967295\n")
    assert check_user(paths).detail == "running as root"


def _cgroup(paths: HostPaths, relative: str, name: str, value: str) -> None:
    directory = paths.cgroup_root / relative
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(value + "\n")


def test_v1_memory_limit_of_an_ancestor_counts(paths: HostPaths) -> None:
    (paths.proc_self / "cgroup").write_text("4:memory:/a/b\n3:pids:/a/b\n0::/\n")
    _cgroup(paths, "memory/a/b", "memory.limit_in_bytes", "9223372036854771712")  # no limit
    _cgroup(paths, "memory/a", "memory.limit_in_bytes", str(2 * 2**30))
    report = check_memory_limit(paths)
    assert report.state == "active"
    assert report.detail.startswith("2.00 GiB (")


def test_v1_limits_inside_a_container_are_read_at_the_mount_root(paths: HostPaths) -> None:
    # The path names the host's cgroup; the container sees its own cgroup as the mount's root.
    (paths.proc_self / "cgroup").write_text("4:memory:/libpod_parent/libpod-0123\n8:pids:/x\n")
    _cgroup(paths, "memory", "memory.limit_in_bytes", str(12 * 2**30))
    _cgroup(paths, "pids", "pids.max", "1024")
    assert check_memory_limit(paths).detail.startswith("12.00 GiB")
    assert check_pids_limit(paths).detail.startswith("1024 processes")


def test_v2_limits(paths: HostPaths) -> None:
    (paths.proc_self / "cgroup").write_text("0::/job\n")
    _cgroup(paths, "job", "memory.max", "max")
    _cgroup(paths, "job", "pids.max", "512")
    assert check_memory_limit(paths).detail == "no cgroup memory limit"
    assert check_pids_limit(paths).state == "active"


def test_no_cgroup_at_all_is_unavailable(paths: HostPaths) -> None:
    assert check_memory_limit(paths).state == "unavailable"
    assert check_pids_limit(paths).detail == "no cgroup pids limit"


def test_every_layer_is_reported_in_order(paths: HostPaths) -> None:
    reports = host_checks(paths, flags_of=lambda name: 0, inet_probe=lambda: None)
    assert [r.name for r in reports] == list(HOST_LAYERS)


def test_this_host_can_be_checked() -> None:
    reports = host_checks()
    assert [r.name for r in reports] == list(HOST_LAYERS)
    assert all(r.state in ("active", "unavailable") for r in reports)
