"""Scorer (trusted): the message loop — snapshots of committed weights, scores, comparisons.

Every buffer is a descriptor the supervisor created, sized and sealed (no child can shrink or
grow it), so reading past what a child wrote can never fault here. The snapshot is the scorer's
own memory: the predictor and the auditor only ever get copies of it, so the weights a step was
scored with stay the weights its prefix audit uses, whatever a predictor does to its copy.
"""

from __future__ import annotations

import mmap
import os

import numpy as np
import torch

from prism_eval.protocol import (
    LARGE_DIFF,
    Compare,
    Compared,
    Copied,
    CopyToAuditor,
    LogitsDType,
    ProtocolError,
    Score,
    Scored,
    ScorerSetup,
    Snapshot,
    Snapshotted,
)
from prism_eval.protocol.channel import Channel
from prism_eval.scorer.nats import nats_at, position_nats, row_sums

_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def map_bytes(fd: int) -> torch.Tensor:
    """The whole buffer behind `fd` as a flat uint8 tensor sharing its memory."""
    size = os.fstat(fd).st_size
    mapped = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    os.close(fd)
    return torch.frombuffer(mapped, dtype=torch.uint8)


class Scorer:
    """Serves one stage: set up once, then snapshot / score / copy / compare on request."""

    def __init__(self, channel: Channel, device: str) -> None:
        self._channel = channel
        self._device = torch.device(device)
        self._buffers: dict[str, torch.Tensor] = {}
        self._snapshot = torch.empty(0, dtype=torch.uint8)
        self._geometry = (0, 0, 0)
        self._dtype: LogitsDType = "float32"
        self._scored: tuple[int, torch.Tensor, torch.Tensor] | None = None  # index, nats, targets

    def serve(self) -> None:
        """Answer messages until the supervisor closes the channel (ChannelClosed)."""
        while True:
            message, body = self._channel.receive()
            if isinstance(message, ScorerSetup):
                self._setup(message)
            elif isinstance(message, Snapshot):
                self._snapshot.copy_(self._buffers["commit"][: self._snapshot.numel()])
                self._buffers["predictor_weights"][: self._snapshot.numel()].copy_(self._snapshot)
                self._channel.send(Snapshotted(index=message.index))
            elif isinstance(message, Score):
                self._channel.send(self._score(message, body))
            elif isinstance(message, CopyToAuditor):
                self._buffers["auditor_weights"][: self._snapshot.numel()].copy_(self._snapshot)
                self._channel.send(Copied(index=message.index))
            elif isinstance(message, Compare):
                self._channel.send(self._compare(message))
            else:
                raise ProtocolError(f"the scorer does not take {message.type}")

    def _setup(self, setup: ScorerSetup) -> None:
        fds = self._channel.take_fds(len(setup.buffers))
        self._buffers = {name: map_bytes(fd) for name, fd in zip(setup.buffers, fds, strict=True)}
        self._snapshot = torch.empty(setup.weights_bytes, dtype=torch.uint8)
        self._geometry = (setup.rows, setup.cols, setup.width)
        self._dtype = setup.logits_dtype

    def _logits(self, source: str, rows: int, cols: int) -> torch.Tensor:
        """The first (rows, cols, width) logits in `source`'s buffer, on the scoring device."""
        most_rows, most_cols, width = self._geometry
        if rows > most_rows or cols != most_cols:
            raise ProtocolError(f"({rows}, {cols}) logits do not fit the buffer")
        dtype = _TORCH_DTYPES[self._dtype]
        size = rows * cols * width * (torch.finfo(dtype).bits // 8)
        flat = self._buffers[f"{source}_logits"][:size].view(dtype)
        return flat.view(rows, cols, width).to(self._device)

    def _score(self, message: Score, body: bytes) -> Scored:
        rows, cols = message.rows, message.cols
        targets = self._targets(body, rows, cols - 1)
        nats = position_nats(self._logits(message.source, rows, cols), targets)  # (rows, cols-1)
        if not bool(torch.isfinite(nats).all()):
            self._scored = None
            return Scored(index=message.index, finite=False, row_nats=[])
        self._scored = (message.index, nats, targets)
        return Scored(index=message.index, finite=True, row_nats=row_sums(nats))

    def _targets(self, body: bytes, rows: int, cols: int) -> torch.Tensor:
        if len(body) != rows * cols * 4:
            raise ProtocolError(f"targets of {len(body)} bytes for ({rows}, {cols})")
        array = np.frombuffer(body, dtype=np.int32).reshape(rows, cols).astype(np.int64)
        return torch.from_numpy(array).to(self._device)

    def _compare(self, message: Compare) -> Compared:
        if self._scored is None or self._scored[0] != message.index:
            raise ProtocolError(f"no score for batch {message.index} to compare with")
        _, scored, targets = self._scored
        rows, steps = scored.shape
        positions = torch.tensor(message.positions, dtype=torch.int64, device=self._device)
        if positions.shape != (rows,) or bool((positions >= steps).any()):
            raise ProtocolError("comparison positions outside the scored batch")
        logits = self._logits(message.source, rows, steps + 1)
        if message.kind == "prefix":
            picked = targets.gather(1, positions[:, None])[:, 0]
            recomputed = nats_at(logits, positions, picked)
            diffs = (recomputed - scored.gather(1, positions[:, None])[:, 0]).abs()
        else:
            before = torch.arange(steps, device=self._device)[None, :] < positions[:, None]
            diffs = (position_nats(logits, targets) - scored).abs()
            diffs = torch.where(before, diffs, torch.zeros_like(diffs)).amax(dim=1)
        diffs = torch.nan_to_num(diffs.double(), nan=LARGE_DIFF, posinf=LARGE_DIFF)
        return Compared(index=message.index, diffs=diffs.clamp(max=LARGE_DIFF).tolist())
