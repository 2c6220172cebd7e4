"""Scorer (trusted): the loss of a batch — per-position nats and their row sums.

DESIGN §5: position t of a row's logits predicts target t (the row's token t+1). The logits are
read in the evaluator's precision and scored with a float32 log-softmax over their full width W
(W >= V: extra classes only waste probability); the per-position nats are float32 and each
row's sum is float64, so the figure does not depend on how rows are grouped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Bound the float32 copy of the logits: a gpt2-width batch would otherwise need gigabytes.
MAX_CHUNK_ELEMENTS = 1 << 26


def position_nats(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Nats of each target: logits (rows, cols, width) any float dtype, targets (rows, cols - 1)
    int64 → (rows, cols - 1) float32. The logits' last column predicts nothing and is ignored."""
    rows, cols, width = logits.shape
    steps = cols - 1
    out = torch.empty((rows, steps), dtype=torch.float32, device=logits.device)
    chunk_rows = max(1, MAX_CHUNK_ELEMENTS // max(1, steps * width))
    for start in range(0, rows, chunk_rows):
        chunk = logits[start : start + chunk_rows, :steps].float()  # (chunk, steps, width)
        out[start : start + chunk_rows] = F.cross_entropy(
            chunk.reshape(-1, width),
            targets[start : start + chunk_rows].reshape(-1),
            reduction="none",
        ).view(chunk.shape[0], steps)
    return out


def nats_at(logits: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Nats of one target per row: position positions[r] of row r predicting targets[r].
    logits (rows, cols, width); positions and targets (rows,) int64 → (rows,) float32."""
    picked = logits[torch.arange(logits.shape[0], device=logits.device), positions].float()
    return F.cross_entropy(picked, targets, reduction="none")


def row_sums(nats: torch.Tensor) -> list[float]:
    """Each row's summed nats, accumulated in float64."""
    return [float(value) for value in nats.double().sum(dim=1).tolist()]
