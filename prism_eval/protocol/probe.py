"""Shared: the probe's messages — the model built under the forced seed, counted and tried.

These checks run inside the sandboxed probe worker, so they are cheap early filters for honest
mistakes, not guarantees: the prefix audit during training is what no model can pass by lying.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from prism_eval.protocol.common import Message, finite


class ProbeInput(Message):
    """Probe tokens; body: int32 (2, batch, seq) — the input, then the perturbation source.

    For each causality position j the worker replaces tokens from j on by the perturbation's
    and compares the log-probabilities before j, in eval/no_grad, in train/grad, and again after
    `warm_calls` more forwards; then it replaces every row but the first and compares the
    first row's log-probabilities (batch independence).
    """

    type: Literal["probe_input"] = "probe_input"
    batch_size: int
    seq_len: int
    positions: list[int]
    warm_calls: int


class CausalityCheck(Message):
    """How far the log-probabilities before `position` moved when the tokens from it on
    changed (nats); mode other_rows: how far row 0's moved when the other rows changed."""

    mode: Literal["eval_no_grad", "train_grad", "after_warm_calls", "other_rows"]
    position: int
    max_abs_diff: float = Field(ge=0)

    @field_validator("max_abs_diff")
    @classmethod
    def _values_finite(cls, value: float) -> float:
        return finite(value)


class ProbeReport(Message):
    """What the probe saw: counts and the logits' shape."""

    type: Literal["probe_report"] = "probe_report"
    params: int = Field(ge=0)
    float_buffer_elements: int = Field(ge=0)
    params_after_forward: int = Field(ge=0)
    float_buffer_elements_after_forward: int = Field(ge=0)
    logits_shape: list[int] = Field(max_length=8)
    logits_finite: bool
    deterministic: bool
    causality: list[CausalityCheck] = Field(max_length=64)
