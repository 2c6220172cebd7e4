"""Worker (sandboxed): causality checks — change the future, the past's logits must not move.

For a position j, the tokens from j on are replaced by other tokens; a causal model's logits
at positions < j (which predict tokens <= j) must stay the same. Run in eval mode under
no_grad (how the capture scores), in train mode with grad (with the RNG re-seeded before each
forward so dropout draws the same masks), and again after the model has been called many
times (a model that turns on a leak only later). Batch independence: a row's log-probabilities
must not move when the other rows change. The supervisor judges the reported diffs; these run in
the sandbox, so they filter honest mistakes early, and the prefix audit is the guarantee.
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from prism_eval.protocol import CausalityCheck
from prism_eval.worker.outputs import logits_of

Mode = Literal["eval_no_grad", "train_grad", "after_warm_calls", "other_rows"]
_LARGE = 1e30  # reported instead of NaN/inf, so a broken output still reads as a violation


def _forward(model: torch.nn.Module, tokens: torch.Tensor, train: bool, seed: int) -> torch.Tensor:
    was_training = model.training
    model.train(train)
    try:
        # fork_rng: a check never moves the training RNG, so runs stay reproducible.
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
        with torch.random.fork_rng(devices=devices), torch.set_grad_enabled(train):
            torch.manual_seed(seed)
            output = logits_of(model(tokens))
        return output.detach().float()  # (batch, seq, width)
    finally:
        model.train(was_training)


def perturb_from(tokens: torch.Tensor, source: torch.Tensor, position: int) -> torch.Tensor:
    """`tokens` with every position from `position` on taken from `source`."""
    changed = tokens.clone()
    changed[:, position:] = source[:, position:]
    return changed


def compare_before(
    base: torch.Tensor, changed: torch.Tensor, position: int, mode: Mode
) -> CausalityCheck:
    """The check for one position: how far the log-probabilities at positions < `position`
    moved, in nats. Log-probabilities, not logits: what is scored, and no output of the model
    can widen the tolerance (a logit scale could — one column at -1e6 would)."""
    if base.shape != changed.shape:
        return CausalityCheck(mode=mode, position=position, max_abs_diff=_LARGE)
    before = torch.log_softmax(base[:, :position], dim=-1)
    after = torch.log_softmax(changed[:, :position], dim=-1)
    diff = float((after - before).abs().max())
    return CausalityCheck(
        mode=mode, position=position, max_abs_diff=diff if math.isfinite(diff) else _LARGE
    )


def check_positions(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    source: torch.Tensor,
    positions: list[int],
    mode: Mode,
    seed: int,
) -> list[CausalityCheck]:
    """One check per position, in one mode."""
    train = mode == "train_grad"
    base = _forward(model, tokens, train, seed)
    return [
        compare_before(base, _forward(model, perturb_from(tokens, source, j), train, seed), j, mode)
        for j in positions
    ]


def probe_causality(
    model: torch.nn.Module,
    tokens: torch.Tensor,
    source: torch.Tensor,
    positions: list[int],
    warm_calls: int,
    seed: int,
) -> list[CausalityCheck]:
    """Every mode the probe checks, in order: eval, train, then again after warm calls."""
    checks = check_positions(model, tokens, source, positions, "eval_no_grad", seed)
    checks += check_positions(model, tokens, source, positions, "train_grad", seed)
    warm_tokens = tokens[:1, : min(4, tokens.shape[1])]  # cheap calls: the count is the point
    for _ in range(warm_calls):
        _forward(model, warm_tokens, False, seed)
    checks += check_positions(model, tokens, source, positions, "after_warm_calls", seed)
    return [*checks, check_other_rows(model, tokens, source, seed)]


def check_other_rows(
    model: torch.nn.Module, tokens: torch.Tensor, source: torch.Tensor, seed: int
) -> CausalityCheck:
    """How far row 0's log-probabilities move when every other row is replaced (eval mode)."""
    changed = tokens.clone()
    changed[1:] = source[1:]
    base = _forward(model, tokens, False, seed)
    other = _forward(model, changed, False, seed)
    if base.shape != other.shape:
        return CausalityCheck(mode="other_rows", position=0, max_abs_diff=_LARGE)
    diff = float(
        (torch.log_softmax(base[0], dim=-1) - torch.log_softmax(other[0], dim=-1)).abs().max()
    )
    return CausalityCheck(
        mode="other_rows", position=0, max_abs_diff=diff if math.isfinite(diff) else _LARGE
    )
