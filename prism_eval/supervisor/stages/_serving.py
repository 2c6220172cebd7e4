"""Supervisor: the trainer's side of a stream — its request checked, its batches served.

Shared by the train stage and the ranks check: the trainer's stream request is read and
checked (geometry, tokenizer, logits size), then batches are served one per request, each
after `before_reveal` (for the train stage: its loss made final), and the artifacts directory
is watched against its quota meanwhile. A failure the trainer reports becomes the verdict here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from prism_eval.errors import Failed, PrismError, Rejected
from prism_eval.protocol import (
    MAX_BODY_BYTES,
    BatchRequest,
    ChildMessage,
    Failure,
    JobSpec,
    ProtocolError,
    Reveal,
    StreamEnd,
    StreamOpen,
    StreamRefused,
    TrainDone,
    logits_bytes,
)
from prism_eval.supervisor.config import EvalConfig
from prism_eval.supervisor.data import (
    BatchProducer,
    PackedBatch,
    StreamTally,
    Tokenizer,
    load_tokenizer,
)
from prism_eval.supervisor.sandbox import (
    QuotaExceeded,
    Watch,
    WorkerProcess,
    failure_error,
)
from prism_eval.supervisor.stages._capture import (
    Limits,
)
from prism_eval.supervisor.stages.step_clock import StepClock

TRAIN_FAILURES: dict[str, tuple[type[PrismError], str, str]] = {
    "import": (Failed, "train.import_failed", "importing the bundle's scripts raised"),
    "build_model": (Failed, "train.build_failed", "build_model(ctx) raised"),
    "not_a_module": (Failed, "train.not_a_module", "build_model(ctx) must return an nn.Module"),
    "train": (Failed, "train.exception", "train(ctx) raised"),
    "commit": (Rejected, "train.uncommittable_model", "the scored model cannot be committed"),
    "save": (Failed, "train.save_failed", "saving the scored model's state_dict raised"),
}


SINGLE_RANK_HINT = (
    "the scored run is one rank without torchrun's variables; a process group set up anyway "
    "is rank 0 of 1 on the trainer's own loopback (it needs the network_namespace layer) and "
    "needs a backend for the device ('gloo' on CPU); or set torch.distributed up only when "
    "ctx.world_size > 1"
)


HIDDEN_DATA_HINT = (
    "ctx.data_dir is None on this validator (data_access: instrument): the train data comes "
    "only through ctx.iter_train_batches, which also tokenizes it"
)


def stream_tokenizer(requested: str, declared: Tokenizer) -> Tokenizer:
    """The tokenizer of the stream train(ctx) asked for: the bundle's (declared in prism.yaml or
    named in its reference_tokenizer calls), or bytes (`tokenizer=None`, as in the reference).
    The supervisor tokenizes with its own copy; a miner's tokenizer object is never run."""
    if requested == declared.name:
        return declared
    if requested == "byte":  # byte ids fit every reference vocabulary the model was built for
        return load_tokenizer("byte")
    if requested.startswith("custom:"):
        raise Rejected(
            "train.custom_tokenizer",
            f"train(ctx) passed its own tokenizer ({requested.removeprefix('custom:')}) to "
            "iter_train_batches; only the reference tokenizers can be scored, because the "
            "score counts the exact bytes each token stands for",
            hint="pass ctx.reference_tokenizer('gpt2' | 'llama' | 'byte'), or nothing for bytes",
        )
    raise Rejected(
        "train.undeclared_tokenizer",
        f"train(ctx) asked for the {requested} stream, but the model was built for "
        f"{declared.name} (vocab {declared.vocab_size:,})",
        hint=f"declare `tokenizer: {requested}` in prism.yaml, so ctx.vocab_size fits it",
    )


def check_geometry(request: StreamOpen, spec: JobSpec) -> None:
    """Refuse a stream request outside the config's bounds."""
    if not 2 <= request.seq_len <= spec.max_seq_len:
        raise Rejected(
            "train.bad_seq_len",
            f"seq_len {request.seq_len} is outside 2..{spec.max_seq_len} (ctx.max_seq_len)",
            hint="pass seq_len=ctx.max_seq_len or less: the validator's profile sets the longest "
            "row (max_seq_len), so read it rather than hard-coding one",
        )
    if not 1 <= request.batch_size <= spec.max_batch_size:
        raise Rejected(
            "train.bad_batch_size",
            f"batch_size {request.batch_size} is outside 1..{spec.max_batch_size}",
            hint=f"ask for at most {spec.max_batch_size} rows per batch; accumulate gradients "
            "over several batches for a larger effective batch",
        )
    if request.batch_size * request.seq_len * 4 > MAX_BODY_BYTES:
        raise Rejected("train.batch_too_large", "batch_size × seq_len is too large to send")


def check_logits_size(request: StreamOpen, width: int, config: EvalConfig) -> int:
    """The bytes of one batch's logits; refuse more than `max_logits_mib`."""
    size = logits_bytes(request.batch_size, request.seq_len, width, config.capture_dtype)
    if size > config.max_logits_mib * 2**20:
        raise Rejected(
            "train.batch_too_large",
            f"one batch of {request.batch_size} × {request.seq_len} tokens makes "
            f"{size / 2**20:,.0f} MiB of logits ({width:,} wide); the limit is "
            f"{config.max_logits_mib:,} MiB",
            hint="ask iter_train_batches for fewer rows or shorter rows",
        )
    return size


def await_trainer(worker: WorkerProcess, spec: JobSpec, limits: Limits) -> ChildMessage:
    """The trainer's next message; a Failure becomes the supervisor's verdict."""
    message = worker.receive(limits.idle_s, limits.deadline, limits.watch)
    if isinstance(message, Failure):
        error = failure_error(message, TRAIN_FAILURES, spec.bundle_dir, "train")
        # A loop written for torchrun sets up a process group unconditionally.
        if spec.world_size == 1 and any("init_process_group" in f for f in error.evidence):
            error.hint = error.hint or SINGLE_RANK_HINT
        # A loop written to read the shards itself, as the reference's docs suggest.
        if spec.data_dir is None and any("data_dir" in f for f in error.evidence):
            error.hint = error.hint or HIDDEN_DATA_HINT
        raise error
    return message


def await_stream_open(worker: WorkerProcess, spec: JobSpec, limits: Limits) -> StreamOpen:
    """train(ctx)'s stream request (not yet answered)."""
    message = await_trainer(worker, spec, limits)
    if isinstance(message, TrainDone):
        raise Failed(
            "train.no_batches",
            "train(ctx) returned without iterating ctx.iter_train_batches: nothing was scored",
            hint="iterate `for batch in ctx.iter_train_batches(model, ...)` to the end",
        )
    if not isinstance(message, StreamOpen):
        raise ProtocolError(f"expected stream_open, got {message.type}")
    return message


def refusing(worker: WorkerProcess, check: Callable[[], None]) -> None:
    """Run `check`; if it refuses, tell the trainer why before raising."""
    try:
        check()
    except PrismError as refusal:
        worker.send(StreamRefused(rule_id=refusal.rule_id, message=refusal.message))
        raise


def serve_batches(
    worker: WorkerProcess,
    spec: JobSpec,
    limits: Limits,
    producer: BatchProducer,
    tally: StreamTally,
    budget_bytes: int,
    before_reveal: Callable[[PackedBatch], None],
    clock: StepClock | None = None,
) -> None:
    """Answer each batch request — `before_reveal`, then the batch — until train(ctx) returns;
    it must reach the end of the stream. The wait for each request is the `trainer` phase."""
    clock = clock or StepClock()
    served = scored_bytes = 0
    ended = False
    while True:
        with clock.phase("trainer"):
            message = await_trainer(worker, spec, limits)
        if isinstance(message, TrainDone):
            break
        if not isinstance(message, BatchRequest) or message.index != served or ended:
            raise ProtocolError(f"unexpected {message.type} during the stream")
        batch = producer.next_batch()
        if batch is None:
            worker.send(StreamEnd(reason=tally.stopped_by or "data_exhausted"))
            ended = True
            continue
        before_reveal(batch)
        rows, cols = batch.rows.shape  # the index is the loop's own count (a rank's too)
        worker.send(Reveal(index=served, rows=rows, cols=cols), batch.rows.tobytes())
        served += 1
        scored_bytes += batch.bytes
    if not ended:
        raise Failed(
            "train.stream_incomplete",
            f"train(ctx) stopped after {served} batches "
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
