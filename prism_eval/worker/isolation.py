"""Worker (sandboxed): apply the isolation layers to this process, in order (docs/design.md §3).

Called after the job arrives and before torch, numpy or any miner byte is imported, while the
process has a single thread (Landlock, capabilities and namespaces are per thread). seccomp
comes last, after the ML imports, with TSYNC for the threads those started. Each layer
reports `active` or `unavailable` (with the reason); the supervisor decides whether a missing
layer is acceptable.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import resource
import socket
import struct

from prism_eval.protocol import LayerReport, SandboxSpec
from prism_eval.worker import landlock, seccomp

_PR_SET_NO_NEW_PRIVS, _PR_CAPBSET_DROP = 38, 24
_CLONE_NEWNS, _CLONE_NEWNET, _CLONE_NEWUSER = 0x00020000, 0x40000000, 0x10000000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_PRIVATE = 2, 4, 8, 0x4000, 1 << 18
SHARED_MEMORY = "/dev/shm"
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
_CAPSET = {"x86_64": 126, "aarch64": 91}
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _failed(call: str) -> str:
    code = ctypes.get_errno()
    return f"{call} failed: {errno.errorcode.get(code, code)} ({os.strerror(code)})"


def _skipped(name: str) -> LayerReport:
    return LayerReport(name=name, state="not_requested", detail="")


def apply_rlimits(limits: dict[str, int]) -> LayerReport:
    """Set each RLIMIT_<name> soft = hard (never raising a limit above its current hard)."""
    applied = []
    for name, value in sorted(limits.items()):
        number = getattr(resource, f"RLIMIT_{name.upper()}")
        _, hard = resource.getrlimit(number)
        target = value if hard == resource.RLIM_INFINITY else min(value, hard)
        resource.setrlimit(number, (target, target))
        applied.append(f"{name}={target}")
    return LayerReport.active("rlimits", ", ".join(applied))


def _bring_loopback_up() -> None:
    # Interface ioctls work on any socket; AF_UNIX is the one family that an operator's seccomp
    # profile (deploy/seccomp.json) lets through.
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
        request = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(probe, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(probe, _SIOCSIFFLAGS, struct.pack("16sH14s", b"lo", flags | _IFF_UP, b""))


def _interfaces() -> list[str]:
    """This namespace's interfaces, from /proc/self/net/dev: no netlink socket needed."""
    with open("/proc/self/net/dev") as handle:
        lines = handle.read().splitlines()[2:]
    return sorted(line.split(":", 1)[0].strip() for line in lines if ":" in line)


def enter_network_namespace() -> LayerReport:
    """A new network namespace holding only `lo` (as root, or inside a new user namespace)."""
    libc = _libc()
    uid, gid = os.getuid(), os.getgid()
    if uid == 0:
        if libc.unshare(_CLONE_NEWNET) != 0:
            return LayerReport.unavailable("network_namespace", _failed("unshare(CLONE_NEWNET)"))
    else:
        if libc.unshare(_CLONE_NEWUSER | _CLONE_NEWNET) != 0:
            return LayerReport.unavailable(
                "network_namespace", _failed("unshare(CLONE_NEWUSER|NEWNET)")
            )
        with open("/proc/self/setgroups", "w") as handle:
            handle.write("deny")
        with open("/proc/self/uid_map", "w") as handle:
            handle.write(f"{uid} {uid} 1")
        with open("/proc/self/gid_map", "w") as handle:
            handle.write(f"{gid} {gid} 1")
    try:
        _bring_loopback_up()
        names = _interfaces()
    except OSError as exc:
        return LayerReport.unavailable(
            "network_namespace", f"namespace made, lo not checked: {exc}"
        )
    if names != ["lo"]:
        return LayerReport.unavailable("network_namespace", f"interfaces still visible: {names}")
    return LayerReport.active("network_namespace", "private namespace; only lo, up")


def join_network_namespace(user_fd: int | None, net_fd: int) -> LayerReport:
    """Join rank 0's private network namespace (and, for non-root runs, its user namespace).

    The descriptors were opened by the supervisor while rank 0 was alive and its child, so they
    name rank 0's namespaces and nothing else.
    """
    libc = _libc()
    try:
        if user_fd is not None and libc.setns(user_fd, _CLONE_NEWUSER) != 0:
            return LayerReport.unavailable("network_namespace", _failed("setns(user namespace)"))
        if libc.setns(net_fd, _CLONE_NEWNET) != 0:
            return LayerReport.unavailable("network_namespace", _failed("setns(network namespace)"))
    finally:
        for fd in (user_fd, net_fd):
            if fd is not None:
                os.close(fd)
    names = _interfaces()
    if names != ["lo"]:
        return LayerReport.unavailable(
            "network_namespace", f"rank 0's namespace has {names}, not only lo"
        )
    return LayerReport.active("network_namespace", "joined rank 0's private namespace; only lo")


def private_network(reports: list[LayerReport]) -> bool:
    """Whether the network namespace layer held: only then may loops use loopback TCP."""
    return any(r.name == "network_namespace" and r.state == "active" for r in reports)


def private_shared_memory(size_mib: int) -> LayerReport:
    """A mount namespace of our own with a fresh tmpfs on /dev/shm.

    /dev/shm stays writable (DataLoader workers pass tensors through it), but what a worker
    leaves there reaches no later worker, no other evaluation and not the host. As non-root
    this needs the user namespace the network layer made; without it the layer is unavailable.
    """
    libc = _libc()
    if libc.unshare(_CLONE_NEWNS) != 0:
        return LayerReport.unavailable("private_shm", _failed("unshare(CLONE_NEWNS)"))
    # Private first: a mount made below must never propagate back to the host's namespace.
    if libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return LayerReport.unavailable("private_shm", _failed("mount(/, MS_REC | MS_PRIVATE)"))
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    options = f"size={size_mib}m,mode=1777".encode()
    if libc.mount(b"tmpfs", SHARED_MEMORY.encode(), b"tmpfs", flags, options) != 0:
        return LayerReport.unavailable("private_shm", _failed(f"mount(tmpfs, {SHARED_MEMORY})"))
    return LayerReport.active(
        "private_shm", f"fresh {size_mib} MiB tmpfs on {SHARED_MEMORY}, own mounts"
    )


def set_no_new_privs() -> LayerReport:
    """PR_SET_NO_NEW_PRIVS: no exec can ever grant privileges again."""
    if _libc().prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return LayerReport.unavailable("no_new_privs", _failed("prctl(PR_SET_NO_NEW_PRIVS)"))
    return LayerReport.active("no_new_privs", "set")


def drop_privileges(uid: int | None, drop_capabilities: bool) -> LayerReport:
    """Switch to an unprivileged uid/gid, or at least clear every capability."""
    import platform

    if uid is not None and os.getuid() == 0:
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
        return LayerReport.active("unprivileged_user", f"uid and gid {uid}; no capabilities")
    if not drop_capabilities:
        return _skipped("unprivileged_user")
    libc = _libc()
    for capability in range(64):
        libc.prctl(_PR_CAPBSET_DROP, capability, 0, 0, 0)  # EINVAL past the last: fine
    number = _CAPSET.get(platform.machine())
    if number is None:
        return LayerReport.unavailable("unprivileged_user", "capset: unknown architecture")
    header = struct.pack("Ii", _LINUX_CAPABILITY_VERSION_3, 0)
    data = bytes(24)  # two __user_cap_data_struct, all zero: no effective/permitted/inheritable
    if libc.syscall(number, header, data) != 0:
        return LayerReport.unavailable("unprivileged_user", _failed("capset"))
    return LayerReport.active(
        "unprivileged_user", f"uid {os.getuid()} kept; every capability dropped"
    )


def apply_before_imports(spec: SandboxSpec) -> list[LayerReport]:
    """Every layer but seccomp, in order; call while the process has one thread."""
    reports = [apply_rlimits(spec.rlimits) if spec.rlimits else _skipped("rlimits")]
    net_fd = spec.join_network_namespace_fd
    if net_fd is not None:
        network = join_network_namespace(spec.join_user_namespace_fd, net_fd)
    elif spec.network_namespace:
        network = enter_network_namespace()
    else:
        network = _skipped("network_namespace")
    reports.append(network)
    shm = spec.private_shm_mib
    reports.append(private_shared_memory(shm) if shm is not None else _skipped("private_shm"))
    reports.append(set_no_new_privs() if spec.no_new_privs else _skipped("no_new_privs"))
    tcp = spec.allow_inet and private_network(reports)
    if spec.landlock:
        try:
            detail = landlock.restrict(spec.read_paths, spec.write_paths, spec.device_paths, tcp)
            reports.append(LayerReport.active("landlock", detail))
        except landlock.LandlockUnavailable as exc:
            reports.append(LayerReport.unavailable("landlock", str(exc)))
    else:
        reports.append(_skipped("landlock"))
    reports.append(drop_privileges(spec.drop_to_uid, spec.drop_capabilities))
    return reports


def apply_seccomp(spec: SandboxSpec, reports: list[LayerReport]) -> LayerReport:
    """The seccomp deny-list, on every thread (TSYNC); call right before miner code loads.

    AF_INET is let through only when asked for *and* the worker is in a private network
    namespace: without one, loopback TCP would reach the host's services.
    """
    if not spec.seccomp:
        return _skipped("seccomp")
    try:
        inet = spec.allow_inet and private_network(reports)
        return LayerReport.active("seccomp", seccomp.install_filter(inet))
    except seccomp.SeccompUnavailable as exc:
        return LayerReport.unavailable("seccomp", str(exc))
