"""Supervisor: the train stage — the forced-init re-execution over the supervisor's stream.

The miner's `train(ctx)` runs in a fresh worker. Its first `iter_train_batches` call asks
for a geometry, which is checked here; then batches go out at most `prefetch_batches` ahead
of the losses coming back. Each loss is matched to the batch it claims to score (index and
token count must be what was sent); the bytes are the supervisor's own. The byte budget
ends the stream; the wall clock and an idle limit only ever fail a run. The ranks check
(ranks.py) drives each of its workers with the same `open_stream` and `drive_stream`.
"""

from __future__ import annotations

import collections
import os
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prism_eval.audit import ScoredBatch
from prism_eval.config import EvalConfig
from prism_eval.data import Document
from prism_eval.errors import Failed, PrismError, Rejected
from prism_eval.probing import check_causality
from prism_eval.protocol import (
    MAX_BODY_BYTES,
    Batch,
    BatchLoss,
    ChannelClosed,
    Failure,
    JobSpec,
    NonFiniteLoss,
    ProtocolError,
    StreamAccepted,
    StreamEnd,
    StreamOpen,
    StreamRefused,
    TrainDone,
    WorkerMessage,
)
from prism_eval.sandbox.launch import QuotaExceeded, Watch, WorkerProcess, WorkerTimeout
from prism_eval.sandbox.session import OnReady, failure_error, lost_worker_error, start_job
from prism_eval.scoring import BatchFigures
from prism_eval.stream import BatchProducer, PackedBatch, StreamTally, pack_batches
from prism_eval.tokenizers import Tokenizer

TRAIN_FAILURES: dict[str, tuple[type[PrismError], str, str]] = {
    "import": (Failed, "train.import_failed", "importing the bundle's scripts raised"),
    "build_model": (Failed, "train.build_failed", "build_model(ctx) raised"),
    "not_a_module": (Failed, "train.not_a_module", "build_model(ctx) must return an nn.Module"),
    "train": (Failed, "train.exception", "train(ctx) raised"),
    "capture": (Rejected, "train.bad_logits", "the scored model's output cannot be scored"),
    "save": (Failed, "train.save_failed", "saving the scored model's state_dict raised"),
}

SINGLE_RANK_HINT = (
    "the scored run is one rank (ctx.world_size == 1, no torchrun variables): set up "
    "torch.distributed only when ctx.world_size > 1"
)

Progress = Callable[[int, float, float], None]  # (bytes scored, nats so far, seconds)


@dataclass
class TrainOutcome:
    """The scored stream as the supervisor counted it."""

    peak_memory_bytes: int | None = None
    spot_checks: int = 0
    batch_size: int = 0
    seq_len: int = 0
    figures: list[BatchFigures] = field(default_factory=list)
    tally: StreamTally = field(default_factory=StreamTally)
    wall_seconds: float = 0.0
    first: ScoredBatch | None = None
    recent: collections.deque[ScoredBatch] = field(default_factory=collections.deque)

    def keep_for_audit(self, scored: ScoredBatch, recent_count: int) -> None:
        """Keep batch 0 and the last `recent_count` batches for the referee."""
        if self.first is None:
            self.first = scored
        self.recent.append(scored)
        while len(self.recent) > recent_count:
            self.recent.popleft()


def check_geometry(request: StreamOpen, spec: JobSpec) -> None:
    """Refuse a stream request outside the config's bounds or with another tokenizer."""
    if request.tokenizer != spec.tokenizer:
        raise Rejected(
            "train.undeclared_tokenizer",
            f"train(ctx) asked for tokenizer {request.tokenizer!r}, but the bundle declares "
            f"{spec.tokenizer!r}",
            hint="declare it in prism.yaml (`tokenizer: ...`) and pass "
            "ctx.reference_tokenizer(name) or nothing to iter_train_batches",
        )
    if not 2 <= request.seq_len <= spec.max_seq_len:
        raise Rejected(
            "train.bad_seq_len",
            f"seq_len {request.seq_len} is outside 2..{spec.max_seq_len} (ctx.max_seq_len)",
        )
    if not 1 <= request.batch_size <= spec.max_batch_size:
        raise Rejected(
            "train.bad_batch_size",
            f"batch_size {request.batch_size} is outside 1..{spec.max_batch_size}",
        )
    if request.batch_size * request.seq_len * 4 > MAX_BODY_BYTES:
        raise Rejected("train.batch_too_large", "batch_size × seq_len is too large to send")


class StreamDriver:
    """Sends batches ahead of the worker and matches each loss to its batch."""

    def __init__(
        self,
        worker: WorkerProcess,
        producer: BatchProducer,
        prefetch: int,
        spot_rate: float,
        vocab_size: int,
    ) -> None:
        self.worker = worker
        self.vocab_size = vocab_size
        self.producer = producer
        self.prefetch = prefetch
        self.spot_rate = spot_rate
        # The miner must not predict which batches are checked: a fresh secret per run.
        self.secret = np.random.default_rng(secrets.randbits(128))
        self.outstanding: collections.deque[tuple[PackedBatch, int | None]] = collections.deque()
        self.spot_checks = 0
        self.ended = False
        self.worker_gone = False

    def fill(self, tally: StreamTally) -> None:
        """Keep up to `prefetch` batches in flight; send StreamEnd once the stream is done.

        A worker that already finished (its last messages still unread) closes its end: the
        send fails, sending stops, and what it said is read before deciding anything.
        """
        try:
            while not (self.ended or self.worker_gone) and len(self.outstanding) < self.prefetch:
                batch = self.producer.next_batch()
                if batch is None:
                    self.worker.send(StreamEnd(reason=tally.stopped_by or "data_exhausted"))
                    self.ended = True
                    return
                rows, cols = batch.rows.shape
                body = batch.rows.tobytes()
                spot = None
                if cols >= 3 and self.secret.random() < self.spot_rate:
                    spot = int(self.secret.integers(1, cols - 1))  # a position of the inputs
                    source = self.secret.integers(0, self.vocab_size, (rows, cols), np.int32)
                    body += source.tobytes()
                message = Batch(index=batch.index, rows=rows, cols=cols, spot_check_position=spot)
                self.worker.send(message, body)
                self.outstanding.append((batch, spot))
        except ChannelClosed:
            self.worker_gone = True

    def accept(self, loss: BatchLoss) -> tuple[PackedBatch, BatchFigures]:
        """Match a loss to the oldest batch in flight; refuse anything else."""
        if not self.outstanding:
            raise ProtocolError(f"a loss for batch {loss.index}, which was not sent")
        batch, spot = self.outstanding.popleft()
        if loss.index != batch.index or loss.tokens != batch.predicted_tokens:
            raise ProtocolError(
                f"loss for batch {loss.index} with {loss.tokens} tokens; expected batch "
                f"{batch.index} with {batch.predicted_tokens} tokens"
            )
        if spot is not None:
            if loss.spot_check is None or loss.spot_check.position != spot:
                raise ProtocolError(f"batch {batch.index} came back without its spot check")
            check_causality([loss.spot_check], f"batch {batch.index}", "train.noncausal")
            self.spot_checks += 1
        figures = BatchFigures(nats=loss.nats, tokens=batch.predicted_tokens, bytes=batch.bytes)
        return batch, figures


@dataclass(frozen=True)
class Limits:
    """When a stream worker must be done (monotonic deadline), how long it may stay silent,
    and the watch called about once a second meanwhile."""

    deadline: float
    idle_s: float
    watch: Watch


def _await(worker: WorkerProcess, spec: JobSpec, limits: Limits) -> WorkerMessage:
    message = worker.receive(limits.idle_s, limits.deadline, limits.watch)
    if isinstance(message, Failure):
        error = failure_error(message, TRAIN_FAILURES, spec.bundle_dir, "train")
        # A loop written for torchrun sets up a process group unconditionally.
        if spec.world_size == 1 and any("init_process_group" in f for f in error.evidence):
            error.hint = error.hint or SINGLE_RANK_HINT
        raise error
    if isinstance(message, NonFiniteLoss):
        raise Failed(
            "train.nonfinite_loss",
            f"the model's loss on batch {message.index} was NaN or infinite before training on it",
        )
    return message


def open_stream(
    worker: WorkerProcess, spec: JobSpec, limits: Limits, check: Callable[[StreamOpen], None]
) -> StreamOpen:
    """Await train(ctx)'s stream request and answer it: accepted, or refused by `check`."""
    message = _await(worker, spec, limits)
    if isinstance(message, TrainDone):
        raise Failed(
            "train.no_batches",
            "train(ctx) returned without iterating ctx.iter_train_batches: nothing was scored",
            hint="iterate `for batch in ctx.iter_train_batches(model, ...)` to the end",
        )
    if not isinstance(message, StreamOpen):
        raise ProtocolError(f"expected stream_open, got {message.type}")
    try:
        check(message)
    except PrismError as refusal:
        worker.send(StreamRefused(rule_id=refusal.rule_id, message=refusal.message))
        raise
    worker.send(StreamAccepted(batch_size=message.batch_size, seq_len=message.seq_len))
    return message


def drive_stream(
    worker: WorkerProcess,
    spec: JobSpec,
    driver: StreamDriver,
    tally: StreamTally,
    limits: Limits,
    on_loss: Callable[[PackedBatch, BatchFigures], None],
    budget_bytes: int,
) -> None:
    """Feed batches and take their losses until train(ctx) returns; it must reach the end."""
    batches = scored_bytes = 0
    while True:
        driver.fill(tally)
        message = _await(worker, spec, limits)
        if isinstance(message, TrainDone):
            break
        if not isinstance(message, BatchLoss):
            raise ProtocolError(f"unexpected {message.type} during the stream")
        batch, figures = driver.accept(message)
        batches += 1
        scored_bytes += figures.bytes
        on_loss(batch, figures)
    if not driver.ended or driver.outstanding:
        raise Failed(
            "train.stream_incomplete",
            f"train(ctx) stopped after {batches} batches "
            f"({scored_bytes:,} of the {budget_bytes:,}-byte budget)",
            hint="iterate ctx.iter_train_batches until it ends: the byte budget is the "
            "run's length",
        )


def artifacts_watch(artifacts_dir: Path, config: EvalConfig) -> Watch:
    """A watch that raises QuotaExceeded once the artifacts dir holds too much."""
    quota_bytes, max_files = config.artifacts_quota_mib * 2**20, config.artifacts_max_files

    def check_artifacts() -> None:
        used, files = 0, 0
        pending = [str(artifacts_dir)]
        while pending:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    files += 1
                    if files > max_files:
                        raise QuotaExceeded(f"wrote more than {max_files:,} files to artifacts")
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(entry.path)
                    else:
                        used += entry.stat(follow_symlinks=False).st_blocks * 512
            if used > quota_bytes:
                raise QuotaExceeded(
                    f"filled artifacts past its quota of {quota_bytes // 2**20:,} MiB"
                )

    return check_artifacts


def run_training(
    outcome: TrainOutcome,
    spec: JobSpec,
    scratch_dir: Path,
    config: EvalConfig,
    *,
    documents: Iterable[Document],
    tokenizer: Tokenizer,
    progress: Progress,
    on_ready: OnReady | None = None,
) -> None:
    """Run the train worker over the scored stream, filling `outcome` as it goes.

    Raises Rejected/Failed on any breach; `outcome` then still holds the batches scored so
    far, for the record.
    """
    started = time.monotonic()
    watch = artifacts_watch(Path(spec.artifacts_dir), config)
    limits = Limits(started + config.train_timeout_s, config.idle_timeout_s, watch)
    worker, _, _ = start_job(spec, scratch_dir, config, on_ready=on_ready)
    producer: BatchProducer | None = None
    try:
        request = open_stream(worker, spec, limits, lambda request: check_geometry(request, spec))
        outcome.batch_size, outcome.seq_len = request.batch_size, request.seq_len
        batches = pack_batches(
            documents,
            tokenizer,
            batch_size=request.batch_size,
            seq_len=request.seq_len,
            byte_budget=spec.byte_budget,
            tally=outcome.tally,
        )
        producer = BatchProducer(batches)
        driver = StreamDriver(
            worker, producer, config.prefetch_batches, config.spot_check_rate, spec.vocab_size
        )
        scored_bytes, running_nats = 0, 0.0

        def on_loss(batch: PackedBatch, figures: BatchFigures) -> None:
            nonlocal scored_bytes, running_nats
            outcome.keep_for_audit(ScoredBatch(batch, figures.nats), config.audit_recent_batches)
            outcome.figures.append(figures)
            outcome.spot_checks = driver.spot_checks
            scored_bytes += figures.bytes
            running_nats += figures.nats
            progress(scored_bytes, running_nats, time.monotonic() - started)

        drive_stream(worker, spec, driver, outcome.tally, limits, on_loss, spec.byte_budget)
        watch()  # what train(ctx) left behind counts too
    except (WorkerTimeout, ProtocolError, QuotaExceeded) as exc:
        raise lost_worker_error("train", worker, exc) from exc
    except PrismError:
        worker.kill()
        raise
    finally:
        if producer is not None:
            producer.close()
        outcome.wall_seconds = time.monotonic() - started
    worker.close()
    outcome.peak_memory_bytes = worker.peak_memory_bytes
