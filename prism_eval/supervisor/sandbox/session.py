"""Supervisor: one job in one fresh, sandboxed worker — start, hand over the job, await Ready.

Also turns what a worker says went wrong into the supervisor's own verdict: the worker only
reports *where* miner code raised; the rule id and status are chosen here. The isolation
layers the worker reports in Ready were applied before any miner byte ran, so that report
can be trusted; layers the config requires and that did not hold end the run as `error`.
"""

from __future__ import annotations

import re
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel

from prism_eval.errors import EvaluatorError, Failed, PrismError
from prism_eval.protocol import (
    ChannelClosed,
    Failure,
    JobSpec,
    LayerReport,
    ProtocolError,
    Ready,
    ScorerJob,
)
from prism_eval.supervisor.config import EvalConfig
from prism_eval.supervisor.sandbox._cgroup import WorkerCgroup
from prism_eval.supervisor.sandbox.launch import QuotaExceeded, WorkerProcess, WorkerTimeout
from prism_eval.supervisor.sandbox.spawner import Spawner

OnReady = Callable[[Ready, list[LayerReport]], None]
READY_TIMEOUT_S = 120.0  # importing torch on a cold, busy machine
_MEMORY_ERRORS = ("MemoryError", "OutOfMemoryError")
_MEMORY_MESSAGES = ("can't allocate memory", "out of memory", "Cannot allocate memory")

SUPERVISOR_LAYERS = (
    LayerReport(
        name="environment",
        state="active",
        detail="allow-listed variables; HOME and TMPDIR in a private scratch dir",
    ),
    LayerReport(
        name="watchdog",
        state="active",
        detail="wall-clock, idle and artifacts-quota limits kill the process group and cgroup",
    ),
)


def launch_job(
    spec: JobSpec,
    scratch_dir: Path,
    config: EvalConfig,
    inputs: Sequence[tuple[BaseModel, bytes]] = (),
    spawner: Spawner | None = None,
) -> WorkerProcess:
    """Start a sandboxed worker for `spec` (forked from `spawner`'s zygote when given) and send
    it the job and `inputs`; do not wait.

    Inputs go out with the job, while the worker is still importing torch and before any
    miner code runs, so a worker that later dies cannot make these sends fail.
    """
    memory_bytes = config.memory_limit_mib * 2**20
    name = f"rank {spec.rank}" if spec.job == "ranks" else spec.job
    cgroup = WorkerCgroup(f"{spec.job}-{time.monotonic_ns()}", memory_bytes, config.pids_limit)
    inherit = tuple(
        fd
        for fd in (spec.sandbox.join_user_namespace_fd, spec.sandbox.join_network_namespace_fd)
        if fd is not None
    )
    worker = WorkerProcess(name, scratch_dir, spec.threads, cgroup, inherit, spawner=spawner)
    try:
        worker.send(spec)
        for message, body in inputs:
            worker.send(message, body)
    except (WorkerTimeout, ProtocolError) as exc:
        raise _not_started(worker, spec.job, exc) from exc
    return worker


def _not_started(worker: WorkerProcess, job: str, exc: Exception) -> Failed:
    description = worker.exit_description(wait_s=0.5)
    worker.kill()
    return Failed(
        f"{job}.worker_start",
        f"the {job} worker did not start ({exc}; {description})",
        evidence=list(worker.output_tail),
    )


def await_ready(
    worker: WorkerProcess, spec: JobSpec, config: EvalConfig, on_ready: OnReady | None = None
) -> tuple[Ready, list[LayerReport]]:
    """Wait until a launched worker is set up; return its Ready message and every isolation
    layer's state (supervisor and worker side). A required layer that did not hold ends the
    run as `error`."""
    try:
        message = worker.receive(READY_TIMEOUT_S, time.monotonic() + READY_TIMEOUT_S)
    except (WorkerTimeout, ProtocolError) as exc:
        raise _not_started(worker, spec.job, exc) from exc
    if not isinstance(message, Ready):
        worker.kill()
        raise Failed(f"{spec.job}.protocol", f"expected ready, got {message.type}")
    assert worker.cgroup is not None
    layers = [*SUPERVISOR_LAYERS, *worker.cgroup.reports, *message.isolation]
    if on_ready is not None:  # the record shows the layers even when a required one is missing
        on_ready(message, layers)
    required = set(config.isolation_required)
    missing = [layer for layer in layers if layer.name in required and layer.state != "active"]
    if missing:
        worker.kill()
        raise EvaluatorError(
            "sandbox.layer_unavailable",
            "required isolation layers did not hold: "
            + "; ".join(f"{layer.name} ({layer.detail or layer.state})" for layer in missing),
            hint="run on a host that provides them, or change isolation_required in the config",
        )
    return message, layers


def start_job(
    spec: JobSpec,
    scratch_dir: Path,
    config: EvalConfig,
    inputs: Sequence[tuple[BaseModel, bytes]] = (),
    on_ready: OnReady | None = None,
    spawner: Spawner | None = None,
) -> tuple[WorkerProcess, Ready, list[LayerReport]]:
    """`launch_job` then `await_ready`: a sandboxed worker, set up and about to run its job."""
    worker = launch_job(spec, scratch_dir, config, inputs, spawner)
    message, layers = await_ready(worker, spec, config, on_ready)
    return worker, message, layers


def launch_scorer(scratch_dir: Path, config: EvalConfig) -> WorkerProcess:
    """Start the trusted scorer (no sandbox: it runs no miner code); do not wait. It gets a
    cgroup of its own, so its memory is capped and counted apart from the workers'."""
    memory_bytes = config.memory_limit_mib * 2**20
    cgroup = WorkerCgroup(f"scorer-{time.monotonic_ns()}", memory_bytes, config.pids_limit)
    scorer = WorkerProcess(
        "scorer", scratch_dir, config.threads, cgroup, module="prism_eval.scorer"
    )
    try:
        scorer.send(ScorerJob(device=config.device, threads=config.threads))
    except (WorkerTimeout, ProtocolError) as exc:
        raise _scorer_did_not_start(scorer, exc) from exc
    return scorer


def _scorer_did_not_start(scorer: WorkerProcess, exc: Exception) -> EvaluatorError:
    description = scorer.exit_description(wait_s=0.5)
    scorer.kill()
    return EvaluatorError(
        "internal.scorer_failed",
        f"the scorer did not start ({exc}; {description})",
        evidence=list(scorer.output_tail),
    )


def await_scorer(scorer: WorkerProcess) -> None:
    """Wait until a launched scorer is ready."""
    try:
        message = scorer.receive(READY_TIMEOUT_S, time.monotonic() + READY_TIMEOUT_S)
    except (WorkerTimeout, ProtocolError) as exc:
        raise _scorer_did_not_start(scorer, exc) from exc
    if not isinstance(message, Ready):
        scorer.kill()
        raise EvaluatorError("internal.scorer_failed", f"the scorer sent {message.type}")


_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<name>.+)$')


def bundle_frames(untrusted_traceback: str, bundle_dir: str) -> list[str]:
    """The traceback frames inside the bundle, as `file:line in function: code` lines.

    The worker's own frames are left out: a miner needs to see where their code broke.
    """
    lines = untrusted_traceback.splitlines()
    frames: list[str] = []
    prefix = bundle_dir.rstrip("/") + "/"
    for index, line in enumerate(lines):
        match = _FRAME.match(line)
        if match and match["path"].startswith(prefix):
            following = lines[index + 1].strip() if index + 1 < len(lines) else ""
            code = "" if _FRAME.match(following) else following
            where = f"{match['path'][len(prefix) :]}:{match['line']} in {match['name']}"
            frames.append(f"{where}: {code}"[:300] if code else where[:300])
    return frames[-20:]


def failure_error(
    failure: Failure,
    rules: Mapping[str, tuple[type[PrismError], str, str]],
    bundle_dir: str,
    stage: str,
) -> PrismError:
    """Map a worker's Failure to (error class, rule id, what it means) for its `where`."""
    detail = f"{failure.exc_type}: {failure.message}".strip()
    evidence = bundle_frames(failure.traceback, bundle_dir)
    if failure.exc_type in _MEMORY_ERRORS or any(m in failure.message for m in _MEMORY_MESSAGES):
        return Failed(f"{stage}.out_of_memory", f"the worker ran out of memory — {detail}",
                      evidence=evidence)  # fmt: skip
    # A hostile worker may name a step this job has not got: that is its fault, never ours.
    unexpected = (Failed, f"{stage}.protocol", f"the worker reported a failure in {failure.where}")
    error_class, rule_id, meaning = rules.get(failure.where, unexpected)
    return error_class(rule_id, f"{meaning} — {detail}", evidence=evidence)


def lost_worker_error(stage: str, worker: WorkerProcess, exc: Exception) -> PrismError:
    """The error for a worker that died, hung, overran a limit, or broke the protocol."""
    who = f"the {worker.name} worker"
    if isinstance(exc, WorkerTimeout) and exc.kind == "wall":
        rule, what = f"{stage}.timeout", f"the {stage} stage ran past its wall-clock limit"
    elif isinstance(exc, WorkerTimeout) and exc.kind == "idle":
        rule, what = f"{stage}.idle_timeout", f"{who} went silent: {exc}"
    elif isinstance(exc, QuotaExceeded):
        rule, what = f"{stage}.disk_quota", f"{who} {exc}"
    elif isinstance(exc, ChannelClosed) and worker.running():
        rule, what = f"{stage}.channel_closed", f"{who} closed its channel"
    elif isinstance(exc, ChannelClosed):
        rule, what = f"{stage}.worker_died", ""
    else:
        rule, what = f"{stage}.protocol", f"{who} broke the protocol: {exc}"
    worker.kill()
    if rule.endswith(".worker_died"):
        ended = worker.exit_description()
        if worker.oom_killed:
            rule, what = f"{stage}.out_of_memory", f"{who} was killed for memory"
        elif worker.exit_signal() == signal.SIGXCPU:
            rule, what = f"{stage}.cpu_limit", f"{who} used up its CPU-time limit"
        else:
            what = f"{who} ended unexpectedly ({ended})"
    return Failed(rule, what, evidence=list(worker.output_tail))
