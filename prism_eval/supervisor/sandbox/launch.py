"""Supervisor: start a child process and talk to it under deadlines.

A child is a sandboxed worker (`prism_eval.worker`) or the trusted scorer (`prism_eval.scorer`).
It gets a scrubbed environment (an explicit allow-list), its own process group (so the watchdog
can kill everything it started), one inherited socket for the framed protocol, and
stdout/stderr on a pipe that is forwarded to our stderr with a cap, never to stdout.
"""

from __future__ import annotations

import collections
import contextlib
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO, Literal

from pydantic import BaseModel

from prism_eval.protocol import (
    MAX_CHILD_HEADER_BYTES,
    ChannelClosed,
    ChildMessage,
    ProtocolError,
    encode_frame,
    parse_child_message,
    read_frame,
)
from prism_eval.supervisor.sandbox._cgroup import WorkerCgroup
from prism_eval.supervisor.sandbox.spawner import ForkedChild, Spawner

# Variables a worker may inherit; everything else (keys, tokens, paths) stays behind.
PASSTHROUGH_ENV = (
    "CUDA_VISIBLE_DEVICES",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "LD_LIBRARY_PATH",
)
FORWARD_OUTPUT_CAP_BYTES = 256 * 1024
OUTPUT_TAIL_LINES = 40


class WorkerTimeout(Exception):
    """The worker missed a deadline: `wall` (the stage's cap), `idle` (silence), `stalled`."""

    def __init__(self, message: str, kind: Literal["wall", "idle", "stalled"]) -> None:
        super().__init__(message)
        self.kind = kind


class QuotaExceeded(Exception):
    """The worker's artifacts passed their quota."""


Watch = Callable[[], None]  # called about once a second while waiting; raises QuotaExceeded
WATCH_INTERVAL_S = 1.0


def worker_environment(scratch_dir: Path, threads: int) -> dict[str, str]:
    """The allow-listed environment of a worker (docs/design.md §3, layer 1)."""
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": str(scratch_dir),
        "TMPDIR": str(scratch_dir / "tmp"),
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONNOUSERSITE": "1",
        "PYTHONUNBUFFERED": "1",
        "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TIKTOKEN_CACHE_DIR": str(scratch_dir / "tiktoken"),
        "WANDB_MODE": "disabled",
    }
    # Fixed thread counts: MKL and OpenMP may otherwise use fewer threads on a busy host, which
    # splits float sums differently and breaks bit-for-bit reproduction.
    env["OMP_DYNAMIC"] = "FALSE"
    # An idle OpenMP thread spins this many rounds before it sleeps (about 40 ns each here):
    # long enough to bridge the gaps between one step's kernels, short enough that a process
    # which just handed off does not burn a core the next phase needs. At 20000 each hand-off
    # left a core spinning for 0.8 ms; measured per scored step: 21-22 ms at 20000, 19.3-20
    # at 2000, 24-25 at 500 (the loop's kernels start waking threads from sleep).
    env["GOMP_SPINCOUNT"] = "2000"
    env["MKL_DYNAMIC"] = "FALSE"
    # mallopt(3): keep freed memory instead of handing it back to the kernel after every step.
    # A predictor idles while the trainer trains; with glibc's defaults each of its forwards
    # faulted its activations in again (measured: 14 ms of system time in a 100 ms forward).
    # Blocks up to 32 MiB (glibc's largest mmap threshold) come from the heap.
    env["MALLOC_TRIM_THRESHOLD_"] = str(2**30)
    env["MALLOC_MMAP_THRESHOLD_"] = str(32 * 2**20)
    if threads > 0:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
    for name in PASSTHROUGH_ENV:
        if name in os.environ:
            env[name] = os.environ[name]
    return env


class WorkerProcess:
    """A running child: send frames, receive validated messages, kill its process group."""

    def __init__(
        self,
        name: str,
        scratch_dir: Path,
        threads: int,
        cgroup: WorkerCgroup | None = None,
        inherit_fds: tuple[int, ...] = (),
        module: str = "prism_eval.worker",
        spawner: Spawner | None = None,
    ) -> None:
        """Start `module` with exec, or, given a spawner, fork a worker from its zygote."""
        self.name = name
        self.cgroup = cgroup
        self.peak_memory_bytes: int | None = None
        self.oom_killed = False
        self._kill_lock = threading.Lock()  # ranks: another thread may kill this worker too
        self._watched_at = time.monotonic()
        owner = scratch_dir.stat()
        (scratch_dir / "tmp").mkdir(parents=True, exist_ok=True)
        os.chown(scratch_dir / "tmp", owner.st_uid, owner.st_gid)  # TMPDIR: the worker's own
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock = parent
        self.output_tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        env = worker_environment(scratch_dir, threads)
        output: IO[bytes] | None
        try:
            if spawner is None:
                self._process: subprocess.Popen[bytes] | ForkedChild = subprocess.Popen(
                    [sys.executable, "-s", "-P", "-m", module, "--fd", str(child.fileno())],
                    pass_fds=(child.fileno(), *inherit_fds),
                    env=env,
                    cwd=scratch_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
                output = self._process.stdout
            else:
                self._process, output = spawner.spawn(env, scratch_dir, child.fileno(), inherit_fds)
        finally:
            child.close()
        if cgroup is not None:  # before the job is sent: nothing big is allocated yet
            cgroup.add(self._process.pid)
        assert output is not None
        self._forwarder = threading.Thread(target=self._forward_output, args=(output,), daemon=True)
        self._forwarder.start()

    def _forward_output(self, stream: IO[bytes]) -> None:
        """Copy the worker's output to our stderr (capped), keeping a tail for the record."""
        forwarded = 0
        # readline with a limit: a worker printing one endless line cannot fill our memory.
        for raw in iter(lambda: stream.readline(4096), b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.output_tail.append(line[:500])
            if forwarded < FORWARD_OUTPUT_CAP_BYTES:
                forwarded += len(raw)
                sys.stderr.write(f"[{self.name}] {line}\n")
                if forwarded >= FORWARD_OUTPUT_CAP_BYTES:
                    sys.stderr.write(f"[{self.name}] … further output not shown\n")

    def send(
        self,
        message: BaseModel,
        body: bytes = b"",
        timeout_s: float = 30.0,
        fds: tuple[int, ...] = (),
    ) -> None:
        """Send one frame, with descriptors attached to its first byte when `fds` is given; a
        worker that stops reading cannot block us past `timeout_s`."""
        self._sock.settimeout(timeout_s)
        frame = encode_frame(message, body)
        try:
            sent = socket.send_fds(self._sock, [frame], list(fds)) if fds else 0
            self._sock.sendall(frame[sent:])
        except TimeoutError as exc:
            raise WorkerTimeout(f"{self.name} stopped reading its channel", "stalled") from exc
        except OSError as exc:
            raise ChannelClosed(f"{self.name} closed its channel: {exc}") from exc

    def receive(self, idle_s: float, deadline: float, watch: Watch | None = None) -> ChildMessage:
        """Receive and validate one message: within `idle_s` seconds and before `deadline`
        (time.monotonic), calling `watch` about once a second meanwhile."""
        started = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= deadline:
                raise WorkerTimeout(f"{self.name} ran past its wall-clock limit", "wall")
            if now - started >= idle_s:
                raise WorkerTimeout(f"{self.name} sent nothing for {idle_s:.0f} s", "idle")
            wait_s = min(WATCH_INTERVAL_S, deadline - now, idle_s - (now - started))
            ready, _, _ = select.select([self._sock], [], [], max(0.0, wait_s))
            # Once a second, not once a message: a scored step exchanges several.
            if watch is not None and time.monotonic() - self._watched_at >= WATCH_INTERVAL_S:
                self._watched_at = time.monotonic()
                watch()
            if ready:
                break
        # The frame has started: give the rest of it a short, fixed allowance.
        self._sock.settimeout(10.0)
        try:
            header, body = read_frame(self._sock, MAX_CHILD_HEADER_BYTES, 0)
        except TimeoutError as exc:
            raise WorkerTimeout(f"{self.name} stalled mid-frame", "stalled") from exc
        except ConnectionError as exc:
            raise ChannelClosed(f"{self.name} closed its channel: {exc}") from exc
        return parse_child_message(header, body)

    def exit_description(self, wait_s: float = 2.0) -> str:
        """How the worker ended, for messages: exit code or signal."""
        try:
            code = self._process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return "still running"
        if code < 0:
            try:
                return f"killed by signal {signal.Signals(-code).name}"
            except ValueError:  # a real-time signal has no name
                return f"killed by signal {-code}"
        return f"exit code {code}"

    @property
    def pid(self) -> int:
        """The worker's process id (its process group id too)."""
        return self._process.pid

    def kill(self) -> None:
        """Kill the worker's process group and every process in its cgroup, and reap it.

        Safe to call again, from any thread.
        """
        with self._kill_lock:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._process.pid, signal.SIGKILL)
            if self.cgroup is not None:  # children that left the process group (setsid)
                self.cgroup.kill_all()
                self.peak_memory_bytes = self.cgroup.peak_memory_bytes()
                self.oom_killed = self.oom_killed or self.cgroup.oom_killed()
                self.cgroup.remove()
                self.cgroup = None
            self._process.wait()
            self._sock.close()
        self._forwarder.join(timeout=2)

    def close(self, grace_s: float = 10.0) -> None:
        """Let a finished worker exit on its own for `grace_s`, then kill what is left."""
        deadline = time.monotonic() + grace_s
        while self._process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        self.kill()

    def running(self, wait_s: float = 0.5) -> bool:
        """Whether the worker is still alive after a short grace (an exit may be under way)."""
        try:
            self._process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return True
        return False

    def exit_signal(self) -> int | None:
        """The signal that ended the worker, if one did."""
        code = self._process.poll()
        return -code if code is not None and code < 0 else None


__all__ = ["ChannelClosed", "ProtocolError", "QuotaExceeded", "WorkerProcess", "WorkerTimeout"]
