"""Scorer (trusted): the loss of a batch — per-position nats and their row sums.

docs/design.md §5: position t of a row's logits predicts target t (the row's token t+1). The logits
are read in the evaluator's precision and scored with a float32 log-softmax over their full width W
(W >= V: extra classes only waste probability); the per-position nats are float32 and each row's sum
is float64, so the figure does not depend on how rows are grouped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def position_nats(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Nats of each target: logits (rows, cols, width) any float dtype, targets (rows, cols - 1)
    int64 → (rows, cols - 1) float32. The logits' last column predicts nothing and is ignored.

    Row by row: a row's first cols − 1 positions are contiguous, so float32 logits are read
    where they lie (no copy), and a wider dtype is converted one row at a time."""
    rows, cols, _ = logits.shape
    out = torch.empty((rows, cols - 1), dtype=torch.float32, device=logits.device)
    for row in range(rows):
        out[row] = F.cross_entropy(logits[row, :-1].float(), targets[row], reduction="none")
    return out


def nats_at(logits: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Nats of one target per row: position positions[r] of row r predicting targets[r].
    logits (rows, cols, width); positions and targets (rows,) int64 → (rows,) float32."""
    picked = logits[torch.arange(logits.shape[0], device=logits.device), positions].float()
    return F.cross_entropy(picked, targets, reduction="none")


def row_sums(nats: torch.Tensor) -> list[float]:
    """Each row's summed nats, accumulated in float64."""
    return [float(value) for value in nats.double().sum(dim=1).tolist()]
