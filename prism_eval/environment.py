"""Supervisor: the environment fingerprint and the isolation table for the record."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from prism_eval.protocol import Ready
from prism_eval.record import Environment, Evaluator, IsolationLayer


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def describe_environment(ready: Ready | None) -> Environment:
    """Python, platform, CPU and what the worker reported about torch and determinism."""
    return Environment(
        python=platform.python_version(),
        platform=platform.platform(),
        cpu=cpu_model(),
        cpu_count=os.cpu_count() or 0,
        torch=ready.torch_version if ready else None,
        cuda=ready.cuda_version if ready else None,
        device=ready.device_name if ready else None,
        determinism=dict(ready.determinism) if ready else {},
    )


_PENDING = "not implemented in this version; the process sandbox is tracked as its own issue"


def isolation_layers() -> list[IsolationLayer]:
    """Each sandbox layer of DESIGN §3 and whether it holds in this version."""
    return [
        IsolationLayer(
            name="environment",
            state="active",
            detail="allow-listed variables; HOME and TMPDIR in a private scratch dir",
        ),
        IsolationLayer(
            name="watchdog",
            state="active",
            detail="own process group; wall-clock and idle limits kill the whole group",
        ),
        *(
            IsolationLayer(name=name, state="unavailable", detail=_PENDING)
            for name in (
                "no_new_privs",
                "unprivileged_user",
                "rlimits",
                "network_namespace",
                "landlock",
                "seccomp",
            )
        ),
    ]


def _git_commit(repo: Path) -> str | None:
    """HEAD's commit when running from a git checkout (read from files; no git binary)."""
    git_dir = repo / ".git"
    try:
        head = (git_dir / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git_dir / ref).is_file():
            return (git_dir / ref).read_text().strip()
        for line in (git_dir / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        return None
    return None


def evaluator_identity(version: str) -> Evaluator:
    """Version, source commit (env PRISM_EVAL_SOURCE_COMMIT or the checkout) and image digest."""
    commit = os.environ.get("PRISM_EVAL_SOURCE_COMMIT") or _git_commit(
        Path(__file__).resolve().parents[1]
    )
    return Evaluator(
        version=version,
        source_commit=commit,
        image_digest=os.environ.get("PRISM_EVAL_IMAGE_DIGEST") or None,
    )
