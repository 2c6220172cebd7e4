"""Supervisor: one job in one fresh worker — start, hand over the job, await `Ready`.

Also turns what a worker says went wrong into the supervisor's own verdict: the worker only
reports *where* miner code raised; the rule id and status are chosen here.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel

from prism_eval.errors import Failed, PrismError
from prism_eval.protocol import ChannelClosed, Failure, JobSpec, ProtocolError, Ready
from prism_eval.sandbox.launch import WorkerProcess, WorkerTimeout

READY_TIMEOUT_S = 120.0  # importing torch on a cold, busy machine


def start_job(
    spec: JobSpec,
    scratch_dir: Path,
    threads: int,
    inputs: Sequence[tuple[BaseModel, bytes]] = (),
) -> tuple[WorkerProcess, Ready]:
    """Start a worker for `spec`, send it `inputs` too, and wait until it is set up.

    Inputs go out with the job, while the worker is still importing torch and before any
    miner code runs, so a worker that later dies cannot make these sends fail.
    """
    worker = WorkerProcess(spec.job, scratch_dir, threads)
    try:
        worker.send(spec)
        for message, body in inputs:
            worker.send(message, body)
        message = worker.receive(READY_TIMEOUT_S)
    except (WorkerTimeout, ProtocolError) as exc:
        description = worker.exit_description(wait_s=0.5)
        worker.kill()
        raise Failed(
            f"{spec.job}.worker_start",
            f"the {spec.job} worker did not start ({exc}; {description})",
            evidence=list(worker.output_tail),
        ) from exc
    if not isinstance(message, Ready):
        worker.kill()
        raise Failed(f"{spec.job}.protocol", f"expected ready, got {message.type}")
    return worker, message


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
    failure: Failure, rules: Mapping[str, tuple[type[PrismError], str, str]], bundle_dir: str
) -> PrismError:
    """Map a worker's Failure to (error class, rule id, what it means) for its `where`."""
    error_class, rule_id, meaning = rules[failure.where]
    detail = f"{failure.exc_type}: {failure.message}".strip()
    evidence = bundle_frames(failure.traceback, bundle_dir)
    return error_class(rule_id, f"{meaning} — {detail}", evidence=evidence)


def lost_worker_error(stage: str, worker: WorkerProcess, exc: Exception) -> PrismError:
    """The error for a worker that died, hung, or broke the protocol."""
    if isinstance(exc, WorkerTimeout):
        rule, what = f"{stage}.timeout", f"the {stage} worker timed out: {exc}"
    elif isinstance(exc, ChannelClosed):
        rule = f"{stage}.worker_died"
        what = f"the {stage} worker ended unexpectedly ({worker.exit_description()})"
    else:
        rule, what = f"{stage}.protocol", f"the {stage} worker broke the protocol: {exc}"
    worker.kill()
    return Failed(rule, what, evidence=list(worker.output_tail))


def deadline_left(deadline: float) -> float:
    """Seconds left until a monotonic deadline (never negative)."""
    return max(0.0, deadline - time.monotonic())
