"""Shared: the predictor's messages — the scored forward with `architecture.py` only.

Three roles run this code in separate processes: the *predictor* (the scored pass, weights the
trainer committed), the *auditor* (the prefix audit, the same step's weights, rows cut after a
secret position) and the *referee* (after training: the forced-init twin and the saved
weights). None of them ever receives a target:

    predictor → ModelLayout (the tensors build_model(ctx) made)
    supervisor → PredictorSetup (+ the scorer's snapshot, read-only; the logits buffer)
    repeat:  supervisor → Predict + inputs;  predictor → Predicted (logits are in the buffer)
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from prism_eval.protocol.common import Message
from prism_eval.protocol.tensors import MAX_TENSORS, LogitsDType, PlacedTensor, TensorEntry


class ModelLayout(Message):
    """The tensors (parameters and buffers) of the model build_model(ctx) built."""

    type: Literal["model_layout"] = "model_layout"
    tensors: list[TensorEntry] = Field(max_length=MAX_TENSORS)


class PredictorSetup(Message):
    """Where the weights come from and the logits go. The frame carries the scorer's snapshot
    (when `weights_bytes` > 0; sealed so that it can only be mapped read-only) and then the
    logits buffer."""

    type: Literal["predictor_setup"] = "predictor_setup"
    tensors: list[PlacedTensor] = Field(description="Placement of the committed tensors.")
    weights_bytes: int = Field(ge=0)
    rows: int = Field(ge=1, description="Most rows one Predict sends.")
    cols: int = Field(ge=2)
    width: int = Field(ge=1, description="The logits width the probe saw.")
    logits_dtype: LogitsDType


class Predict(Message):
    """Run the forward on the inputs in the body (int32, (rows, cols)) and write the logits
    (rows, cols, width) to the logits buffer. `model` says which weights: the committed ones
    (the scorer's snapshot), the forced-init twin, or the saved final weights (referee)."""

    type: Literal["predict"] = "predict"
    index: int
    model: Literal["committed", "twin", "trained"]
    rows: int = Field(ge=1)
    cols: int = Field(ge=2)


class Predicted(Message):
    """The logits for Predict `index` are in the buffer."""

    type: Literal["predicted"] = "predicted"
    index: int = Field(ge=0)
