"""Worker (sandboxed): the scored stream — each batch's loss, taken before the miner sees it.

DESIGN §5: for every batch the model is put in eval mode for a `no_grad` forward on
`rows[:, :-1]`, restored to its previous mode, and scored against `rows[:, 1:]` with a
float32 log-softmax over the full logits width W (W >= V; extra classes only waste
probability), summed in float64. Only then is the batch handed to the miner.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from prism_eval.protocol import (
    Batch,
    BatchLoss,
    Failure,
    NonFiniteLoss,
    StreamAccepted,
    StreamEnd,
    StreamOpen,
    StreamRefused,
)
from prism_eval.worker.causality import check_positions
from prism_eval.worker.channel import Channel

# Bound the float32 copy of the logits: a gpt2-width batch would otherwise need gigabytes.
_MAX_CHUNK_ELEMENTS = 1 << 26
# Bound the capture's own references before miner code can replace module attributes.
_cross_entropy = F.cross_entropy
_no_grad = torch.no_grad


class StreamRefusedError(RuntimeError):
    """The supervisor refused the requested stream; the run is over."""


class CaptureError(RuntimeError):
    """The model's output cannot be scored (shape, type, width); the run is over."""


def _check_logits(logits: Any, rows: int, steps: int, vocab_size: int) -> torch.Tensor:
    if not isinstance(logits, torch.Tensor):
        raise CaptureError(
            f"the model returned {type(logits).__name__}; it must return a logits tensor "
            "(batch, seq, vocab)"
        )
    if logits.dim() != 3 or logits.shape[0] != rows or logits.shape[1] != steps:
        raise CaptureError(
            f"logits of shape {tuple(logits.shape)}; expected ({rows}, {steps}, >= {vocab_size})"
        )
    if logits.shape[2] < vocab_size:
        raise CaptureError(
            f"logits are {logits.shape[2]} wide, narrower than the vocabulary ({vocab_size})"
        )
    return logits


def batch_nats(model: torch.nn.Module, rows: torch.Tensor, vocab_size: int) -> float:
    """Summed nats of `model` predicting rows[:, 1:] from rows[:, :-1], model mode unchanged."""
    inputs, targets = rows[:, :-1], rows[:, 1:]  # (batch, seq - 1) each
    was_training = model.training
    model.eval()
    try:
        with _no_grad():
            logits = _check_logits(model(inputs), rows.shape[0], inputs.shape[1], vocab_size)
            width = logits.shape[2]
            chunk_rows = max(1, _MAX_CHUNK_ELEMENTS // (inputs.shape[1] * width))
            row_nats: list[float] = []
            for start in range(0, rows.shape[0], chunk_rows):
                chunk = logits[start : start + chunk_rows].float()  # (chunk, seq, width)
                nll = _cross_entropy(
                    chunk.reshape(-1, width),
                    targets[start : start + chunk_rows].reshape(-1),
                    reduction="none",
                ).view(chunk.shape[0], -1)  # (chunk, seq)
                row_nats.extend(nll.double().sum(dim=1).tolist())
    finally:
        model.train(was_training)
    return math.fsum(row_nats)


def tokenizer_name(tokenizer: Any, declared: str) -> str:
    """The name to ask the supervisor for: a reference handle's name, or a custom marker."""
    if tokenizer is None:
        return declared
    if isinstance(tokenizer, str):
        return tokenizer
    name = getattr(tokenizer, "prism_reference_name", None)
    if isinstance(name, str):
        return name
    return f"custom:{type(tokenizer).__name__}"[:64]


class ScoredStream:
    """The one pass over the supervisor's batches that `iter_train_batches` exposes."""

    def __init__(self, channel: Channel, device: str, vocab_size: int) -> None:
        self._channel = channel
        self._device = torch.device(device)
        self._vocab_size = vocab_size
        self.model: torch.nn.Module | None = None
        self.consumed = 0

    def open(
        self, model: Any, batch_size: int, seq_len: int, tokenizer: str
    ) -> Iterator[torch.Tensor]:
        """Ask for the stream; return the batch iterator or raise if refused."""
        if self.model is not None:
            raise RuntimeError(
                "ctx.iter_train_batches may be called only once: the scored stream is one pass"
            )
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                "ctx.iter_train_batches(model, ...) needs the torch.nn.Module you train"
            )
        self._channel.send(StreamOpen(batch_size=batch_size, seq_len=seq_len, tokenizer=tokenizer))
        reply, _ = self._channel.receive()
        if isinstance(reply, StreamRefused):
            raise StreamRefusedError(f"[{reply.rule_id}] {reply.message}")
        if not isinstance(reply, StreamAccepted):
            raise RuntimeError(f"unexpected supervisor message {reply.type}")
        self.model = model
        return self._batches(model)

    def _batches(self, model: torch.nn.Module) -> Iterator[torch.Tensor]:
        while True:
            message, body = self._channel.receive()
            if isinstance(message, StreamEnd):
                return
            if not isinstance(message, Batch):
                raise RuntimeError(f"unexpected supervisor message {message.type}")
            spot = message.spot_check_position
            arrays = self._channel.receive_tokens(
                message.rows * (1 if spot is None else 2), message.cols, body
            )
            both = torch.from_numpy(arrays.astype(np.int64)).to(self._device)
            rows = both[: message.rows]  # (batch, seq)
            try:
                nats = batch_nats(model, rows, self._vocab_size)
            except CaptureError as exc:
                self._channel.send(
                    Failure(
                        where="capture",
                        exc_type="CaptureError",
                        message=str(exc)[:4096],
                        traceback="",
                    )
                )
                raise
            if not math.isfinite(nats):
                self._channel.send(NonFiniteLoss(index=message.index))
                raise FloatingPointError(f"the loss of batch {message.index} is not finite")
            check = None
            if spot is not None:  # before the miner trains on this batch, like the loss
                source = both[message.rows :]
                inputs = rows[:, :-1]
                check = check_positions(
                    model, inputs, source[:, :-1], [spot], "eval_no_grad", message.index
                )[0]
            tokens = message.rows * (message.cols - 1)
            self._channel.send(
                BatchLoss(index=message.index, nats=nats, tokens=tokens, spot_check=check)
            )
            self.consumed += 1
            yield rows
