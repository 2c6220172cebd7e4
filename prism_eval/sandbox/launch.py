"""Supervisor: start a worker process and talk to it under deadlines.

The worker gets a scrubbed environment (an explicit allow-list), its own process group (so
the watchdog can kill everything it started), one inherited socket for the framed protocol,
and stdout/stderr on a pipe that is forwarded to our stderr with a cap, never to stdout.
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
from pathlib import Path
from typing import IO

from pydantic import BaseModel

from prism_eval.protocol import (
    MAX_WORKER_HEADER_BYTES,
    ChannelClosed,
    ProtocolError,
    WorkerMessage,
    encode_frame,
    parse_worker_message,
    read_frame,
)

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
    """The worker missed a deadline."""


def worker_environment(scratch_dir: Path, threads: int) -> dict[str, str]:
    """The allow-listed environment of a worker (DESIGN §3, layer 1)."""
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
    if threads > 0:
        env["OMP_NUM_THREADS"] = str(threads)
    for name in PASSTHROUGH_ENV:
        if name in os.environ:
            env[name] = os.environ[name]
    return env


class WorkerProcess:
    """A running worker: send frames, receive validated messages, kill its process group."""

    def __init__(self, name: str, scratch_dir: Path, threads: int) -> None:
        self.name = name
        (scratch_dir / "tmp").mkdir(parents=True, exist_ok=True)
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock = parent
        self.output_tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self._process = subprocess.Popen(
            [sys.executable, "-s", "-P", "-m", "prism_eval.worker", "--fd", str(child.fileno())],
            pass_fds=(child.fileno(),),
            env=worker_environment(scratch_dir, threads),
            cwd=scratch_dir,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        child.close()
        assert self._process.stdout is not None
        self._forwarder = threading.Thread(
            target=self._forward_output, args=(self._process.stdout,), daemon=True
        )
        self._forwarder.start()

    def _forward_output(self, stream: IO[bytes]) -> None:
        """Copy the worker's output to our stderr (capped), keeping a tail for the record."""
        forwarded = 0
        for raw in stream:
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.output_tail.append(line[:500])
            if forwarded < FORWARD_OUTPUT_CAP_BYTES:
                forwarded += len(raw)
                sys.stderr.write(f"[{self.name}] {line}\n")
                if forwarded >= FORWARD_OUTPUT_CAP_BYTES:
                    sys.stderr.write(f"[{self.name}] … further output not shown\n")

    def send(self, message: BaseModel, body: bytes = b"", timeout_s: float = 30.0) -> None:
        """Send one frame; a worker that stops reading cannot block us past `timeout_s`."""
        self._sock.settimeout(timeout_s)
        try:
            self._sock.sendall(encode_frame(message, body))
        except TimeoutError as exc:
            raise WorkerTimeout(f"{self.name} stopped reading its channel") from exc
        except OSError as exc:
            raise ChannelClosed(f"{self.name} closed its channel: {exc}") from exc

    def receive(self, timeout_s: float) -> WorkerMessage:
        """Receive and validate one message within `timeout_s` seconds."""
        ready, _, _ = select.select([self._sock], [], [], max(0.0, timeout_s))
        if not ready:
            raise WorkerTimeout(f"{self.name} sent nothing for {timeout_s:.0f} s")
        # The frame has started: give the rest of it a short, fixed allowance.
        self._sock.settimeout(10.0)
        try:
            header, body = read_frame(self._sock, MAX_WORKER_HEADER_BYTES, 0)
        except TimeoutError as exc:
            raise WorkerTimeout(f"{self.name} stalled mid-frame") from exc
        except ConnectionError as exc:
            raise ChannelClosed(f"{self.name} closed its channel: {exc}") from exc
        return parse_worker_message(header, body)

    def exit_description(self, wait_s: float = 2.0) -> str:
        """How the worker ended, for messages: exit code or signal."""
        try:
            code = self._process.wait(timeout=wait_s)
        except subprocess.TimeoutExpired:
            return "still running"
        if code < 0:
            return f"killed by signal {signal.Signals(-code).name}"
        return f"exit code {code}"

    def kill(self) -> None:
        """Kill the worker's whole process group and reap it."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self._process.pid, signal.SIGKILL)
        self._process.wait()
        self._sock.close()
        self._forwarder.join(timeout=2)

    def close(self, grace_s: float = 10.0) -> None:
        """Let a finished worker exit on its own for `grace_s`, then kill what is left."""
        deadline = time.monotonic() + grace_s
        while self._process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        self.kill()


__all__ = ["ChannelClosed", "ProtocolError", "WorkerProcess", "WorkerTimeout"]
