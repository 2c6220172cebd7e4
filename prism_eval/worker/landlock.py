"""Worker (sandboxed): Landlock file-system, network and scope rules (docs/design.md §3, layer 7).

Only the paths the supervisor names are reachable: read(+execute) on the interpreter, its
libraries and the bundle; read-write on the scratch dir and, for `train`, the artifacts dir.
The data, held-out and key paths are simply not in the ruleset. From ABI 4 every TCP bind and
connect is refused; from ABI 6 the worker can neither signal nor reach abstract UNIX sockets
outside its domain. Landlock applies to the calling thread and its future children only, so
this runs before any thread exists.
"""

from __future__ import annotations

import ctypes
import os
import struct

_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446  # the same on every architecture
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET, SCOPE_SIGNAL = 1 << 0, 1 << 1

_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 5: (1 << 16) - 1}
READ = EXECUTE | READ_FILE | READ_DIR
WRITE = WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO
WRITE |= MAKE_SYM | TRUNCATE | REFER
FILE_RULE_MASK = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV


class LandlockUnavailable(Exception):
    """The kernel has no Landlock, or it is disabled."""


def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version (0 when unavailable)."""
    result = _libc().syscall(_CREATE_RULESET, None, 0, _CREATE_RULESET_VERSION)
    return max(0, int(result))


def _fs_rights(abi: int) -> int:
    return next(rights for version, rights in sorted(_FS_BY_ABI.items(), reverse=True)
                if abi >= version)  # fmt: skip


def restrict(
    read_paths: list[str], write_paths: list[str], device_paths: list[str], tcp: bool = False
) -> str:
    """Apply the ruleset to this thread and its future children; return a description.

    read_paths: read + execute; write_paths: everything but device nodes; device_paths:
    read, write and (ABI 5+) ioctl — /dev/null, /dev/shm, GPU nodes. Missing paths are skipped.
    tcp: leave TCP unruled, for loops (trainer, ranks) that talk over loopback in their private
    namespace (gloo's ports are chosen at run time, so no port rule could name them).
    """
    libc = _libc()
    abi = abi_version()
    if abi < 1:
        raise LandlockUnavailable("the kernel has no Landlock (or it is disabled)")
    handled_fs = _fs_rights(abi)
    handled_net = NET_BIND_TCP | NET_CONNECT_TCP if abi >= 4 and not tcp else 0
    scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if abi >= 6 else 0
    attr = struct.pack("QQQ", handled_fs, handled_net, scoped)
    size = 24 if abi >= 6 else 16 if abi >= 4 else 8
    ruleset = libc.syscall(_CREATE_RULESET, attr, size, 0)
    if ruleset < 0:
        raise LandlockUnavailable(f"landlock_create_ruleset failed (errno {ctypes.get_errno()})")
    try:
        granted: list[tuple[str, int]] = [(p, READ) for p in read_paths]
        granted += [(p, READ | WRITE) for p in write_paths]
        granted += [(p, READ | WRITE_FILE | IOCTL_DEV | TRUNCATE) for p in device_paths]
        for path, rights in granted:
            _add_path(libc, ruleset, path, rights & handled_fs)
        if libc.syscall(_RESTRICT_SELF, ruleset, 0) != 0:
            raise LandlockUnavailable(f"landlock_restrict_self failed (errno {ctypes.get_errno()})")
    finally:
        os.close(ruleset)
    if tcp:
        net = "TCP left to the private network namespace (ranks)"
    else:
        net = "all TCP bind/connect refused" if handled_net else "no network rules (ABI < 4)"
    scope = "signals and abstract sockets scoped" if scoped else "no scoping (ABI < 6)"
    paths = f"{len(read_paths)} read-only and {len(write_paths)} writable paths"
    return f"ABI {abi}; {paths}; {net}; {scope}"


def _add_path(libc: ctypes.CDLL, ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path that does not exist on this host grants nothing
    try:
        if not os.path.isdir(path):
            rights &= FILE_RULE_MASK
        rule = struct.pack("=Qi", rights, fd)  # struct landlock_path_beneath_attr (packed)
        if libc.syscall(_ADD_RULE, ruleset, _RULE_PATH_BENEATH, rule, 0) != 0:
            raise LandlockUnavailable(
                f"landlock_add_rule({path}) failed (errno {ctypes.get_errno()})"
            )
    finally:
        os.close(fd)
