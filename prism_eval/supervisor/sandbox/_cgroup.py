"""Supervisor: a cgroup (v1 memory and pids controllers) around one worker.

The memory limit makes an out-of-memory kill hit the worker only, and tells us afterwards
that it happened (`oom_kill` in memory.oom_control); the pids limit bounds fork bombs for
root too, where RLIMIT_NPROC does not apply. Where the hierarchy is missing or read-only (an
unprivileged container, a pure cgroup v2 host without delegation) the layer is reported
unavailable and the rlimits still hold.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from prism_eval.protocol import LayerReport

V1_ROOT = Path("/sys/fs/cgroup")
PARENT = "prism-eval"


class WorkerCgroup:
    """Memory and pids cgroups for one worker, created before it runs and removed after."""

    def __init__(self, name: str, memory_limit_bytes: int, pids_limit: int) -> None:
        self.paths: dict[str, Path] = {}
        self.reports: list[LayerReport] = []
        limits = {
            "memory": {"memory.limit_in_bytes": memory_limit_bytes},
            "pids": {"pids.max": pids_limit},
        }
        for controller, settings in limits.items():
            layer = f"cgroup_{controller}"
            path = V1_ROOT / controller / PARENT / name
            try:
                if not (V1_ROOT / controller / "cgroup.procs").is_file():
                    raise OSError(f"no cgroup v1 {controller} hierarchy at {V1_ROOT / controller}")
                path.mkdir(parents=True, exist_ok=True)
                for file, value in settings.items():
                    (path / file).write_text(str(value))
            except OSError as exc:
                self.reports.append(LayerReport(name=layer, state="unavailable", detail=str(exc)))
                continue
            self.paths[controller] = path
            detail = ", ".join(f"{k}={v}" for k, v in settings.items())
            self.reports.append(LayerReport(name=layer, state="active", detail=detail))

    def add(self, pid: int) -> None:
        """Move a process (and so its future children) into every cgroup."""
        for path in self.paths.values():
            with contextlib.suppress(OSError):
                (path / "cgroup.procs").write_text(str(pid))

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of this cgroup for memory."""
        path = self.paths.get("memory")
        if path is None:
            return False
        try:
            for line in (path / "memory.oom_control").read_text().splitlines():
                if line.startswith("oom_kill ") and int(line.split()[1]) > 0:
                    return True
        except (OSError, ValueError):
            return False
        return False

    def peak_memory_bytes(self) -> int | None:
        """The highest memory use the cgroup saw."""
        path = self.paths.get("memory")
        with contextlib.suppress(OSError, ValueError):
            return int((path / "memory.max_usage_in_bytes").read_text()) if path else None
        return None

    def _members(self) -> list[int]:
        members: set[int] = set()
        for path in self.paths.values():
            with contextlib.suppress(OSError, ValueError):
                members.update(int(p) for p in (path / "cgroup.procs").read_text().split())
        return sorted(members)

    def kill_all(self, attempts: int = 50) -> None:
        """SIGKILL every member until none is left (a fork bomb keeps adding members)."""
        for _ in range(attempts):
            members = self._members()
            if not members:
                return
            for pid in members:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.02)

    def remove(self) -> None:
        """Kill what is left and remove the cgroups."""
        self.kill_all()
        for path in self.paths.values():
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.02)
