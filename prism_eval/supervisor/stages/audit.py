"""Supervisor: the audit stage — the referee's figures against the scored stream.

docs/design.md §6. The referee is a predictor worker (`architecture.py` only, never
`training.py`) that builds the forced-init twin and a second model into which the saved
`final.safetensors` is loaded with strict key matching; it gets inputs with the last column
withheld, like the scored pass, and the trusted scorer computes every loss — no process that runs
miner code holds a target, held-out ones included.

- Step-0 replay: batch 0's loss under the twin must equal the scored one (relative tolerance
  `audit_replay_rel_tol`, float noise on the same device class). A difference means the model
  was changed before scoring began.
- Final consistency: the saved weights redo the last scored batches. Honest training does not
  leave the saved model clearly *worse* on batches it has just learned from than it was before
  learning them (docs/scoring.md derives the tolerance); a model that is, is not the model that
  was scored.
- Held-out: the twin and the trained model score the held-out split with the run's tokenizer,
  geometry and byte accounting: heldout_delta = bpb(twin) - bpb(trained); the gap is the
  trained model's held-out bpb minus its bpb on the recent train batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from prism_eval.errors import EvaluatorError, Failed, PrismError, Rejected
from prism_eval.protocol import (
    JobSpec,
    ModelLayout,
    Predict,
    Predicted,
    PredictorSetup,
    ProtocolError,
    ScoreBatch,
    Scored,
    logits_bytes,
)
from prism_eval.supervisor.attest import AuditFigures
from prism_eval.supervisor.config import EvalConfig
from prism_eval.supervisor.data import PackedBatch
from prism_eval.supervisor.formula import bits_per_byte
from prism_eval.supervisor.sandbox import (
    OnReady,
    Spawner,
    WorkerProcess,
    WorkerTimeout,
    await_ready,
    launch_job,
    lost_worker_error,
)
from prism_eval.supervisor.stages._buffers import SharedBuffers
from prism_eval.supervisor.stages._capture import Limits, expect, set_up_scorer, withhold_last

AUDIT_FAILURES: dict[str, tuple[type[PrismError], str, str]] = {
    "import": (Failed, "audit.import_failed", "importing the architecture script raised"),
    "build_model": (Failed, "audit.build_failed", "build_model(ctx) raised in the referee"),
    "not_a_module": (Failed, "audit.build_failed", "build_model(ctx) returned no nn.Module"),
    "layout": (Failed, "audit.build_failed", "the referee's model cannot be described"),
    "load_weights": (
        Failed,
        "audit.weights_mismatch",
        "final.safetensors does not load into a freshly built model (strict keys and shapes)",
    ),
    "forward": (Failed, "audit.forward_failed", "the model's forward raised in the referee"),
    "output": (Failed, "audit.forward_failed", "the model's output cannot be scored (referee)"),
}
Model = Literal["twin", "trained"]


@dataclass(frozen=True)
class ScoredBatch:
    """A batch the stream scored: its rows and bytes (supervisor's) and its scored nats."""

    batch: PackedBatch
    nats: float


@dataclass(frozen=True)
class Referee:
    """The referee worker and the scorer of the audit stage, under one deadline."""

    worker: WorkerProcess
    scorer: WorkerProcess
    spec: JobSpec
    config: EvalConfig
    limits: Limits

    def nats(self, model: Model, batches: list[PackedBatch], first_index: int) -> list[float]:
        """Each batch's summed nats under `model`, requests numbered from `first_index`."""
        totals = []
        for offset, batch in enumerate(batches):
            index = first_index + offset
            rows, cols = batch.rows.shape
            inputs = withhold_last(batch.rows, self.spec.bos_id)
            self.worker.send(Predict(index=index, model=model, rows=rows, cols=cols),
                             inputs.tobytes())  # fmt: skip
            expect(self.worker, Predicted, index, self.limits, AUDIT_FAILURES,
                   self.spec.bundle_dir, "audit")  # fmt: skip
            totals.append(self._score(index, batch))
        return totals

    def _score(self, index: int, batch: PackedBatch) -> float:
        rows, cols = batch.rows.shape
        try:
            self.scorer.send(
                ScoreBatch(index=index, source="predictor", rows=rows, cols=cols),
                np.ascontiguousarray(batch.rows[:, 1:]).tobytes(),
            )
            scored = expect(self.scorer, Scored, index, self.limits, {}, self.spec.bundle_dir)
        except (WorkerTimeout, ProtocolError, PrismError) as exc:
            self.scorer.kill()
            raise EvaluatorError(
                "internal.scorer_failed", f"the scorer failed in the audit: {exc}",
                evidence=list(self.scorer.output_tail),
            ) from exc  # fmt: skip
        assert isinstance(scored, Scored)
        if not scored.finite or len(scored.row_nats) != rows:
            raise Failed(
                "audit.nonfinite_loss",
                f"the referee's model gave a NaN or infinite loss on audit batch {index}",
            )
        return math.fsum(scored.row_nats)


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
    """The saved weights must do about as well on the last batches as the stream scored."""
    allowed = online_bpb * (1 + config.audit_final_rel_tol) + config.audit_final_abs_tol_bpb
    if final_bpb > allowed:
        raise Rejected(
            "audit.capture_mismatch",
            f"the saved model scores {final_bpb:.4f} bpb on the last {count} scored batches, but "
            f"the scored model did {online_bpb:.4f} bpb on them before training on them (at "
            f"most {allowed:.4f} allowed): the saved weights are not the model that was scored",
            hint="the model handed to iter_train_batches must be the model you train and save",
        )


def run_audit(
    spec: JobSpec,
    scratch: Callable[[str], Path],
    config: EvalConfig,
    scorer: WorkerProcess,
    spawner: Spawner | None,
    *,
    first: ScoredBatch,
    recent: list[ScoredBatch],
    heldout: list[PackedBatch],
    logits_width: int,
    on_ready: OnReady | None = None,
) -> AuditFigures:
    """Run the referee and check its figures; raise Rejected/Failed on a breach."""
    # One wall-clock budget for the whole referee, not one per role.
    deadline = time.monotonic() + config.probe_timeout_s + config.train_timeout_s
    limits = Limits(deadline, config.idle_timeout_s, lambda: None)
    worker = launch_job(spec, scratch(spec.job), config, (), spawner)
    try:
        await_ready(worker, spec, config, on_ready)
        expect(worker, ModelLayout, 0, limits, AUDIT_FAILURES, spec.bundle_dir, "audit")
        recent_batches = [s.batch for s in recent]
        rows = max(b.rows.shape[0] for b in [first.batch, *recent_batches, *heldout])
        cols = first.batch.rows.shape[1]
        size = logits_bytes(rows, cols, logits_width, config.capture_dtype)
        buffers = SharedBuffers({"predictor_logits": size})
        geometry = {"rows": rows, "cols": cols, "width": logits_width,
                    "logits_dtype": config.capture_dtype}  # fmt: skip
        try:
            set_up_scorer(scorer, buffers, ["predictor_logits"], 0, geometry, limits)
            worker.send(PredictorSetup(tensors=[], weights_bytes=0, **geometry),
                        fds=tuple(buffers.fds(["predictor_logits"])))  # fmt: skip
        finally:
            buffers.close()
        referee = Referee(worker, scorer, spec, config, limits)
        (replayed,) = referee.nats("twin", [first.batch], 0)
        redone = referee.nats("trained", recent_batches, 1)
        held_twin = referee.nats("twin", heldout, 1 + len(recent))
        held_trained = referee.nats("trained", heldout, 1 + len(recent) + len(heldout))
    except (WorkerTimeout, ProtocolError) as exc:
        scorer.kill()
        raise lost_worker_error("audit", worker, exc) from exc
    except BaseException:
        worker.kill()
        scorer.kill()
        raise
    worker.kill()
    scorer.kill()
    check_step0(first.nats, replayed, config.audit_replay_rel_tol)
    online_bpb = _bpb([s.nats for s in recent], recent_batches)
    final_bpb = _bpb(redone, recent_batches)
    check_final(online_bpb, final_bpb, config, len(recent))
    figures = AuditFigures(
        step0_reported_nats=first.nats,
        step0_replayed_nats=replayed,
        recent_batches=len(recent),
        recent_online_bpb=online_bpb,
        recent_final_bpb=final_bpb,
    )
    if heldout:
        figures = figures.model_copy(
            update={
                "heldout_bytes": sum(b.bytes for b in heldout),
                "heldout_twin_bpb": _bpb(held_twin, heldout),
                "heldout_trained_bpb": _bpb(held_trained, heldout),
            }
        )
    return figures
