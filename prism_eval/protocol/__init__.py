"""Shared: everything that crosses the boundary between the supervisor and its children.

Frames (`frames`) carry one pydantic message each, per role: `common` (jobs, readiness,
failures), `probe`, `trainer`, `predictor`, `scorer`, with `tensors` for the shared weights
layout and `channel` for a child's end. Pure data and framing, no policy: the supervisor
decides what a message means. Whatever a child sends is untrusted until `parse_child_message`
has turned it into a model.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError

from prism_eval.protocol.common import (
    PROTOCOL_VERSION,
    Failure,
    Go,
    JobSpec,
    LayerReport,
    Ready,
    Role,
    SandboxSpec,
    ScorerJob,
    Where,
)
from prism_eval.protocol.frames import (
    MAX_BODY_BYTES,
    MAX_CHILD_HEADER_BYTES,
    MAX_SUPERVISOR_HEADER_BYTES,
    ChannelClosed,
    ProtocolError,
    encode_frame,
    read_frame,
)
from prism_eval.protocol.predictor import ModelLayout, Predict, Predicted, PredictorSetup
from prism_eval.protocol.probe import CausalityCheck, ProbeInput, ProbeReport
from prism_eval.protocol.scorer import (
    F_SEAL_FUTURE_WRITE,
    LARGE_DIFF,
    BufferName,
    BuffersMapped,
    Compare,
    Compared,
    LogitsSource,
    Score,
    Scored,
    ScorerSetup,
    Snapshot,
    Snapshotted,
)
from prism_eval.protocol.tensors import (
    DTYPE_BYTES,
    FLOATING,
    LogitsDType,
    PlacedTensor,
    TensorEntry,
    logits_bytes,
    place_tensors,
    tensor_bytes,
)
from prism_eval.protocol.trainer import (
    BatchRequest,
    Reveal,
    StreamAccepted,
    StreamEnd,
    StreamOpen,
    StreamRefused,
    TrainDone,
)
from prism_eval.protocol.zygote import Exited, Spawn, Spawned

SupervisorMessage = Annotated[
    JobSpec
    | Go
    | ScorerJob
    | ProbeInput
    | StreamAccepted
    | StreamRefused
    | Reveal
    | StreamEnd
    | PredictorSetup
    | Predict
    | ScorerSetup
    | Snapshot
    | Score
    | Compare
    | Spawn,
    Field(discriminator="type"),
]

ChildMessage = Annotated[
    Ready
    | Failure
    | ProbeReport
    | StreamOpen
    | BatchRequest
    | TrainDone
    | ModelLayout
    | Predicted
    | Snapshotted
    | Scored
    | BuffersMapped
    | Compared
    | Spawned
    | Exited,
    Field(discriminator="type"),
]

_CHILD_ADAPTER: TypeAdapter[ChildMessage] = TypeAdapter(ChildMessage)
_SUPERVISOR_ADAPTER: TypeAdapter[SupervisorMessage] = TypeAdapter(SupervisorMessage)


def parse_child_message(untrusted_header: bytes, untrusted_body: bytes) -> ChildMessage:
    """Parse a child's frame into a message model, or raise ProtocolError."""
    if untrusted_body:
        raise ProtocolError("children may not send frame bodies")
    try:
        return _CHILD_ADAPTER.validate_json(untrusted_header)
    except ValidationError as exc:
        raise ProtocolError(f"malformed message: {exc.errors()[:3]}") from exc


def parse_supervisor_message(header: bytes) -> SupervisorMessage:
    """Parse a supervisor's frame header (a child's side)."""
    try:
        return _SUPERVISOR_ADAPTER.validate_json(header)
    except ValidationError as exc:
        raise ProtocolError(f"malformed supervisor message: {exc.errors()[:3]}") from exc


__all__ = [
    "DTYPE_BYTES",
    "FLOATING",
    "F_SEAL_FUTURE_WRITE",
    "LARGE_DIFF",
    "MAX_BODY_BYTES",
    "MAX_CHILD_HEADER_BYTES",
    "MAX_SUPERVISOR_HEADER_BYTES",
    "PROTOCOL_VERSION",
    "BatchRequest",
    "BufferName",
    "BuffersMapped",
    "CausalityCheck",
    "ChannelClosed",
    "ChildMessage",
    "Compare",
    "Compared",
    "Exited",
    "Failure",
    "Go",
    "JobSpec",
    "LayerReport",
    "LogitsDType",
    "LogitsSource",
    "ModelLayout",
    "PlacedTensor",
    "Predict",
    "Predicted",
    "PredictorSetup",
    "ProbeInput",
    "ProbeReport",
    "ProtocolError",
    "Ready",
    "Reveal",
    "Role",
    "SandboxSpec",
    "Score",
    "Scored",
    "ScorerJob",
    "ScorerSetup",
    "Snapshot",
    "Snapshotted",
    "Spawn",
    "Spawned",
    "StreamAccepted",
    "StreamEnd",
    "StreamOpen",
    "StreamRefused",
    "SupervisorMessage",
    "TensorEntry",
    "TrainDone",
    "Where",
    "encode_frame",
    "logits_bytes",
    "parse_child_message",
    "parse_supervisor_message",
    "place_tensors",
    "read_frame",
    "tensor_bytes",
]
