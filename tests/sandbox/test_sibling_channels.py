"""Workers cannot talk to each other (docs/scoring.md §4): the prefix audit relies on an auditor
that learns nothing of a batch the predictor saw. Workers may share a uid, so each channel that
needs only that is closed: other processes' /proc entries, cgroup and memory counters, file
locks, leases and inotify on files both can open, SysV IPC, and setting another process's
priority, CPU affinity or limits (a forked child stands in for a sibling: same uid, same sandbox).
"""

from __future__ import annotations

from tests.sandbox.conftest import RunAttack, reason

CHANNELS = """
import ctypes, errno, fcntl, os, resource, time

def outcome(name, call):
    try:
        call()
        return f"{name}: OPEN"
    except OSError as exc:
        return f"{name}: {errno.errorcode.get(exc.errno, exc.errno)}"

def libc_call(name, *args):
    libc = ctypes.CDLL(None, use_errno=True)
    def call():
        if getattr(libc, name)(*args) == -1:
            raise OSError(ctypes.get_errno(), name)
    return call

def attack(ctx):
    child = os.fork()
    if child == 0:
        time.sleep(30)
        os._exit(0)
    bundle_file = open(__file__, "rb")
    outcomes = [
        outcome("proc-parent", lambda: open(f"/proc/{os.getppid()}/cmdline", "rb").read()),
        outcome("proc-child", lambda: open(f"/proc/{child}/cmdline", "rb").read()),
        outcome("proc-self", lambda: open("/proc/self/status", "rb").read()),
        outcome("meminfo", lambda: open("/proc/meminfo", "rb").read()),
        outcome("cgroups", lambda: os.listdir("/sys/fs/cgroup")),
        outcome("flock", lambda: fcntl.flock(bundle_file, fcntl.LOCK_SH)),
        outcome("lockf", lambda: fcntl.lockf(bundle_file, fcntl.LOCK_SH)),
        outcome("inotify", libc_call("inotify_init1", 0)),
        outcome("shmget", libc_call("shmget", 0, 4096, 0o1600)),
        outcome("msgget", libc_call("msgget", 0, 0o1600)),
        outcome("nice-child", lambda: os.setpriority(os.PRIO_PROCESS, child, 10)),
        outcome("nice-user", lambda: os.setpriority(os.PRIO_USER, 0, 10)),
        outcome("nice-self", lambda: os.setpriority(os.PRIO_PROCESS, 0, 1)),
        outcome("affinity-child", lambda: os.sched_setaffinity(child, {0})),
        outcome("affinity-self", lambda: os.sched_setaffinity(0, os.sched_getaffinity(0))),
        outcome("prlimit-child", lambda: resource.prlimit(child, resource.RLIMIT_NOFILE)),
    ]
    os.kill(child, 9)
    raise RuntimeError("; ".join(outcomes))
"""


def test_workers_have_no_channel_to_each_other(run_attack: RunAttack) -> None:
    status, rule, message = reason(run_attack(CHANNELS))
    assert (status, rule) == ("failed", "train.exception")
    found = dict(part.split(": ") for part in message.split("RuntimeError: ", 1)[1].split("; "))
    assert found.pop("proc-self") == "OPEN"  # the worker's own /proc still works
    assert found.pop("nice-self") == "OPEN"
    assert found.pop("affinity-self") == "OPEN"
    assert found == {
        "proc-parent": "EACCES",
        "proc-child": "EACCES",
        "meminfo": "EACCES",
        "cgroups": "EACCES",
        "flock": "EPERM",
        "lockf": "EPERM",
        "inotify": "EPERM",
        "shmget": "EPERM",
        "msgget": "EPERM",
        "nice-child": "EPERM",
        "nice-user": "EPERM",
        "affinity-child": "EPERM",
        "prlimit-child": "EPERM",
    }
