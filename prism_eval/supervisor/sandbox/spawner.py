"""Supervisor: the zygote's client — workers forked from one process that has torch loaded.

Importing torch costs each worker seconds of CPU; the zygote (`prism_eval/worker/zygote.py`,
started with exec from the same scrubbed environment as any worker) pays it once per evaluation
and forks a worker per `spawn`. The worker still applies every isolation layer itself, in the
child, before any miner byte loads. `spawn` returns a handle that answers like subprocess.Popen
(pid, poll, wait), fed by the zygote's reports: the workers are its children, not ours.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import IO

from prism_eval.errors import EvaluatorError
from prism_eval.protocol import (
    MAX_CHILD_HEADER_BYTES,
    Exited,
    ProtocolError,
    Spawn,
    Spawned,
    encode_frame,
    parse_child_message,
    read_frame,
)

SPAWN_TIMEOUT_S = 120.0  # the zygote answers once torch is imported: a cold, busy machine


class ForkedChild:
    """A worker the zygote forked, with the part of Popen's interface WorkerProcess uses."""

    def __init__(self, pid: int, spawner: Spawner) -> None:
        self.pid = pid
        self._spawner = spawner

    def poll(self) -> int | None:
        """The exit code (minus the signal), or None while it runs."""
        return self._spawner.returncode(self.pid, 0.0)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the exit code; subprocess.TimeoutExpired after `timeout` seconds."""
        code = self._spawner.returncode(self.pid, timeout)
        if code is None:
            raise subprocess.TimeoutExpired(f"worker {self.pid}", timeout or 0.0)
        return code


class Spawner:
    """One zygote for one evaluation; `close` ends it."""

    def __init__(self, scratch_dir: Path, env: dict[str, str]) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock = parent
        self._process = subprocess.Popen(
            [sys.executable, "-s", "-P", "-m", "prism_eval.worker.zygote", "--fd",
             str(child.fileno())],
            pass_fds=(child.fileno(),),
            env=env,
            cwd=scratch_dir,
            stdin=subprocess.DEVNULL,
            stdout=2,  # its own output (warnings at import) goes to the evaluator's log
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        child.close()
        self._requests = itertools.count()
        self._send_lock = threading.Lock()
        self._changed = threading.Condition()
        self._pids: dict[int, int] = {}  # request → pid
        self._exits: dict[int, int] = {}  # pid → return code
        self._alive = True
        self._reader = threading.Thread(target=self._read, name="prism-zygote", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        try:
            while True:
                header, body = read_frame(self._sock, MAX_CHILD_HEADER_BYTES, 0)
                message = parse_child_message(header, body)
                with self._changed:
                    if isinstance(message, Spawned):
                        self._pids[message.request] = message.pid
                    elif isinstance(message, Exited):
                        self._exits[message.pid] = message.returncode
                    self._changed.notify_all()
        except (OSError, ProtocolError):
            with self._changed:
                self._alive = False
                self._changed.notify_all()

    def spawn(
        self, env: dict[str, str], cwd: Path, channel_fd: int, inherit_fds: tuple[int, ...]
    ) -> tuple[ForkedChild, IO[bytes]]:
        """Fork a worker whose channel is `channel_fd` and which keeps `inherit_fds` (at the same
        numbers); return it and the read end of its output."""
        output_read, output_write = os.pipe()
        request = next(self._requests)
        targets = [channel_fd, *inherit_fds]
        message = Spawn(request=request, env=env, cwd=str(cwd), targets=targets)
        frame = encode_frame(message)
        try:
            with self._send_lock:
                sent = socket.send_fds(self._sock, [frame], [output_write, *targets])
                self._sock.sendall(frame[sent:])
        except OSError as exc:
            os.close(output_read)
            raise self._lost(f"cannot reach it: {exc}") from exc
        finally:
            os.close(output_write)
        with self._changed:
            found = self._changed.wait_for(
                lambda: request in self._pids or not self._alive, SPAWN_TIMEOUT_S
            )
            pid = self._pids.pop(request, None)
        if not found or pid is None:
            os.close(output_read)
            raise self._lost("it did not fork a worker")
        return ForkedChild(pid, self), os.fdopen(output_read, "rb")

    def returncode(self, pid: int, timeout: float | None) -> int | None:
        """A child's exit code once the zygote reported it; None after `timeout` seconds."""
        with self._changed:
            self._changed.wait_for(lambda: pid in self._exits or not self._alive, timeout)
            if pid in self._exits:
                return self._exits[pid]
            if not self._alive:  # the zygote is gone: so is any child it had not reported
                return -9
            return None

    def _lost(self, why: str) -> EvaluatorError:
        return EvaluatorError(
            "internal.zygote_failed",
            f"the zygote that starts the workers failed: {why}",
            hint="this is a prism-eval bug or a broken installation; `prism-eval doctor` checks",
        )

    def close(self) -> None:
        """End the zygote (it exits when its channel closes) and wait for it."""
        with contextlib.suppress(OSError):
            self._sock.shutdown(socket.SHUT_RDWR)
        self._sock.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        self._reader.join(timeout=2)
