"""Supervisor: the train stage — the forced-init re-execution of `train(ctx)`, scored step by step.

Four children: the trainer (`train(ctx)`), the predictor and the auditor (`architecture.py`
only) and the trusted scorer; _capture.py says what each holds when. Here they are started,
the trainer's stream request is checked (geometry, tokenizer, and that the model it trains is
the one `build_model(ctx)` builds), the shared buffers are handed out, and the batches are
served one at a time, each revealed only after its loss is final. The byte budget ends the
stream; the wall clock and an idle limit only ever fail a run. The ranks check (ranks.py)
serves its workers with the same `_serving`.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from prism_eval.errors import Failed, Rejected
from prism_eval.protocol import (
    FLOATING,
    BufferName,
    Go,
    JobSpec,
    ModelLayout,
    PredictorSetup,
    ProtocolError,
    StreamAccepted,
    StreamOpen,
    TensorEntry,
    logits_bytes,
    place_tensors,
)
from prism_eval.supervisor.config import EvalConfig
from prism_eval.supervisor.data import (
    BatchProducer,
    Document,
    PackedBatch,
    StreamTally,
    Tokenizer,
    pack_batches,
)
from prism_eval.supervisor.formula import BatchFigures
from prism_eval.supervisor.sandbox import (
    OnReady,
    QuotaExceeded,
    WorkerProcess,
    WorkerTimeout,
    await_ready,
    await_scorer,
    lost_worker_error,
)
from prism_eval.supervisor.stages._buffers import SharedBuffers
from prism_eval.supervisor.stages._capture import (
    AuditTally,
    Capture,
    Limits,
    expect,
    predictor_failures,
    set_up_scorer,
)
from prism_eval.supervisor.stages._serving import (
    artifacts_watch,
    await_stream_open,
    check_geometry,
    check_logits_size,
    refusing,
    serve_batches,
    stream_tokenizer,
)
from prism_eval.supervisor.stages.audit import ScoredBatch
from prism_eval.supervisor.stages.crew import Crew
from prism_eval.supervisor.stages.step_clock import StepClock

Progress = Callable[[int, float, float], None]  # (bytes scored, nats so far, seconds)


@dataclass
class TrainOutcome:
    """The scored stream as the supervisor counted it."""

    peak_memory_bytes: int | None = None
    checks: AuditTally = field(default_factory=AuditTally)
    batch_size: int = 0
    seq_len: int = 0
    model_params: int = 0
    float_buffer_elements: int = 0
    step_ms: dict[str, float] = field(default_factory=dict)  # per phase (step_clock.py)
    first_batch_seconds: float | None = None  # from the stage's start to the first loss
    figures: list[BatchFigures] = field(default_factory=list)
    tally: StreamTally = field(default_factory=StreamTally)
    wall_seconds: float = 0.0
    tokenizer: Tokenizer | None = None  # the stream's: the bundle's, or bytes
    first: ScoredBatch | None = None
    recent: collections.deque[ScoredBatch] = field(default_factory=collections.deque)

    def keep_for_audit(self, scored: ScoredBatch, recent_count: int) -> None:
        """Keep batch 0 and the last `recent_count` batches for the referee."""
        if self.first is None:
            self.first = scored
        self.recent.append(scored)
        while len(self.recent) > recent_count:
            self.recent.popleft()


def check_model(trained: list[TensorEntry], built: list[TensorEntry], max_params: int) -> None:
    """The model handed to iter_train_batches must have the tensors of the model
    build_model(ctx) builds (names, kinds, shapes; dtypes may differ), within the cap."""
    if [(t.name, t.kind, t.shape) for t in trained] != [(t.name, t.kind, t.shape) for t in built]:
        ours, theirs = {t.name: t for t in trained}, {t.name: t for t in built}
        differences = {
            "not built": sorted(set(ours) - set(theirs)),
            "missing": sorted(set(theirs) - set(ours)),
            "other shape": [
                n for n, t in ours.items() if n in theirs and t.shape != theirs[n].shape
            ],
        }
        details = [
            f"{what}: {', '.join(names[:5])}" for what, names in differences.items() if names
        ]
        raise Rejected(
            "train.model_mismatch",
            "the model handed to iter_train_batches is not the model build_model(ctx) builds"
            + (f" ({'; '.join(details)})" if details else " (its tensors are in another order)"),
            hint="build the scored model with ctx.build_model() or architecture's build_model, "
            "and hand that model (or its DDP / torch.compile wrapper) to iter_train_batches",
        )
    params = sum(t.elements for t in trained if t.kind == "parameter")
    floats = sum(t.elements for t in trained if t.kind == "buffer" and t.dtype in FLOATING)
    if params + floats > max_params:
        raise Rejected(
            "train.too_many_params",
            f"the scored model has {params:,} parameters and {floats:,} floating-point buffer "
            f"elements, {params + floats:,} in all, over the cap of {max_params:,}",
        )


def _wake_crew(crew: Crew, config: EvalConfig, on_ready: OnReady | None) -> None:
    """Wait for the trainer, the auditor and the scorer to be set up, then let the gated
    workers load the bundle."""
    jobs = crew.jobs
    await_ready(crew.trainer, jobs.trainer, config, on_ready)
    await_ready(crew.auditor, jobs.auditor, config)
    await_scorer(crew.scorer)
    for worker in (crew.trainer, crew.auditor):
        worker.send(Go())


def _built_layout(worker: WorkerProcess, spec: JobSpec, limits: Limits) -> list[TensorEntry]:
    message = expect(worker, ModelLayout, 0, limits, predictor_failures(spec.job), spec.bundle_dir)
    assert isinstance(message, ModelLayout)
    return message.tensors


def _hand_out_buffers(
    crew: Crew, request: StreamOpen, width: int, config: EvalConfig, limits: Limits
) -> None:
    """Size, seal and hand out the shared buffers; accept the stream. The predictor and the
    auditor get the snapshot only once the scorer has sealed it against every other writer."""
    placed, weights = place_tensors(request.tensors)
    logits = logits_bytes(request.batch_size, request.seq_len, width, config.capture_dtype)
    names: list[BufferName] = ["commit", "snapshot", "predictor_logits", "auditor_logits"]
    sizes: dict[str, int] = dict(zip(names, [weights, weights, logits, logits], strict=True))
    buffers = SharedBuffers(sizes, writer_sealed=["snapshot"])
    geometry = {"rows": request.batch_size, "cols": request.seq_len, "width": width,
                "logits_dtype": config.capture_dtype}  # fmt: skip
    try:
        set_up_scorer(crew.scorer, buffers, names, weights, geometry, limits)
        buffers.require_writer_sealed("snapshot")
        for child, role in ((crew.predictor, "predictor"), (crew.auditor, "auditor")):
            child.send(
                PredictorSetup(tensors=placed, weights_bytes=weights, **geometry),
                fds=tuple(buffers.fds(["snapshot", f"{role}_logits"])),
            )
        crew.trainer.send(
            StreamAccepted(
                batch_size=request.batch_size,
                seq_len=request.seq_len,
                tensors=placed,
                commit_bytes=weights,
            ),
            fds=tuple(buffers.fds(["commit"])),
        )
    finally:
        buffers.close()


def run_train_stage(
    outcome: TrainOutcome,
    crew: Crew,
    config: EvalConfig,
    *,
    documents: Iterable[Document],
    tokenizer: Tokenizer,
    logits_width: int,
    progress: Progress,
    on_ready: OnReady | None = None,
) -> None:
    """Run the scored stream, filling `outcome` as it goes.

    Raises Rejected/Failed/EvaluatorError on any breach; `outcome` then still holds the batches
    scored so far, for the record.
    """
    started = time.monotonic()
    jobs = crew.jobs
    spec = jobs.trainer
    watch = artifacts_watch(Path(spec.artifacts_dir), config)
    limits = Limits(started + config.train_timeout_s, config.idle_timeout_s, watch)
    producer: BatchProducer | None = None
    current = crew.trainer
    try:
        _wake_crew(crew, config, on_ready)
        current = crew.predictor
        built = _built_layout(crew.predictor, jobs.probe, limits)
        current = crew.auditor
        if _built_layout(crew.auditor, jobs.auditor, limits) != built:
            raise Failed("train.protocol", "the auditor built another model than the predictor")
        current = crew.trainer
        request = await_stream_open(crew.trainer, spec, limits)

        def check_request() -> None:
            outcome.tokenizer = stream_tokenizer(request.tokenizer, tokenizer)
            check_geometry(request, spec)
            check_logits_size(request, logits_width, config)
            check_model(request.tensors, built, spec.max_params)

        refusing(crew.trainer, check_request)
        outcome.batch_size, outcome.seq_len = request.batch_size, request.seq_len
        params = [t for t in request.tensors if t.kind == "parameter"]
        outcome.model_params = sum(t.elements for t in params)
        outcome.float_buffer_elements = sum(
            t.elements for t in request.tensors if t.kind == "buffer" and t.dtype in FLOATING
        )
        _hand_out_buffers(crew, request, logits_width, config, limits)
        assert outcome.tokenizer is not None
        batches = pack_batches(
            documents,
            outcome.tokenizer,
            batch_size=request.batch_size,
            seq_len=request.seq_len,
            byte_budget=spec.byte_budget,
            tally=outcome.tally,
            block_batches=config.stream_block_batches,
        )
        producer = BatchProducer(batches, depth=config.prefetch_batches)
        clock = StepClock()
        capture = Capture(crew, config, limits, spec, clock)
        outcome.checks = capture.tally
        scored_bytes, running_nats = 0, 0.0

        def score(batch: PackedBatch) -> None:
            nonlocal scored_bytes, running_nats
            figures = capture.score(batch)
            if outcome.first_batch_seconds is None:
                outcome.first_batch_seconds = time.monotonic() - started
            # Before the trainer gets the batch: it cannot help, and nothing runs beside them.
            capture.prefix_audit(batch)
            capture.spot_check(batch)
            outcome.keep_for_audit(ScoredBatch(batch, figures.nats), config.audit_recent_batches)
            outcome.figures.append(figures)
            scored_bytes += figures.bytes
            running_nats += figures.nats
            progress(scored_bytes, running_nats, time.monotonic() - started)

        serve_batches(
            crew.trainer, spec, limits, producer, outcome.tally, spec.byte_budget, score, clock
        )
        outcome.step_ms = clock.per_step_ms(len(outcome.figures))
        watch()  # what train(ctx) left behind counts too
    except (WorkerTimeout, ProtocolError, QuotaExceeded) as exc:
        error = lost_worker_error("train", current, exc)
        crew.kill()
        raise error from exc
    except BaseException:
        crew.kill()
        raise
    finally:
        if producer is not None:
            producer.close()
        outcome.wall_seconds = time.monotonic() - started
    crew.trainer.close()
    for child in (crew.predictor, crew.auditor):  # the scorer serves the audit stage too
        child.kill()
    outcome.peak_memory_bytes = crew.trainer.peak_memory_bytes
