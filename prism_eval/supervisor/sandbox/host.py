"""Supervisor: what the host gave the whole evaluator — the outer layers, checked, not assumed.

The worker applies its own layers (docs/design.md §3). Around the whole evaluator an operator adds
more: `docker run --network none --read-only --cap-drop ALL --security-opt no-new-privileges
--security-opt seccomp=deploy/seccomp.json --pids-limit … --memory …`, or a pod's
securityContext. A flag can be forgotten or ignored by an engine, so at start-up the supervisor
looks at what it actually got and the record says so:

- `host_network`: no interface but `lo` is up (names from /proc/self/net/dev, which follows
  the caller's network namespace; flags by ioctl on an AF_UNIX socket, which every profile
  allows);
- `host_read_only_root`: `/` is mounted read-only;
- `host_capabilities`: no effective, permitted or bounding capability;
- `host_no_new_privs`: set on the supervisor already;
- `host_seccomp`: a filter is installed, and whether it refuses `socket(AF_INET)`;
- `host_user`: not root (or root only inside a user namespace that maps it elsewhere);
- `host_memory_limit`, `host_pids_limit`: the cgroup limits around the evaluator.

Each check gives a `LayerReport`: `active` when the outer layer holds, `unavailable` (with
what was found) when it does not. Nothing here changes the process; the checks read /proc and
/sys and make one short-lived socket.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from prism_eval.protocol import LayerReport

HOST_LAYERS = (
    "host_network", "host_read_only_root", "host_capabilities", "host_no_new_privs",
    "host_seccomp", "host_user", "host_memory_limit", "host_pids_limit",
)  # fmt: skip
_SIOCGIFFLAGS, _IFF_UP = 0x8913, 0x1
# cgroup v1 reports "no limit" as a page-rounded LONG_MAX; anything this large is no limit.
_UNLIMITED_BYTES = 1 << 62
# include/uapi/linux/capability.h, in bit order.
CAPABILITY_NAMES = (
    "chown", "dac_override", "dac_read_search", "fowner", "fsetid", "kill", "setgid", "setuid",
    "setpcap", "linux_immutable", "net_bind_service", "net_broadcast", "net_admin", "net_raw",
    "ipc_lock", "ipc_owner", "sys_module", "sys_rawio", "sys_chroot", "sys_ptrace", "sys_pacct",
    "sys_admin", "sys_boot", "sys_nice", "sys_resource", "sys_time", "sys_tty_config", "mknod",
    "lease", "audit_write", "audit_control", "setfcap", "mac_override", "mac_admin", "syslog",
    "wake_alarm", "block_suspend", "audit_read", "perfmon", "bpf", "checkpoint_restore",
)  # fmt: skip

InterfaceFlags = Callable[[str], int]
InetProbe = Callable[[], str | None]


@dataclass(frozen=True)
class HostPaths:
    """Where the checks read; tests point these at a fake tree."""

    proc_self: Path = Path("/proc/self")
    sys_class_net: Path = Path("/sys/class/net")
    cgroup_root: Path = Path("/sys/fs/cgroup")
    root: Path = Path("/")


def read_status(proc_self: Path) -> dict[str, str]:
    """/proc/self/status as a mapping of field to (stripped) value."""
    status = {}
    for line in (proc_self / "status").read_text().splitlines():
        key, _, value = line.partition(":")
        status[key.strip()] = value.strip()
    return status


# ---- network ------------------------------------------------------------------------------


def interface_names(proc_self: Path) -> list[str]:
    """The interfaces of this process's network namespace (/proc/self/net/dev)."""
    lines = (proc_self / "net" / "dev").read_text().splitlines()[2:]
    return sorted(line.split(":", 1)[0].strip() for line in lines if ":" in line)


def ioctl_flags(name: str) -> int:
    """SIOCGIFFLAGS for one interface, through an AF_UNIX socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH14s", name.encode()[:15], 0, b"")
        return int(struct.unpack("16sH14s", fcntl.ioctl(probe, _SIOCGIFFLAGS, request))[1])


def check_network(paths: HostPaths, flags_of: InterfaceFlags = ioctl_flags) -> LayerReport:
    """Active when no interface but loopback is up (`--network none`)."""
    name = "host_network"
    try:
        names = interface_names(paths.proc_self)
    except OSError as exc:
        return LayerReport.unavailable(name, f"cannot list interfaces: {exc}")
    up = []
    for interface in names:
        if interface == "lo":
            continue
        try:
            flags = flags_of(interface)
        except OSError:
            try:
                flags = int((paths.sys_class_net / interface / "flags").read_text(), 16)
            except (OSError, ValueError):
                up.append(f"{interface} (state unknown)")
                continue
        if flags & _IFF_UP:
            up.append(interface)
    if up:
        return LayerReport.unavailable(name, f"interfaces up besides lo: {', '.join(up)}")
    others = len(names) - ("lo" in names)
    return LayerReport.active(
        name, "only lo" + (f" up ({others} other interface(s) down)" if others else "")
    )


# ---- file system, privileges, seccomp -----------------------------------------------------


def check_read_only_root(paths: HostPaths) -> LayerReport:
    """Active when the root file system is mounted read-only (`--read-only`)."""
    name = "host_read_only_root"
    try:
        read_only = bool(os.statvfs(paths.root).f_flag & os.ST_RDONLY)
    except OSError as exc:
        return LayerReport.unavailable(name, f"cannot stat {paths.root}: {exc}")
    if read_only:
        return LayerReport.active(name, f"{paths.root} is mounted read-only")
    return LayerReport.unavailable(name, f"{paths.root} is writable")


def capability_names(mask: int) -> list[str]:
    """The names of the capabilities set in `mask` (cap_<n> past the known ones)."""
    return [
        CAPABILITY_NAMES[bit] if bit < len(CAPABILITY_NAMES) else f"cap_{bit}"
        for bit in range(64)
        if mask >> bit & 1
    ]


def check_capabilities(status: dict[str, str]) -> LayerReport:
    """Active when no capability is effective, permitted or in the bounding set (--cap-drop ALL)."""
    name = "host_capabilities"
    try:
        effective, permitted, bounding = (
            int(status[k], 16) for k in ("CapEff", "CapPrm", "CapBnd")
        )
    except (KeyError, ValueError):
        return LayerReport.unavailable(name, "no capability sets in /proc/self/status")
    if effective == permitted == bounding == 0:
        return LayerReport.active(name, "none: effective, permitted and bounding sets are empty")
    held = capability_names(effective | permitted)
    detail = f"effective/permitted: {', '.join(held) if held else 'none'}; "
    detail += f"bounding set: {len(capability_names(bounding))} capabilities"
    return LayerReport.unavailable(name, detail)


def check_no_new_privs(status: dict[str, str]) -> LayerReport:
    """Active when no_new_privs is already set on the supervisor (no-new-privileges)."""
    if status.get("NoNewPrivs") == "1":
        return LayerReport.active("host_no_new_privs", "set by the engine")
    return LayerReport.unavailable(
        "host_no_new_privs", "not set (workers still set it for themselves)"
    )


def inet_socket_refusal() -> str | None:
    """Try to open (and at once close) an AF_INET socket; the error when refused, else None."""
    try:
        socket.socket(socket.AF_INET, socket.SOCK_DGRAM).close()
    except OSError as exc:
        return exc.strerror or str(exc)
    return None


def check_seccomp(
    status: dict[str, str], inet_probe: InetProbe = inet_socket_refusal
) -> LayerReport:
    """Active when a seccomp filter is installed; says whether it refuses AF_INET sockets."""
    name = "host_seccomp"
    mode = status.get("Seccomp")
    if mode != "2":
        return LayerReport.unavailable(
            name, "no filter" if mode == "0" else f"Seccomp: {mode or 'unknown'}"
        )
    filters = status.get("Seccomp_filters")
    count = f"{filters} filter(s)" if filters else "filter mode"
    refusal = inet_probe()
    sockets = f"socket(AF_INET) refused ({refusal})" if refusal else "socket(AF_INET) allowed"
    return LayerReport.active(name, f"{count}; {sockets}")


def check_user(paths: HostPaths) -> LayerReport:
    """Active when not root, or root only inside a user namespace that maps it elsewhere."""
    name = "host_user"
    uid, gid = os.geteuid(), os.getegid()
    if uid != 0:
        return LayerReport.active(name, f"uid {uid}, gid {gid}")
    try:
        for line in (paths.proc_self / "uid_map").read_text().splitlines():
            inside, outside, _ = (int(part) for part in line.split())
            if inside == 0 and outside != 0:
                return LayerReport.active(name, f"uid 0 in a user namespace, host uid {outside}")
    except (OSError, ValueError):
        pass
    return LayerReport.unavailable(name, "running as root")


# ---- cgroup limits ------------------------------------------------------------------------


def _cgroup_dirs(paths: HostPaths, controller: str) -> list[Path]:
    """This process's cgroup directories for `controller`, deepest first, up to the root.

    cgroup v1 when the controller has its own hierarchy, else the unified (v2) one. Inside a
    container the hierarchy is usually mounted at the container's own cgroup, so paths from
    /proc/self/cgroup may not exist there; the mount's root is then the container's cgroup.
    """
    v1_path = v2_path = None
    for line in (paths.proc_self / "cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        if controller in controllers.split(","):
            v1_path = path
        elif controllers == "":
            v2_path = path
    if v1_path is not None:
        base, relative = paths.cgroup_root / controller, v1_path
    elif v2_path is not None:
        base, relative = paths.cgroup_root, v2_path
    else:
        return []
    directory = base / relative.lstrip("/")
    dirs = [directory, *directory.parents] if directory != base else [base]
    return [d for d in dirs if d == base or base in d.parents]


def _limit(paths: HostPaths, controller: str, files: tuple[str, ...]) -> tuple[int | None, str]:
    """The tightest limit among this cgroup and its ancestors, and where it was found."""
    tightest: int | None = None
    where = ""
    for directory in _cgroup_dirs(paths, controller):
        for file_name in files:
            try:
                text = (directory / file_name).read_text().strip()
            except OSError:
                continue
            if text == "max":
                continue
            value = int(text)
            if controller == "memory" and value >= _UNLIMITED_BYTES:
                continue
            if tightest is None or value < tightest:
                tightest, where = value, str(directory / file_name)
    return tightest, where


def check_memory_limit(paths: HostPaths) -> LayerReport:
    """Active when a cgroup memory limit bounds the evaluator (`--memory`)."""
    name = "host_memory_limit"
    try:
        limit, where = _limit(paths, "memory", ("memory.max", "memory.limit_in_bytes"))
    except (OSError, ValueError) as exc:
        return LayerReport.unavailable(name, f"cannot read the cgroup: {exc}")
    if limit is None:
        return LayerReport.unavailable(name, "no cgroup memory limit")
    return LayerReport.active(name, f"{limit / 2**30:.2f} GiB ({where})")


def check_pids_limit(paths: HostPaths) -> LayerReport:
    """Active when a cgroup pids limit bounds the evaluator (`--pids-limit`)."""
    name = "host_pids_limit"
    try:
        limit, where = _limit(paths, "pids", ("pids.max",))
    except (OSError, ValueError) as exc:
        return LayerReport.unavailable(name, f"cannot read the cgroup: {exc}")
    if limit is None:
        return LayerReport.unavailable(name, "no cgroup pids limit")
    return LayerReport.active(name, f"{limit} processes ({where})")


def host_checks(
    paths: HostPaths | None = None,
    *,
    flags_of: InterfaceFlags = ioctl_flags,
    inet_probe: InetProbe = inet_socket_refusal,
) -> list[LayerReport]:
    """Every outer layer, in HOST_LAYERS order."""
    paths = paths or HostPaths()
    try:
        status = read_status(paths.proc_self)
    except OSError:
        status = {}
    return [
        check_network(paths, flags_of),
        check_read_only_root(paths),
        check_capabilities(status),
        check_no_new_privs(status),
        check_seccomp(status, inet_probe),
        check_user(paths),
        check_memory_limit(paths),
        check_pids_limit(paths),
    ]
