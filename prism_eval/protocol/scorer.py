"""Shared: the scorer's messages — trusted code that turns logits into nats.

The scorer imports torch, never a bundle file. It copies the trainer's committed weights into a
snapshot before any predictor runs on them, and computes every loss: float32 log-softmax over
the full logits width, per-position nats, summed per row in float64. The snapshot is a buffer
only the scorer can write: it seals it with `F_SEAL_FUTURE_WRITE` once mapped, so the predictor
and the auditor read the same bytes and nothing can change them but the next Snapshot.

    supervisor → ScorerSetup (+ buffers, named in `buffers`, in that order) → BuffersMapped
    Snapshot i → Snapshotted   (commit → snapshot)
    ScoreBatch i + targets → Scored (nats of the logits in a buffer; kept for comparisons)
    Compare i → Compared       (the same positions from other logits, against the scored nats)
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from prism_eval.protocol.common import Message, finite
from prism_eval.protocol.tensors import LogitsDType

BufferName = Literal["commit", "snapshot", "predictor_logits", "auditor_logits"]
# memfd_create(2): no new writable mapping or write() of the file, from any process; the
# mapping the writer already holds stays writable. Python's fcntl module does not name it.
F_SEAL_FUTURE_WRITE = 0x0010
LogitsSource = Literal["predictor", "auditor"]
# Reported instead of NaN or inf (JSON has neither), so a broken output still reads as a breach.
LARGE_DIFF = 1e30


class ScorerSetup(Message):
    """The buffers (descriptors in this frame, in the order of `buffers`) and their geometry."""

    type: Literal["scorer_setup"] = "scorer_setup"
    buffers: list[BufferName] = Field(max_length=4)
    weights_bytes: int = Field(ge=0)
    rows: int = Field(ge=1)
    cols: int = Field(ge=2)
    width: int = Field(ge=1)
    logits_dtype: LogitsDType


class BuffersMapped(Message):
    """The buffers are mapped, and the snapshot is sealed against every other writer."""

    type: Literal["buffers_mapped"] = "buffers_mapped"


class Snapshot(Message):
    """Copy the commit buffer into the snapshot, the weights the predictor and auditor read."""

    type: Literal["snapshot"] = "snapshot"
    index: int


class Snapshotted(Message):
    """Snapshot `index` is taken: the predictor and the auditor read it from now on."""

    type: Literal["snapshotted"] = "snapshotted"
    index: int = Field(ge=0)


class ScoreBatch(Message):
    """Score the first `rows` × `cols` logits of `source` against the targets in the body
    (int32, (rows, cols - 1): position t predicts target t)."""

    type: Literal["score"] = "score"
    index: int
    source: LogitsSource
    rows: int = Field(ge=1)
    cols: int = Field(ge=2)


class Scored(Message):
    """Each row's summed nats; `finite` is False (and `row_nats` empty) when any was not."""

    type: Literal["scored"] = "scored"
    index: int = Field(ge=0)
    finite: bool
    row_nats: list[Annotated[float, Field(ge=0)]] = Field(max_length=1 << 16)

    @field_validator("row_nats")
    @classmethod
    def _all_finite(cls, values: list[float]) -> list[float]:
        return [finite(value) for value in values]


class Compare(Message):
    """Recompute nats from `source`'s logits with the last ScoreBatch's targets and compare
    them with its per-position nats, row by row. `kind` prefix: only position positions[r] of
    row r; kind spot: every position before positions[r]."""

    type: Literal["compare"] = "compare"
    index: int
    source: LogitsSource
    kind: Literal["prefix", "spot"]
    positions: list[Annotated[int, Field(ge=0)]] = Field(max_length=1 << 16)


class Compared(Message):
    """Per row, the largest |recomputed − scored| nats (LARGE_DIFF for a non-finite one)."""

    type: Literal["compared"] = "compared"
    index: int = Field(ge=0)
    diffs: list[Annotated[float, Field(ge=0, le=LARGE_DIFF)]] = Field(max_length=1 << 16)
