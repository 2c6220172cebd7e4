"""Shared: the trainer's messages — opening the stream, committing weights, revealed batches.

The trainer (`train(ctx)`) holds no token of a batch until that batch's loss is final:

    trainer → StreamOpen (geometry, tokenizer, the scored model's tensors)
    supervisor → StreamAccepted (+ the commit buffer) | StreamRefused
    repeat:  trainer → BatchRequest i  (the scored model's weights are in the commit buffer)
             supervisor → Reveal i + rows (after batch i's loss is final) | StreamEnd
    trainer → TrainDone (train(ctx) returned and the model was saved)

The ranks check uses the same messages without a commit buffer.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from prism_eval.protocol.common import Message
from prism_eval.protocol.tensors import MAX_TENSORS, PlacedTensor, TensorEntry


class StreamOpen(Message):
    """The miner's first `iter_train_batches` call: the geometry and the scored model."""

    type: Literal["stream_open"] = "stream_open"
    batch_size: int
    seq_len: int
    tokenizer: str = Field(max_length=64)
    tensors: list[TensorEntry] = Field(default_factory=list, max_length=MAX_TENSORS)


class StreamAccepted(Message):
    """The supervisor accepts the geometry; with `commit_bytes` > 0, the commit buffer's
    descriptor comes with this frame and `tensors` say where each tensor goes in it."""

    type: Literal["stream_accepted"] = "stream_accepted"
    batch_size: int
    seq_len: int
    tensors: list[PlacedTensor] = Field(default_factory=list)
    commit_bytes: int = Field(0, ge=0)


class StreamRefused(Message):
    """The supervisor refuses the stream request; the run is over."""

    type: Literal["stream_refused"] = "stream_refused"
    rule_id: str
    message: str


class BatchRequest(Message):
    """The loop asks for batch `index`; in the scored run its weights are committed."""

    type: Literal["batch_request"] = "batch_request"
    index: int = Field(ge=0)


class Reveal(Message):
    """Batch `index`, whose loss is final (body: int32, shape (rows, cols))."""

    type: Literal["reveal"] = "reveal"
    index: int
    rows: int
    cols: int


class StreamEnd(Message):
    """No more batches: the byte budget is spent or the data ran out."""

    type: Literal["stream_end"] = "stream_end"
    reason: Literal["budget", "data_exhausted"]


class TrainDone(Message):
    """`train(ctx)` returned and the scored model was saved."""

    type: Literal["train_done"] = "train_done"
    batches_consumed: int = Field(ge=0)
