"""Worker (sandboxed): the trainer's side of the scored stream — `iter_train_batches`.

docs/design.md §5. Before the loop gets batch i, the scored model's weights (the parameters and
buffers of the module handed to `iter_train_batches`) are committed to the commit buffer and batch i
is requested; the batch arrives only after its loss is final, computed elsewhere from exactly those
weights. This process never holds a token of a batch before that, nor of any later batch: whatever
it does meanwhile cannot change a recorded loss.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from prism_eval.protocol import (
    BatchRequest,
    Channel,
    Failure,
    Reveal,
    StreamAccepted,
    StreamEnd,
    StreamOpen,
    StreamRefused,
)
from prism_eval.worker.weights import Committer, LayoutError, describe, map_buffer, unwrap


class StreamRefusedError(RuntimeError):
    """The supervisor refused the requested stream; the run is over."""


@dataclass(frozen=True)
class PrismBatch:
    """One batch of the scored stream, given to the loop after its loss was recorded.

    `tokens` is (batch, seq_len) int64 on ctx.device, as in the reference challenge: train the
    model to predict `tokens[:, 1:]` from the positions before them. `inputs` and `targets` are
    those two slices, contiguous (so `.view()` works on them, as nanoGPT-style code expects);
    `batch[...]` indexes `tokens`.
    """

    tokens: torch.Tensor
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def inputs(self) -> torch.Tensor:
        """tokens[:, :-1]: the positions that predict."""
        return self.tokens[:, :-1].contiguous()

    @property
    def targets(self) -> torch.Tensor:
        """tokens[:, 1:]: what each position of `inputs` predicts."""
        return self.tokens[:, 1:].contiguous()

    @property
    def shape(self) -> torch.Size:
        """The shape of `tokens`."""
        return self.tokens.shape

    def __getitem__(self, key: Any) -> torch.Tensor:
        return self.tokens[key]

    def to(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """`tokens.to(...)`."""
        return self.tokens.to(*args, **kwargs)


class ScoredStream:
    """The one pass over the supervisor's batches that `iter_train_batches` exposes.

    `commits` is False in the ranks check, whose batches are not scored.
    """

    def __init__(self, channel: Channel, device: str, commits: bool) -> None:
        self._channel = channel
        self._device = torch.device(device)
        self._commits = commits
        self.model: torch.nn.Module | None = None
        self.consumed = 0

    def open(
        self, model: Any, batch_size: int, seq_len: int, tokenizer: str
    ) -> Iterator[PrismBatch]:
        """Ask for the stream; return the batch iterator or raise if refused."""
        if self.model is not None:
            raise RuntimeError(
                "ctx.iter_train_batches may be called only once: the scored stream is one pass"
            )
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                "ctx.iter_train_batches(model, ...) needs the torch.nn.Module you train"
            )
        scored = unwrap(model)
        tensors = self._guarded(describe, scored) if self._commits else []
        self._channel.send(
            StreamOpen(batch_size=batch_size, seq_len=seq_len, tokenizer=tokenizer, tensors=tensors)
        )
        reply, _ = self._channel.receive()
        if isinstance(reply, StreamRefused):
            raise StreamRefusedError(f"[{reply.rule_id}] {reply.message}")
        if not isinstance(reply, StreamAccepted):
            raise RuntimeError(f"unexpected supervisor message {reply.type}")
        committer = None
        if reply.commit_bytes:
            flat = map_buffer(self._channel.take_fds(1)[0])
            committer = Committer(scored, reply.tensors, flat)
        self.model = scored
        return self._batches(committer)

    def _guarded(self, step: Any, *args: Any) -> Any:
        """Run a harness step; a LayoutError is reported as a commit failure, then raised."""
        try:
            return step(*args)
        except LayoutError as exc:
            self._channel.send(
                Failure(where="commit", exc_type="LayoutError", message=str(exc), traceback="")
            )
            raise

    def _batches(self, committer: Committer | None) -> Iterator[PrismBatch]:
        index = 0
        while True:
            if committer is not None:
                self._guarded(committer.commit)
            self._channel.send(BatchRequest(index=index))
            message, body = self._channel.receive()
            if isinstance(message, StreamEnd):
                return
            if not isinstance(message, Reveal) or message.index != index:
                raise RuntimeError(f"unexpected supervisor message {message.type}")
            rows = self._channel.receive_tokens(message.rows, message.cols, body)
            tokens = torch.from_numpy(rows.astype(np.int64)).to(self._device)  # (batch, seq)
            self.consumed += 1
            yield PrismBatch(tokens, {"index": index, "batch_size": message.rows})
            index += 1
