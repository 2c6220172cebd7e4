"""Shared: which messages each side may send, and the parsers that turn frames into them.

A child's frame is untrusted until `parse_child_message` has made it one of `ChildMessage`;
a child reads the supervisor's frames with `parse_supervisor_message`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, TypeAdapter, ValidationError

from prism_eval.protocol import common, predictor, probe, scorer, trainer, zygote
from prism_eval.protocol.frames import ProtocolError

SupervisorMessage = Annotated[
    common.JobSpec
    | common.Go
    | common.ScorerJob
    | probe.ProbeInput
    | trainer.StreamAccepted
    | trainer.StreamRefused
    | trainer.Reveal
    | trainer.StreamEnd
    | predictor.PredictorSetup
    | predictor.Predict
    | scorer.ScorerSetup
    | scorer.Snapshot
    | scorer.ScoreBatch
    | scorer.Compare
    | zygote.Spawn,
    Field(discriminator="type"),
]

ChildMessage = Annotated[
    common.Ready
    | common.Failure
    | probe.ProbeReport
    | trainer.StreamOpen
    | trainer.BatchRequest
    | trainer.TrainDone
    | predictor.ModelLayout
    | predictor.Predicted
    | scorer.Snapshotted
    | scorer.Scored
    | scorer.BuffersMapped
    | scorer.Compared
    | zygote.Spawned
    | zygote.Exited,
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
