"""Supervisor: one scored step across the trainer, the predictor, the auditor and the scorer.

docs/design.md §5. When the trainer asks for batch i it has committed its weights and holds
nothing of batch i. Then, in this order:

1. the scorer copies the committed weights into a snapshot of its own and hands a copy to the
   predictor;
2. the predictor runs the scored forward on batch i's rows with the last column withheld (the
   fixed token BOS; a causal model's logits before it cannot depend on it) and writes the logits;
3. the scorer scores them against the targets, which only it receives; the loss is final;
4. a secret choice made now may prefix-audit the step: a separate auditor, which never saw
   batch i, reads the same snapshot and gets every row cut after a secret position (padded
   with the fixed token), and the scorer compares the nats at that position with the scored
   ones. A prefix holds no future, so a predictor that leaked in the scored pass, however it
   recognised it, is caught at every audited position where it leaked;
5. another secret choice may spot-check the step (the predictor again, with the tokens after
   a secret position changed);
6. only then is batch i revealed to the trainer.

Each phase runs alone: on a host with fewer cores than processes, a check that ran beside the
trainer would slow both. `StepClock` records where the time went.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel

from prism_eval.errors import EvaluatorError, Failed, PrismError, Rejected
from prism_eval.protocol import (
    BufferName,
    BuffersMapped,
    Compare,
    Compared,
    Failure,
    JobSpec,
    Predict,
    Predicted,
    ProtocolError,
    ScoreBatch,
    Scored,
    ScorerSetup,
    Snapshot,
    Snapshotted,
)
from prism_eval.supervisor.config import EvalConfig
from prism_eval.supervisor.data import PackedBatch
from prism_eval.supervisor.formula import BatchFigures
from prism_eval.supervisor.sandbox import (
    QuotaExceeded,
    WorkerProcess,
    WorkerTimeout,
    failure_error,
    lost_worker_error,
)
from prism_eval.supervisor.stages._buffers import SharedBuffers
from prism_eval.supervisor.stages.crew import Crew
from prism_eval.supervisor.stages.probe import CAUSALITY_TOLERANCE, NONCAUSAL_HINT
from prism_eval.supervisor.stages.step_clock import StepClock

FailureTable = dict[str, tuple[type[PrismError], str, str]]


def predictor_failures(role: str) -> FailureTable:
    """What a Failure from a predictor-type worker (`role`) means in the train stage."""
    broken = (Failed, "train.predictor_failed")
    return {
        "import": (*broken, f"importing architecture.py in the {role} raised"),
        "build_model": (*broken, f"build_model(ctx) raised in the {role}"),
        "not_a_module": (*broken, f"build_model(ctx) returned no nn.Module in the {role}"),
        "layout": (Rejected, "train.uncommittable_model", "the model's tensors cannot be shared"),
        "forward": (Failed, "train.forward_failed", f"the model's forward raised in the {role}"),
        "output": (Rejected, "train.bad_logits", f"the model's output cannot be scored ({role})"),
    }  # fmt: skip


@dataclass(frozen=True)
class Limits:
    """When the stage must be done (monotonic deadline), how long a child may stay silent,
    and the watch called about once a second meanwhile."""

    deadline: float
    idle_s: float
    watch: Callable[[], None]


@dataclass
class AuditTally:
    """What the secret checks covered, and the prefix audit's rate for this run."""

    rate: float = 0.0
    spot_checks: int = 0
    audited_steps: int = 0
    audited_positions: int = 0
    max_diff_nats: float = 0.0


def audit_rate(config: EvalConfig, first_batch_bytes: int) -> float:
    """The prefix audit's rate for this run: `prefix_audit_rate`, raised so that the steps the
    byte budget allows at the first batch's size include `prefix_audit_min_steps` audits."""
    expected_steps = math.ceil(config.byte_budget / max(1, first_batch_bytes))
    return min(1.0, max(config.prefix_audit_rate, config.prefix_audit_min_steps / expected_steps))


def withhold_last(rows: np.ndarray, fixed_token: int) -> np.ndarray:
    """A predictor's inputs: the rows with their last column replaced by a fixed token (it is
    a target, and a causal model's logits before it cannot depend on it)."""
    inputs = rows.copy()
    inputs[:, -1] = fixed_token
    return inputs


def expect(
    child: WorkerProcess,
    kind: type[BaseModel],
    index: int,
    limits: Limits,
    failures: FailureTable,
    bundle_dir: str,
    stage: str = "train",
) -> BaseModel:
    """The child's next message, which must be `kind` for step `index`."""
    message = child.receive(limits.idle_s, limits.deadline, limits.watch)
    if isinstance(message, Failure):
        raise failure_error(message, failures, bundle_dir, stage)
    if not isinstance(message, kind) or getattr(message, "index", index) != index:
        raise ProtocolError(f"expected {kind.__name__} for step {index}, got {message.type}")
    return message


def set_up_scorer(
    scorer: WorkerProcess,
    buffers: SharedBuffers,
    names: list[BufferName],
    weights_bytes: int,
    geometry: dict[str, Any],
    limits: Limits,
) -> None:
    """Hand the scorer its buffers and wait until it has mapped them (and sealed the
    snapshot, when there is one)."""
    try:
        scorer.send(
            ScorerSetup(buffers=names, weights_bytes=weights_bytes, **geometry),
            fds=tuple(buffers.fds(names)),
        )
        expect(scorer, BuffersMapped, 0, limits, {}, "")
    except (WorkerTimeout, ProtocolError, PrismError) as exc:
        raise _scorer_failed(scorer, 0, exc) from exc


class Capture:
    """The scored steps of one run, and the secret checks that follow them."""

    def __init__(
        self, crew: Crew, config: EvalConfig, limits: Limits, spec: JobSpec, clock: StepClock
    ) -> None:
        self.crew = crew
        self.clock = clock
        self.config = config
        self.limits = limits
        self.fixed_token = spec.bos_id
        self.vocab_size = spec.vocab_size
        self.bundle_dir = spec.bundle_dir
        self.tally = AuditTally()
        # The miner must not predict which steps are checked: a fresh secret per run.
        self._secret = np.random.default_rng(secrets.randbits(128))

    # ---- the scored step ---------------------------------------------------------------

    def score(self, batch: PackedBatch) -> BatchFigures:
        """Batch `batch.index`'s loss from the committed weights; raises on any breach."""
        index = batch.index
        rows, cols = batch.rows.shape
        with self.clock.phase("snapshot"):
            self._ask_scorer(Snapshot(index=index), Snapshotted, index)
        with self.clock.phase("predict"):
            self._predict(self.crew.predictor, "predictor", index, self.withheld(batch.rows))
        with self.clock.phase("score"):
            scored = self._ask_scorer(
                ScoreBatch(index=index, source="predictor", rows=rows, cols=cols),
                Scored,
                index,
                np.ascontiguousarray(batch.rows[:, 1:]).tobytes(),
            )
        assert isinstance(scored, Scored)
        if not scored.finite:
            raise Failed(
                "train.nonfinite_loss",
                f"the model's loss on batch {index} was NaN or infinite before training on it",
            )
        if len(scored.row_nats) != rows:
            raise EvaluatorError("internal.scorer_failed", "the scorer lost a row")
        nats = math.fsum(scored.row_nats)
        return BatchFigures(nats=nats, tokens=batch.predicted_tokens, bytes=batch.bytes)

    def withheld(self, rows: np.ndarray) -> np.ndarray:
        """The predictor's inputs for `rows` (see `withhold_last`)."""
        return withhold_last(rows, self.fixed_token)

    # ---- the secret checks (with seq_len 2 there is no future to leak: nothing to check) ---

    def prefix_audit(self, batch: PackedBatch) -> None:
        """Decide now, in secret, whether to prefix-audit this step, and do it. Called once the
        loss is final and before the batch is revealed: then the trainer, which could help the
        auditor, knows nothing of it either."""
        rows, cols = batch.rows.shape
        if not self.tally.rate:
            self.tally.rate = audit_rate(self.config, batch.bytes)
        if self._secret.random() < self.tally.rate and cols >= 3:
            with self.clock.phase("prefix_audit"):
                self._prefix_audit(batch, self._secret.integers(0, cols - 2, size=rows))

    def spot_check(self, batch: PackedBatch) -> None:
        """Decide now, in secret, whether to spot-check this step; if so, ask the predictor again
        with the tokens after a secret position changed: earlier nats must stay. Called once
        the loss is final, before the reveal."""
        cols = batch.rows.shape[1]
        if self._secret.random() < self.config.spot_check_rate and cols >= 3:
            with self.clock.phase("spot_check"):
                self._spot_check(batch)

    def _spot_check(self, batch: PackedBatch) -> None:
        rows, cols = batch.rows.shape
        position = int(self._secret.integers(1, cols - 1))
        changed = self.withheld(batch.rows)
        shape = (rows, cols - 1 - position)
        changed[:, position:-1] = self._secret.integers(0, self.vocab_size, shape)
        self._predict(self.crew.predictor, "predictor", batch.index, changed)
        diffs = self._compare(batch.index, "predictor", "spot", [position] * rows)
        worst = max(diffs)
        if worst > CAUSALITY_TOLERANCE:
            raise Rejected(
                "train.noncausal",
                f"batch {batch.index}: changing the tokens from position {position} on moved the "
                f"nats before it by {worst:.3g}",
                hint=NONCAUSAL_HINT,
            )
        self.tally.spot_checks += 1

    def _prefix_audit(self, batch: PackedBatch, positions: np.ndarray) -> None:
        """The auditor scores each row cut after its secret position; the nats there must
        equal the scored ones."""
        index = batch.index
        cut = self.withheld(batch.rows)
        columns = np.arange(cut.shape[1])[None, :]
        cut[columns > positions[:, None]] = self.fixed_token  # (rows, cols): nothing after t
        self._predict(self.crew.auditor, "auditor", index, cut)
        diffs = self._compare(index, "auditor", "prefix", positions.tolist())
        tolerance = self.config.prefix_audit_tolerance_nats
        bad = [(row, diff) for row, diff in enumerate(diffs) if diff > tolerance]
        if bad:
            row, diff = bad[0]
            raise Rejected(
                "train.prefix_mismatch",
                f"batch {index}, row {row}: scored from its first {positions[row] + 1} tokens "
                f"alone, position {positions[row]} costs {diff:.3g} nats more or less than in the "
                f"scored pass ({len(bad)} of {len(diffs)} audited rows differ beyond "
                f"{tolerance:g}): the scored forward used tokens after the position it predicted",
                hint=NONCAUSAL_HINT + "; and the forward must be a function of the weights and "
                "its inputs only (no state kept from earlier calls)",
            )
        tally = self.tally
        tally.audited_steps += 1
        tally.audited_positions += len(diffs)
        tally.max_diff_nats = max(tally.max_diff_nats, *diffs)

    # ---- plumbing ----------------------------------------------------------------------

    def _predict(self, child: WorkerProcess, role: str, index: int, inputs: np.ndarray) -> None:
        rows, cols = inputs.shape
        try:
            child.send(
                Predict(index=index, model="committed", rows=rows, cols=cols),
                np.ascontiguousarray(inputs, dtype=np.int32).tobytes(),
            )
            expect(child, Predicted, index, self.limits, predictor_failures(role), self.bundle_dir)
        except (WorkerTimeout, ProtocolError, QuotaExceeded) as exc:
            raise lost_worker_error("train", child, exc) from exc

    def _compare(self, index: int, source: str, kind: str, positions: list[int]) -> list[float]:
        message = Compare.model_validate(
            {"index": index, "source": source, "kind": kind, "positions": positions}
        )
        compared = self._ask_scorer(message, Compared, index)
        assert isinstance(compared, Compared)
        if len(compared.diffs) != len(positions):
            raise EvaluatorError("internal.scorer_failed", "the scorer compared other rows")
        return compared.diffs

    def _ask_scorer(
        self, message: ScoreBatch | Snapshot | Compare, kind: type[BaseModel],
        index: int, body: bytes = b"",
    ) -> BaseModel:  # fmt: skip
        """One request to the trusted scorer; anything but its answer is our own failure."""
        scorer = self.crew.scorer
        try:
            scorer.send(message, body)
            return expect(scorer, kind, index, self.limits, {}, self.bundle_dir)
        except WorkerTimeout as exc:
            if exc.kind == "wall":  # the stage's time ran out, most of it the miner's
                raise lost_worker_error("train", scorer, exc) from exc
            raise _scorer_failed(scorer, index, exc) from exc
        except (ProtocolError, PrismError) as exc:
            raise _scorer_failed(scorer, index, exc) from exc


def _scorer_failed(scorer: WorkerProcess, index: int, exc: Exception) -> EvaluatorError:
    scorer.kill()
    return EvaluatorError(
        "internal.scorer_failed",
        f"the scorer failed on step {index}: {exc}",
        evidence=list(scorer.output_tail),
    )
