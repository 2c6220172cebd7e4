"""Shared: everything that crosses the boundary between the supervisor and its children.

Frames (`frames`) carry one pydantic message each, per role: `common` (jobs, readiness,
failures), `probe`, `trainer`, `predictor`, `scorer`, `zygote`, with `tensors` for the shared
weights layout, `messages` for what each side may send and `channel` for a child's end. Pure
data and framing, no policy: the supervisor decides what a message means. Whatever a child
sends is untrusted until `parse_child_message` has turned it into a model.

May import: pydantic, orjson, the standard library (numpy only lazily, in a child's channel).
Offers: the names in `__all__`, to every zone.
"""

from __future__ import annotations

from prism_eval.protocol.channel import Channel
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
from prism_eval.protocol.messages import (
    ChildMessage,
    SupervisorMessage,
    parse_child_message,
    parse_supervisor_message,
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
    ScoreBatch,
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
    "Channel",
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
    "ScoreBatch",
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
