"""Supervisor: the environment fingerprint and the isolation table for the record."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import prism_eval
from prism_eval.protocol import LayerReport, Ready
from prism_eval.supervisor.attest.record import Environment, Evaluator, IsolationLayer
from prism_eval.supervisor.config import ISOLATION_LAYERS


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def gpu_inventory() -> tuple[list[str], str | None]:
    """GPU names and the driver version through NVML; none when there is no NVIDIA driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            count = pynvml.nvmlDeviceGetCount()
            names = [
                str(pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(index)))
                for index in range(count)
            ]
            return names, str(pynvml.nvmlSystemGetDriverVersion())
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # NVML raises its own types, or its library is simply absent
        return [], None


def describe_environment(ready: Ready | None) -> Environment:
    """Python, platform, CPU, GPUs (NVML) and what the worker reported about torch."""
    gpus, driver = gpu_inventory()
    return Environment(
        python=platform.python_version(),
        platform=platform.platform(),
        cpu=cpu_model(),
        cpu_count=os.cpu_count() or 0,
        torch=ready.torch_version if ready else None,
        cuda=ready.cuda_version if ready else None,
        device=ready.device_name if ready else None,
        determinism=dict(ready.determinism) if ready else {},
        gpus=gpus,
        driver=driver,
        cudnn=str(ready.cudnn_version) if ready and ready.cudnn_version else None,
    )


def isolation_record(
    layers: list[LayerReport], host_layers: list[LayerReport]
) -> list[IsolationLayer]:
    """Every worker layer of docs/design.md §3 in a fixed order, as the last worker reported it,
    then the outer layers the host gave the evaluator (`host_*`)."""
    by_name = {layer.name: layer for layer in layers}
    record = []
    for name in ISOLATION_LAYERS:
        layer = by_name.get(name)
        if layer is None:
            record.append(
                IsolationLayer(name=name, state="not_requested", detail="no worker was started")
            )
        else:
            record.append(IsolationLayer(name=name, state=layer.state, detail=layer.detail))
    record += [
        IsolationLayer(name=layer.name, state=layer.state, detail=layer.detail)
        for layer in host_layers
    ]
    return record


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
        Path(prism_eval.__file__).resolve().parents[1]  # the checkout, if this is one
    )
    return Evaluator(
        version=version,
        source_commit=commit,
        image_digest=os.environ.get("PRISM_EVAL_IMAGE_DIGEST") or None,
    )
