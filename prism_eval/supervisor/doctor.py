"""Supervisor: `prism-eval doctor` — what this host gives an evaluation, checked for real.

The isolation table comes from a real worker: one is started with the `selftest` job, applies
every layer exactly as an evaluation would, reports each layer's state and exits. The other
checks cover what a run needs before any worker: tokenizers, the default data, a GPU, and
whether ranks (`run --nproc N`) can run here.
"""

from __future__ import annotations

import importlib.metadata
import platform
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from prism_eval import __version__
from prism_eval.errors import PrismError
from prism_eval.protocol import JobSpec, LayerReport, SandboxSpec
from prism_eval.supervisor.attest import gpu_inventory
from prism_eval.supervisor.config import MAX_RANKS, EvalConfig
from prism_eval.supervisor.data import load_tokenizer, verify_data_dir
from prism_eval.supervisor.sandbox import (
    inet_socket_refusal,
    prepare_worker_dirs,
    sandbox_spec,
    start_job,
)
from prism_eval.tokenizer_files import TOKENIZER_NAMES


class Check(BaseModel):
    """One line of the doctor's report."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    ok: bool
    detail: str
    optional: bool = False


class DoctorReport(BaseModel):
    """Everything the doctor found."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str
    checks: list[Check]
    isolation: list[LayerReport]
    worker_start_seconds: float


def selftest_spec(work_dir: Path, config: EvalConfig, *, isolated: bool = True) -> JobSpec:
    """A `selftest` job in `work_dir`; `isolated=False` turns every layer off (bench only)."""
    bundle, scratch, artifacts = work_dir / "bundle", work_dir / "scratch", work_dir / "artifacts"
    for path in (bundle, scratch, artifacts):
        path.mkdir(exist_ok=True)
    sandbox = sandbox_spec(
        "selftest", config, bundle_dir=bundle, scratch_dir=scratch, artifacts_dir=artifacts,
        readable_data_dir=None, protected=[],
    )  # fmt: skip
    if not isolated:
        sandbox = SandboxSpec(
            network_namespace=False, no_new_privs=False, drop_to_uid=None,
            drop_capabilities=False, landlock=False, read_paths=[], write_paths=[],
            device_paths=[], seccomp=False, allow_inet=False, rlimits={},
        )  # fmt: skip
    prepare_worker_dirs(work_dir, [scratch, artifacts], sandbox.drop_to_uid)
    return JobSpec(
        job="selftest", bundle_dir=str(bundle), architecture_file="architecture.py",
        training_file="training.py", build_symbol="build_model", train_symbol="train",
        seed=config.seed, device=config.device, threads=config.threads, tokenizer="byte",
        vocab_size=257, bos_id=256, max_seq_len=config.max_seq_len,
        max_batch_size=config.max_batch_size, max_params=config.max_params,
        byte_budget=config.byte_budget, artifacts_dir=str(artifacts), data_dir=None,
        final_weights_path=str(artifacts / "final.safetensors"), sandbox=sandbox,
    )  # fmt: skip


def start_selftest(config: EvalConfig, *, isolated: bool = True) -> tuple[list[LayerReport], float]:
    """Start a selftest worker; return its layers and the seconds until it was ready."""
    with tempfile.TemporaryDirectory(prefix="prism-eval-doctor-") as work:
        spec = selftest_spec(Path(work), config, isolated=isolated)
        started = time.monotonic()
        # The doctor reports every layer's state instead of failing on a required one.
        reporting = config.model_copy(update={"isolation_required": []})
        worker, _, layers = start_job(spec, Path(work) / "scratch", reporting)
        seconds = time.monotonic() - started
        worker.close()
    return layers, seconds


def _tokenizer_checks() -> list[Check]:
    checks = []
    for name in TOKENIZER_NAMES:
        try:
            tokenizer = load_tokenizer(name)
            checks.append(Check(name=f"tokenizer {name}", ok=True,
                                detail=f"vocab {tokenizer.vocab_size:,}"))  # fmt: skip
        except PrismError as exc:
            detail = f"{exc.message} — {exc.hint}" if exc.hint else exc.message
            checks.append(Check(name=f"tokenizer {name}", ok=False, detail=detail, optional=True))
    return checks


def _gpu_check() -> Check:
    names, driver = gpu_inventory()
    if not names:
        return Check(name="gpu", ok=False, detail="no NVIDIA GPU (NVML)", optional=True)
    return Check(name="gpu", ok=True, detail=f"{', '.join(names)}; driver {driver}")


def _ranks_check(layers: list[LayerReport]) -> Check:
    """Whether `run --nproc N > 1` can run here: a private network namespace for the ranks,
    and AF_INET sockets not refused by an outer seccomp profile."""
    network = next((layer for layer in layers if layer.name == "network_namespace"), None)
    if network is None or network.state != "active":
        why = network.detail if network else "not reported"
        return Check(name="ranks (--nproc)", ok=False, optional=True,
                     detail=f"no private network namespace ({why}): --nproc 1 only")  # fmt: skip
    refusal = inet_socket_refusal()
    if refusal is not None:
        return Check(name="ranks (--nproc)", ok=False, optional=True,
                     detail=f"AF_INET refused ({refusal}): --nproc 1 only; in a container use "
                     "deploy/seccomp-ranks.json")  # fmt: skip
    return Check(name="ranks (--nproc)", ok=True, optional=True,
                 detail=f"up to {MAX_RANKS}: private network namespace, loopback TCP")  # fmt: skip


def diagnose(config: EvalConfig, data_dir: Path) -> DoctorReport:
    """Run every check and a selftest worker."""
    checks = [
        Check(name="python", ok=True, detail=platform.python_version()),
        Check(name="torch", ok=True, detail=importlib.metadata.version("torch")),
        *_tokenizer_checks(),
    ]
    try:
        manifest = verify_data_dir(data_dir)
        checks.append(Check(name="default data", ok=True,
                            detail=f"{data_dir}: {manifest.digest[:16]}… verified"))  # fmt: skip
    except PrismError as exc:
        checks.append(Check(name="default data", ok=False, detail=exc.message))
    checks.append(_gpu_check())
    layers, seconds = start_selftest(config)
    checks.append(_ranks_check(layers))
    required = set(config.isolation_required)
    for layer in layers:
        if layer.name in required and layer.state != "active":
            checks.append(Check(name=f"required layer {layer.name}", ok=False, detail=layer.detail))
    return DoctorReport(
        version=__version__, checks=checks, isolation=layers, worker_start_seconds=seconds
    )


def render_diagnosis(report: DoctorReport) -> str:
    """The report as a table for people."""
    lines = [f"prism-eval {report.version}", ""]
    marks = {True: "ok", False: "NO"}
    lines += [
        f"  {marks[c.ok] if c.ok or not c.optional else '--'}  {c.name:<20} {c.detail}"
        for c in report.checks
    ]
    lines += ["", f"isolation (a real worker, ready in {report.worker_start_seconds:.2f} s):"]
    lines += [f"  {layer.state:<14} {layer.name:<18} {layer.detail}" for layer in report.isolation]
    return "\n".join(lines) + "\n"
