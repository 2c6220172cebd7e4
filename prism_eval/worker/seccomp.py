"""Worker (sandboxed): the seccomp deny-list, as a raw BPF program (docs/design.md §3, layer 8).

Installed last, after torch is imported and before miner code, with SECCOMP_FILTER_FLAG_TSYNC
so every thread that already exists gets it too. It fails (never kills) what a bundle has no
business calling: tracing other processes, new namespaces and mounts, kernel modules and
keyrings, io_uring, userfaultfd, bpf, perf, exec, and every socket family but AF_UNIX (the
trainer and the ranks also get AF_INET and route netlink, inside their private network
namespace).
CUDA needs AF_UNIX, memfd_create, ioctl and mmap: those stay allowed.

It also closes the ways two workers of the same uid could talk (the auditor must learn nothing
of a batch the predictor saw): file locks, leases and inotify on files both can read, SysV IPC,
POSIX message queues, and changing another process's priority, CPU affinity, scheduling or
limits (the other reads its own back) — those calls work on the calling process only.

Program layout (classic BPF over `struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}`):
check the architecture, then the syscall number against the deny table, then the argument
checks: clone(flags), fcntl(cmd), the self-only calls, socket(domain).
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct

# struct seccomp_data offsets
_NR, _ARCH, _ARG0_LOW, _ARG1_LOW, _ARG2_LOW = 0, 4, 16, 24, 32

_BPF_LD_W_ABS = 0x20
_BPF_JEQ_K = 0x15
_BPF_JSET_K = 0x45
_BPF_RET_K = 0x06
_BPF_ALU_AND_K = 0x54

SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
SECCOMP_RET_KILL_PROCESS = 0x80000000
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1

AF_UNIX, AF_INET, AF_NETLINK = 1, 2, 16
NETLINK_ROUTE = 0
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
CLONE_NAMESPACE_FLAGS |= 0x20000000 | 0x40000000

DENIED = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "mount", "umount2", "unshare", "setns", "chroot", "pivot_root", "move_mount", "open_tree",
    "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "bpf", "perf_event_open", "userfaultfd", "io_uring_setup", "io_uring_enter",
    "io_uring_register", "add_key", "request_key", "keyctl",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load", "reboot",
    "execve", "execveat", "swapon", "swapoff", "acct", "settimeofday", "clock_settime",
    "clock_adjtime", "adjtimex", "open_by_handle_at", "name_to_handle_at", "quotactl",
    "lookup_dcookie", "sethostname", "setdomainname", "syslog", "vhangup", "nfsservctl",
    "iopl", "ioperm",
    # channels between workers of one uid
    "flock", "inotify_init", "inotify_init1", "inotify_add_watch", "fanotify_init",
    "fanotify_mark", "shmget", "shmat", "shmctl", "msgget", "msgsnd", "msgrcv", "msgctl",
    "semget", "semop", "semtimedop", "semctl", "mq_open", "mq_unlink", "mq_timedsend",
    "mq_timedreceive", "mq_notify", "mq_getsetattr",
)  # fmt: skip
# fcntl commands that lock, lease or watch a file another worker can open too.
F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW = 5, 6, 7, 36, 37, 38
F_SETLEASE, F_NOTIFY = 1024, 1026
DENIED_FCNTL = (F_GETLK, F_SETLK, F_SETLKW, F_OFD_GETLK, F_OFD_SETLK, F_OFD_SETLKW, F_SETLEASE,
                F_NOTIFY)  # fmt: skip
# Calls allowed only on the calling process: (name, argument index of the pid, required
# argument 0 when the pid is the second one: PRIO_PROCESS / IOPRIO_WHO_PROCESS).
PRIO_PROCESS, IOPRIO_WHO_PROCESS = 0, 1
SELF_ONLY = (
    ("setpriority", 1, PRIO_PROCESS), ("ioprio_set", 1, IOPRIO_WHO_PROCESS),
    ("sched_setaffinity", 0, None), ("sched_setscheduler", 0, None),
    ("sched_setparam", 0, None), ("sched_setattr", 0, None), ("prlimit64", 0, None),
    ("migrate_pages", 0, None), ("move_pages", 0, None),
)  # fmt: skip

# Syscall numbers from the kernel's uapi headers (unistd_64.h, asm-generic/unistd.h).
_X86_64 = {
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kcmp": 312,
    "pidfd_getfd": 438, "mount": 165, "umount2": 166, "unshare": 272, "setns": 308,
    "chroot": 161, "pivot_root": 155, "move_mount": 429, "open_tree": 428, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "bpf": 321,
    "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "add_key": 248, "request_key": 249, "keyctl": 250,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "kexec_load": 246,
    "kexec_file_load": 320, "reboot": 169, "execve": 59, "execveat": 322, "swapon": 167,
    "swapoff": 168, "acct": 163, "settimeofday": 164, "clock_settime": 227,
    "clock_adjtime": 305, "adjtimex": 159, "open_by_handle_at": 304, "name_to_handle_at": 303,
    "quotactl": 179, "lookup_dcookie": 212, "sethostname": 170, "setdomainname": 171,
    "syslog": 103, "vhangup": 153, "nfsservctl": 180, "iopl": 172, "ioperm": 173,
    "socket": 41, "clone": 56, "clone3": 435, "seccomp": 317,
    "flock": 73, "inotify_init": 253, "inotify_init1": 294, "inotify_add_watch": 254,
    "fanotify_init": 300, "fanotify_mark": 301, "shmget": 29, "shmat": 30, "shmctl": 31,
    "msgget": 68, "msgsnd": 69, "msgrcv": 70, "msgctl": 71, "semget": 64, "semop": 65,
    "semtimedop": 220, "semctl": 66, "mq_open": 240, "mq_unlink": 241, "mq_timedsend": 242,
    "mq_timedreceive": 243, "mq_notify": 244, "mq_getsetattr": 245, "fcntl": 72,
    "setpriority": 141, "ioprio_set": 251, "sched_setaffinity": 203, "sched_setscheduler": 144,
    "sched_setparam": 142, "sched_setattr": 314, "prlimit64": 302, "migrate_pages": 256,
    "move_pages": 279,
}  # fmt: skip
_AARCH64 = {
    "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kcmp": 272,
    "pidfd_getfd": 438, "mount": 40, "umount2": 39, "unshare": 97, "setns": 268,
    "chroot": 51, "pivot_root": 41, "move_mount": 429, "open_tree": 428, "fsopen": 430,
    "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442, "bpf": 280,
    "perf_event_open": 241, "userfaultfd": 282, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "add_key": 217, "request_key": 218, "keyctl": 219,
    "init_module": 105, "finit_module": 273, "delete_module": 106, "kexec_load": 104,
    "kexec_file_load": 294, "reboot": 142, "execve": 221, "execveat": 281, "swapon": 224,
    "swapoff": 225, "acct": 89, "settimeofday": 170, "clock_settime": 112,
    "clock_adjtime": 266, "adjtimex": 171, "open_by_handle_at": 265, "name_to_handle_at": 264,
    "quotactl": 60, "lookup_dcookie": 18, "sethostname": 161, "setdomainname": 162,
    "syslog": 116, "vhangup": 58, "nfsservctl": 42,
    "socket": 198, "clone": 220, "clone3": 435, "seccomp": 277,
    "flock": 32, "inotify_init1": 26, "inotify_add_watch": 27, "fanotify_init": 262,
    "fanotify_mark": 263, "shmget": 194, "shmat": 196, "shmctl": 195, "msgget": 186,
    "msgsnd": 189, "msgrcv": 188, "msgctl": 187, "semget": 190, "semop": 193, "semtimedop": 192,
    "semctl": 191, "mq_open": 180, "mq_unlink": 181, "mq_timedsend": 182,
    "mq_timedreceive": 183, "mq_notify": 184, "mq_getsetattr": 185, "fcntl": 25,
    "setpriority": 140, "ioprio_set": 30, "sched_setaffinity": 122, "sched_setscheduler": 119,
    "sched_setparam": 118, "sched_setattr": 274, "prlimit64": 261, "migrate_pages": 238,
    "move_pages": 239,
}  # fmt: skip
# AUDIT_ARCH_* values: EM_* | __AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE
ARCHES = {"x86_64": (0xC000003E, _X86_64), "aarch64": (0xC00000B7, _AARCH64)}
_X32_SYSCALL_BIT = 0x40000000


class SeccompUnavailable(Exception):
    """This machine's architecture or kernel cannot take the filter."""


def _insn(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def build_program(machine: str, allow_inet: bool = False) -> bytes:
    """The BPF program for `machine` (platform.machine()), as packed sock_filter structs."""
    if machine not in ARCHES:
        raise SeccompUnavailable(f"no syscall table for {machine}")
    audit_arch, numbers = ARCHES[machine]
    denied = [numbers[name] for name in DENIED if name in numbers]
    errno_eperm = SECCOMP_RET_ERRNO | errno.EPERM
    program: list[bytes] = [
        _insn(_BPF_LD_W_ABS, 0, 0, _ARCH),
        _insn(_BPF_JEQ_K, 1, 0, audit_arch),
        _insn(_BPF_RET_K, 0, 0, SECCOMP_RET_KILL_PROCESS),  # another ABI: never expected
        _insn(_BPF_LD_W_ABS, 0, 0, _NR),
    ]
    if machine == "x86_64":  # the x32 ABI reaches the same calls under other numbers
        program += [
            _insn(_BPF_JSET_K, 0, 1, _X32_SYSCALL_BIT),
            _insn(_BPF_RET_K, 0, 0, errno_eperm),
        ]
    for number in denied:
        program += [_insn(_BPF_JEQ_K, 0, 1, number), _insn(_BPF_RET_K, 0, 0, errno_eperm)]
    # clone3 passes its flags in memory BPF cannot read: ENOSYS makes libc fall back to clone.
    program += [
        _insn(_BPF_JEQ_K, 0, 1, numbers["clone3"]),
        _insn(_BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS),
        _insn(_BPF_JEQ_K, 0, 4, numbers["clone"]),
        _insn(_BPF_LD_W_ABS, 0, 0, _ARG0_LOW),
        _insn(_BPF_JSET_K, 0, 1, CLONE_NAMESPACE_FLAGS),
        _insn(_BPF_RET_K, 0, 0, errno_eperm),
        _insn(_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]
    program += _fcntl_checks(numbers["fcntl"])
    for name, pid_argument, which in SELF_ONLY:
        program += _self_only(numbers[name], pid_argument, which)
    program += _socket_checks(numbers["socket"], allow_inet)
    program.append(_insn(_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    return b"".join(program)


def _fcntl_checks(fcntl_nr: int) -> list[bytes]:
    """fcntl(fd, cmd): every command but the locking, leasing and watching ones."""
    count = len(DENIED_FCNTL)
    block = [_insn(_BPF_JEQ_K, 0, count + 3, fcntl_nr), _insn(_BPF_LD_W_ABS, 0, 0, _ARG1_LOW)]
    for position, command in enumerate(DENIED_FCNTL):
        block.append(_insn(_BPF_JEQ_K, count - position, 0, command))  # → the EPERM below
    block += [
        _insn(_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        _insn(_BPF_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.EPERM),
    ]
    return block


def _self_only(nr: int, pid_argument: int, which: int | None) -> list[bytes]:
    """The call is allowed when its pid argument is 0 (the caller), and, for calls that take
    a `which` first, when that names a single process."""
    eperm, pid_offset = SECCOMP_RET_ERRNO | errno.EPERM, _ARG0_LOW + 8 * pid_argument
    if which is None:
        return [
            _insn(_BPF_JEQ_K, 0, 4, nr),
            _insn(_BPF_LD_W_ABS, 0, 0, pid_offset),
            _insn(_BPF_JEQ_K, 1, 0, 0),  # → allow
            _insn(_BPF_RET_K, 0, 0, eperm),
            _insn(_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        ]
    return [
        _insn(_BPF_JEQ_K, 0, 6, nr),
        _insn(_BPF_LD_W_ABS, 0, 0, _ARG0_LOW),
        _insn(_BPF_JEQ_K, 0, 2, which),  # another `which` → EPERM
        _insn(_BPF_LD_W_ABS, 0, 0, pid_offset),
        _insn(_BPF_JEQ_K, 1, 0, 0),  # → allow
        _insn(_BPF_RET_K, 0, 0, eperm),
        _insn(_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]


def _socket_checks(socket_nr: int, allow_inet: bool) -> list[bytes]:
    """socket(domain, type, protocol): AF_UNIX; with `allow_inet` (the trainer and the ranks,
    in their private network namespace) also AF_INET and route netlink, which gloo reads
    interfaces with.
    Every other family fails with EAFNOSUPPORT — AF_VSOCK, for one, is in no namespace."""
    refuse = SECCOMP_RET_ERRNO | errno.EAFNOSUPPORT
    if not allow_inet:
        return [
            _insn(_BPF_JEQ_K, 0, 4, socket_nr),
            _insn(_BPF_LD_W_ABS, 0, 0, _ARG0_LOW),
            _insn(_BPF_JEQ_K, 1, 0, AF_UNIX),
            _insn(_BPF_RET_K, 0, 0, refuse),
            _insn(_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
        ]
    return [
        _insn(_BPF_JEQ_K, 0, 8, socket_nr),  # not socket: on to the final allow
        _insn(_BPF_LD_W_ABS, 0, 0, _ARG0_LOW),
        _insn(_BPF_JEQ_K, 5, 0, AF_UNIX),  # → allow
        _insn(_BPF_JEQ_K, 4, 0, AF_INET),  # → allow
        _insn(_BPF_JEQ_K, 0, 2, AF_NETLINK),  # not netlink → refuse
        _insn(_BPF_LD_W_ABS, 0, 0, _ARG2_LOW),
        _insn(_BPF_JEQ_K, 1, 0, NETLINK_ROUTE),  # → allow
        _insn(_BPF_RET_K, 0, 0, refuse),
        _insn(_BPF_RET_K, 0, 0, SECCOMP_RET_ALLOW),
    ]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def install_filter(allow_inet: bool = False) -> str:
    """Install the filter on every thread of this process; return a description."""
    machine = platform.machine()
    program = build_program(machine, allow_inet)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.cast(buffer, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    number = ARCHES[machine][1]["seccomp"]
    result = libc.syscall(
        number, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, ctypes.byref(fprog)
    )
    if result != 0:
        code = ctypes.get_errno() if result < 0 else 0
        why = errno.errorcode.get(code, str(code)) if code else f"thread {result} refused TSYNC"
        raise SeccompUnavailable(f"seccomp(SET_MODE_FILTER) failed: {why}")
    sockets = "AF_UNIX, AF_INET and route netlink" if allow_inet else "AF_UNIX only"
    return (
        f"{len(DENIED)} syscalls denied, no exec, no namespaces, no file locks, watches or "
        f"IPC objects; priority, affinity and limits of itself only; sockets: {sockets}"
    )
