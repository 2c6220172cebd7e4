"""Scorer (trusted): the message loop — snapshots of committed weights, scores, comparisons.

Every buffer is a descriptor the supervisor created, sized and sealed (no child can shrink or
grow it), so reading past what a child wrote can never fault here. The snapshot is written only
here: once mapped, it is sealed with `F_SEAL_FUTURE_WRITE`, so the predictor and the auditor can
map it read-only and nothing else. The weights a step was scored with stay the weights its
prefix audit uses, whatever a predictor does.
"""

from __future__ import annotations

import fcntl
import math
import mmap
import os

import numpy as np
import torch

from prism_eval.protocol import (
    F_SEAL_FUTURE_WRITE,
    LARGE_DIFF,
    BuffersMapped,
    Channel,
    Compare,
    Compared,
    LogitsDType,
    ProtocolError,
    ScoreBatch,
    Scored,
    ScorerSetup,
    Snapshot,
    Snapshotted,
    logits_bytes,
)
from prism_eval.scorer.nats import nats_at, position_nats, row_sums

_TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
# Below this many bytes of logits a batch is scored on one thread: a second one saves less than
# it costs to wake, and once idle it would spin against the next process on a small host.
# Thread counts do not change the nats (each position's log-softmax is one thread's sum).
PARALLEL_SCORING_MIN_BYTES = 4 * 2**20


def map_bytes(fd: int, seal_writes: bool = False) -> torch.Tensor:
    """The whole buffer behind `fd` as a flat uint8 tensor sharing its memory; with
    `seal_writes`, this mapping stays the only way to write it."""
    size = os.fstat(fd).st_size
    mapped = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    if seal_writes:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, F_SEAL_FUTURE_WRITE | fcntl.F_SEAL_SEAL)
    os.close(fd)
    return torch.frombuffer(mapped, dtype=torch.uint8)


class Scorer:
    """Serves one stage: set up once, then snapshot / score / copy / compare on request."""

    def __init__(self, channel: Channel, device: str, threads: int) -> None:
        self._channel = channel
        self._threads = threads
        self._device = torch.device(device)
        self._buffers: dict[str, torch.Tensor] = {}
        self._weights_bytes = 0
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
                size = self._weights_bytes
                self._buffers["snapshot"][:size].copy_(self._buffers["commit"][:size])
                self._channel.send(Snapshotted(index=message.index))
            elif isinstance(message, ScoreBatch):
                self._channel.send(self._score(message, body))
            elif isinstance(message, Compare):
                self._channel.send(self._compare(message))
            else:
                raise ProtocolError(f"the scorer does not take {message.type}")

    def _setup(self, setup: ScorerSetup) -> None:
        fds = self._channel.take_fds(len(setup.buffers))
        self._buffers = {
            name: map_bytes(fd, seal_writes=name == "snapshot")
            for name, fd in zip(setup.buffers, fds, strict=True)
        }
        self._weights_bytes = setup.weights_bytes
        self._geometry = (setup.rows, setup.cols, setup.width)
        self._dtype = setup.logits_dtype
        size = logits_bytes(setup.rows, setup.cols, setup.width, setup.logits_dtype)
        if self._device.type == "cpu" and self._threads > 0:
            torch.set_num_threads(self._threads if size >= PARALLEL_SCORING_MIN_BYTES else 1)
        self._channel.send(BuffersMapped())

    def _logits(self, source: str, rows: int, cols: int) -> torch.Tensor:
        """The first (rows, cols, width) logits in `source`'s buffer, on the scoring device."""
        most_rows, most_cols, width = self._geometry
        if rows > most_rows or cols != most_cols:
            raise ProtocolError(f"({rows}, {cols}) logits do not fit the buffer")
        dtype = _TORCH_DTYPES[self._dtype]
        size = rows * cols * width * (torch.finfo(dtype).bits // 8)
        flat = self._buffers[f"{source}_logits"][:size].view(dtype)
        return flat.view(rows, cols, width).to(self._device)

    def _score(self, message: ScoreBatch, body: bytes) -> Scored:
        rows, cols = message.rows, message.cols
        targets = self._targets(body, rows, cols - 1)
        nats = position_nats(self._logits(message.source, rows, cols), targets)  # (rows, cols-1)
        # One read-back per step (one device sync on CUDA): nats are >= 0, +inf or NaN, and a
        # float64 sum of float32 values cannot overflow, so the row sums are all finite
        # exactly when every position is.
        sums = row_sums(nats)
        if not all(math.isfinite(value) for value in sums):
            self._scored = None
            return Scored(index=message.index, finite=False, row_nats=[])
        self._scored = (message.index, nats, targets)
        return Scored(index=message.index, finite=True, row_nats=sums)

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
