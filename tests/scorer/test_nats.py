"""Tests for prism_eval.scorer.nats: the loss math, imported directly (no process, no sandbox)."""

from __future__ import annotations

import math

import pytest
import torch

from prism_eval.scorer import nats


def manual_nats(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """−log softmax(logits)[target], position by position, in float64."""
    rows, steps = targets.shape
    out = torch.empty(rows, steps, dtype=torch.float64)
    for r in range(rows):
        for t in range(steps):
            row = logits[r, t].double()
            out[r, t] = torch.logsumexp(row, 0) - row[targets[r, t]]
    return out


def test_position_nats_match_the_definition() -> None:
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 11, generator=generator)
    targets = torch.randint(0, 11, (3, 4), generator=generator)
    got = nats.position_nats(logits, targets)
    assert got.shape == (3, 4) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), manual_nats(logits, targets), rtol=1e-6, atol=1e-6)


def test_the_last_column_of_logits_predicts_nothing() -> None:
    logits = torch.zeros(1, 3, 4)
    targets = torch.tensor([[1, 2]])
    before = nats.position_nats(logits, targets)
    logits[0, -1] = torch.tensor([1e9, -1e9, 0.0, 5.0])  # the withheld column's prediction
    assert torch.equal(nats.position_nats(logits, targets), before)


def test_wider_logits_only_waste_probability() -> None:
    narrow = torch.zeros(1, 2, 4)
    wide = torch.cat([narrow, torch.zeros(1, 2, 4)], dim=2)  # 4 extra classes, same logit
    targets = torch.tensor([[3]])
    assert float(nats.position_nats(narrow, targets)[0, 0]) == pytest.approx(math.log(4))
    assert float(nats.position_nats(wide, targets)[0, 0]) == pytest.approx(math.log(8))


def test_a_rows_nats_do_not_depend_on_the_other_rows() -> None:
    logits = torch.randn(7, 9, 13, generator=torch.Generator().manual_seed(1))
    targets = torch.randint(0, 13, (7, 8), generator=torch.Generator().manual_seed(2))
    whole = nats.position_nats(logits, targets)
    alone = torch.cat([nats.position_nats(logits[r : r + 1], targets[r : r + 1]) for r in range(7)])
    assert torch.equal(alone, whole)
    flat = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 13), targets.reshape(-1), reduction="none"
    )
    assert torch.equal(flat.view(7, 8), whole)  # as one batched call would score them


def test_bfloat16_logits_are_scored_in_float32() -> None:
    logits = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(3)).bfloat16()
    targets = torch.randint(0, 6, (2, 3), generator=torch.Generator().manual_seed(4))
    got = nats.position_nats(logits, targets)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, nats.position_nats(logits.float(), targets))


def test_nats_at_picks_one_position_per_row() -> None:
    logits = torch.randn(3, 5, 7, generator=torch.Generator().manual_seed(5))
    targets = torch.randint(0, 7, (3, 4), generator=torch.Generator().manual_seed(6))
    every = nats.position_nats(logits, targets)
    positions = torch.tensor([0, 3, 2])
    picked = nats.nats_at(logits, positions, targets.gather(1, positions[:, None])[:, 0])
    assert torch.equal(picked, every[torch.arange(3), positions])


def test_row_sums_are_float64_sums_of_the_float32_nats() -> None:
    values = torch.tensor([[0.1, 0.2, 0.3], [1e-8, 1.0, 1e8]], dtype=torch.float32)
    sums = nats.row_sums(values)
    assert sums == [float(values[0].double().sum()), float(values[1].double().sum())]
