"""Process escapes: the supervisor's environment, ptrace, process_vm_readv, exec, fork bombs."""

from __future__ import annotations

import subprocess

from tests.sandbox.conftest import RunAttack, layer_state, reason

SECRET = "prism-test-secret-7f3a9c"


def test_supervisor_environment_does_not_leak(run_attack: RunAttack) -> None:
    result = run_attack(
        f"""
        import os

        def attack(ctx):
            outcomes = []
            if any({SECRET!r} in value for value in os.environ.values()):
                outcomes.append("LEAK: the secret is in the worker's environment")
            try:
                with open(f"/proc/{{os.getppid()}}/environ", "rb") as handle:
                    data = handle.read()
                outcomes.append("LEAK" if {SECRET!r}.encode() in data else "read environ")
            except OSError as exc:
                outcomes.append(f"environ: {{exc.strerror}}")
            raise RuntimeError("; ".join(outcomes))
        """,
        env={"PRISM_TEST_SECRET": SECRET},
    )
    _, rule, message = reason(result)
    assert rule == "train.exception"
    assert "LEAK" not in message and "read environ" not in message
    assert "environ: Permission denied" in message
    assert SECRET not in result.stdout.decode()


def test_ptrace_and_process_vm_readv_on_the_supervisor_are_refused(run_attack: RunAttack) -> None:
    result = run_attack(
        """
        import ctypes, os

        class IoVec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

        def attack(ctx):
            libc = ctypes.CDLL(None, use_errno=True)
            target = os.getppid()
            outcomes = []
            if libc.ptrace(16, target, None, None) == 0:  # PTRACE_ATTACH
                outcomes.append("ATTACHED")
            else:
                outcomes.append(f"ptrace: errno {ctypes.get_errno()}")
            buffer = ctypes.create_string_buffer(64)
            local = IoVec(ctypes.cast(buffer, ctypes.c_void_p), 64)
            remote = IoVec(0x400000, 64)
            got = libc.process_vm_readv(target, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
            outcomes.append("READ" if got > 0 else f"process_vm_readv: errno {ctypes.get_errno()}")
            raise RuntimeError("; ".join(outcomes))
        """
    )
    _, rule, message = reason(result)
    assert rule == "train.exception"
    assert "ptrace: errno 1" in message and "process_vm_readv: errno 1" in message


def test_exec_of_a_shell_is_refused(run_attack: RunAttack) -> None:
    result = run_attack(
        """
        import os, subprocess

        def attack(ctx):
            outcomes = []
            try:
                subprocess.run(["/bin/sh", "-c", "echo pwned"], check=True)
                outcomes.append("RAN")
            except OSError as exc:
                outcomes.append(f"subprocess: {exc.strerror}")
            try:
                os.execv("/bin/sh", ["/bin/sh", "-c", "echo pwned"])
            except OSError as exc:
                outcomes.append(f"execv: {exc.strerror}")
            raise RuntimeError("; ".join(outcomes))
        """
    )
    _, rule, message = reason(result)
    assert rule == "train.exception"
    assert "RAN" not in message
    assert "subprocess: Operation not permitted" in message
    assert "execv: Operation not permitted" in message


def test_new_namespaces_are_refused(run_attack: RunAttack) -> None:
    result = run_attack(
        """
        import ctypes, os

        def attack(ctx):
            libc = ctypes.CDLL(None, use_errno=True)
            outcomes = []
            for name, flag in [("user", 0x10000000), ("net", 0x40000000), ("mount", 0x00020000)]:
                if libc.unshare(flag) == 0:
                    outcomes.append(f"{name}: UNSHARED")
                else:
                    outcomes.append(f"{name}: errno {ctypes.get_errno()}")
            raise RuntimeError("; ".join(outcomes))
        """
    )
    _, _, message = reason(result)
    assert "UNSHARED" not in message
    assert message.count("errno 1") == 3


def _worker_pids() -> set[str]:
    found = subprocess.run(["pgrep", "-f", "prism_eval.worker"], capture_output=True, text=True)
    return set(found.stdout.split())


def test_fork_bomb_is_bounded_and_cleaned_up(run_attack: RunAttack) -> None:
    # Another evaluation on this host (a parallel test run) may have workers of its own.
    before = _worker_pids()
    result = run_attack(
        """
        import os, time

        def attack(ctx):
            while True:
                try:
                    os.fork()
                except OSError:
                    time.sleep(0.01)
        """,
        config={"pids_limit": 64, "train_timeout_s": 15},
    )
    status, rule, _ = reason(result)
    assert (status, rule) == ("failed", "train.timeout")
    assert layer_state(result, "cgroup_pids") == "active"
    assert _worker_pids() - before == set()


def test_a_worker_holds_no_descriptor_but_its_own(run_attack: RunAttack) -> None:
    # Workers are forked from the evaluation's zygote: whatever it or an earlier worker had
    # open (its channel to the supervisor, other workers' pipes and buffers) must not reach a
    # later one. The trainer holds stdin, stdout, stderr and its channel, nothing else.
    result = run_attack(
        """
        import os, sys

        def attack(ctx):
            channel = sys.argv[sys.argv.index("--fd") + 1]
            fds = sorted(set(os.listdir("/proc/self/fd")) - {"0", "1", "2", channel})
            targets = [os.readlink(f"/proc/self/fd/{fd}") for fd in fds if os.path.exists(
                f"/proc/self/fd/{fd}")]
            raise RuntimeError(f"extra descriptors: {targets}")
        """
    )
    _, rule, message = reason(result)
    assert rule == "train.exception"
    assert message.endswith("extra descriptors: []"), message
