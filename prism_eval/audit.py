"""Supervisor: the audit stage — the referee's figures against the reported stream (DESIGN §6).

- Step-0 replay: batch 0's loss from a freshly built model under the forced seed must equal
  the reported one (relative tolerance `audit_replay_rel_tol`, float noise on the same device
  class). A difference means the model was changed before scoring began, or batch 0 was
  forged.
- Final consistency: the saved weights, loaded strictly into a fresh model in a fresh process
  (no state from training survives there), redo the last scored batches. A trained model does
  at least about as well on data it has just learned from as it did online, so the final bpb
  may exceed the online bpb by `audit_final_rel_tol` (relative) plus `audit_final_abs_tol_bpb`
  at most — a margin far above training noise and far below what a forged capture gains.
- Held-out: the twin and the trained model score the held-out split with the run's tokenizer,
  geometry and byte accounting: heldout_delta = bpb(twin) - bpb(trained); the gap is the
  trained model's held-out bpb minus its bpb on the recent train batches.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prism_eval.config import EvalConfig
from prism_eval.errors import Failed, PrismError, Rejected
from prism_eval.protocol import (
    AuditBatch,
    AuditDone,
    AuditEnd,
    AuditLoss,
    Failure,
    JobSpec,
    ProtocolError,
)
from prism_eval.record import AuditFigures
from prism_eval.sandbox.launch import WorkerProcess, WorkerTimeout
from prism_eval.sandbox.session import OnReady, failure_error, lost_worker_error, start_job
from prism_eval.scoring import bits_per_byte
from prism_eval.stream import PackedBatch

AUDIT_FAILURES: dict[str, tuple[type[PrismError], str, str]] = {
    "import": (Failed, "audit.import_failed", "importing the architecture script raised"),
    "build_model": (Failed, "audit.build_failed", "build_model(ctx) raised in the referee"),
    "load_weights": (
        Failed,
        "audit.weights_mismatch",
        "final.safetensors does not load into a freshly built model (strict keys and shapes)",
    ),
    "audit_forward": (Failed, "audit.forward_failed", "the model's forward raised in the referee"),
}


@dataclass(frozen=True)
class ScoredBatch:
    """A batch the stream scored: its rows and bytes (supervisor's) and its reported nats."""

    batch: PackedBatch
    nats: float


def _score(
    worker: WorkerProcess,
    role: Literal["replay", "recent", "heldout"],
    batches: list[PackedBatch],
    config: EvalConfig,
    spec: JobSpec,
    deadline: float,
) -> list[AuditLoss]:
    """Send each batch in turn and collect the referee's losses (lockstep)."""
    losses = []
    for index, batch in enumerate(batches):
        rows, cols = batch.rows.shape
        worker.send(
            AuditBatch(role=role, index=index, rows=rows, cols=cols),
            batch.rows.tobytes(),
        )
        message = worker.receive(config.idle_timeout_s, deadline)
        if isinstance(message, Failure):
            raise failure_error(message, AUDIT_FAILURES, spec.bundle_dir, "audit")
        if not isinstance(message, AuditLoss) or message.role != role or message.index != index:
            raise ProtocolError(f"expected the referee's loss for {role} batch {index}")
        if (message.twin_nats is None) != (role == "recent") or (message.trained_nats is None) != (
            role == "replay"
        ):
            raise ProtocolError(f"the referee's loss for {role} batch {index} lacks a figure")
        losses.append(message)
    return losses


def _bpb(nats: list[float], batches: list[PackedBatch]) -> float:
    return bits_per_byte(math.fsum(nats), max(1, sum(b.bytes for b in batches)))


def check_step0(reported: float, replayed: float, rel_tol: float) -> None:
    """Batch 0 must score the same under the forced-init twin as it did in training."""
    if abs(replayed - reported) > rel_tol * max(1.0, abs(reported)):
        raise Rejected(
            "audit.step0_mismatch",
            f"batch 0 scores {replayed:.6f} nats on a freshly built model but the stream "
            f"reported {reported:.6f}: the model was changed before scoring began",
            hint="build and initialize the whole model in build_model(ctx); the first batch's "
            "loss is taken before any training",
        )


def check_final(online_bpb: float, final_bpb: float, config: EvalConfig, count: int) -> None:
    """The saved weights must do about as well on the last batches as the stream claimed."""
    allowed = online_bpb * (1 + config.audit_final_rel_tol) + config.audit_final_abs_tol_bpb
    if final_bpb > allowed:
        raise Rejected(
            "audit.capture_mismatch",
            f"the saved model scores {final_bpb:.4f} bpb on the last {count} scored batches, but "
            f"the stream reported {online_bpb:.4f} bpb for them (at most {allowed:.4f} allowed): "
            "the reported losses are better than the scored model achieves",
            hint="the model handed to iter_train_batches must be the model you train and save",
        )


def run_audit(
    spec: JobSpec,
    scratch_dir: Path,
    config: EvalConfig,
    *,
    first: ScoredBatch,
    recent: list[ScoredBatch],
    heldout: list[PackedBatch],
    on_ready: OnReady | None = None,
) -> AuditFigures:
    """Run the referee worker and check its figures; raise Rejected/Failed on a breach."""
    worker, _, _ = start_job(spec, scratch_dir, config, on_ready=on_ready)
    # One wall-clock budget for the whole referee, not one per role.
    deadline = time.monotonic() + config.probe_timeout_s + config.train_timeout_s
    try:
        replay = _score(worker, "replay", [first.batch], config, spec, deadline)[0]
        redone = _score(worker, "recent", [s.batch for s in recent], config, spec, deadline)
        held = _score(worker, "heldout", heldout, config, spec, deadline)
        worker.send(AuditEnd())
        if not isinstance(worker.receive(config.idle_timeout_s, deadline), AuditDone):
            raise ProtocolError("expected audit_done")
    except (WorkerTimeout, ProtocolError) as exc:
        raise lost_worker_error("audit", worker, exc) from exc
    except PrismError:
        worker.kill()
        raise
    worker.close()
    assert replay.twin_nats is not None
    check_step0(first.nats, replay.twin_nats, config.audit_replay_rel_tol)
    recent_batches = [s.batch for s in recent]
    online_bpb = _bpb([s.nats for s in recent], recent_batches)
    final_bpb = _bpb([loss.trained_nats for loss in redone if loss.trained_nats is not None],
                     recent_batches)  # fmt: skip
    check_final(online_bpb, final_bpb, config, len(recent))
    figures = AuditFigures(
        step0_reported_nats=first.nats,
        step0_replayed_nats=replay.twin_nats,
        recent_batches=len(recent),
        recent_online_bpb=online_bpb,
        recent_final_bpb=final_bpb,
    )
    if held:
        figures = figures.model_copy(
            update={
                "heldout_bytes": sum(b.bytes for b in heldout),
                "heldout_twin_bpb": _bpb(
                    [x.twin_nats for x in held if x.twin_nats is not None], heldout
                ),
                "heldout_trained_bpb": _bpb(
                    [x.trained_nats for x in held if x.trained_nats is not None], heldout
                ),
            }
        )
    return figures
