"""Shared: the layout of a model's weights in a shared buffer, and of a logits buffer.

The trainer describes the scored model's tensors (parameters and buffers, by name); the
supervisor checks that description against the model `build_model(ctx)` builds in the predictor
and places every tensor at an aligned offset (`place_tensors`). Pure arithmetic: both sides
compute sizes from the same table, so no child can make the supervisor size anything.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from prism_eval.protocol.common import Message

DType = Literal[
    "float32", "float16", "bfloat16", "float64", "int64", "int32", "int16", "int8", "uint8", "bool",
]  # fmt: skip
DTYPE_BYTES: dict[str, int] = {
    "float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int64": 8, "int32": 4, "int16": 2,
    "int8": 1, "uint8": 1, "bool": 1,
}  # fmt: skip
FLOATING = ("float32", "float16", "bfloat16", "float64")
LogitsDType = Literal["float32", "bfloat16"]
# Every tensor starts on a cache line: kernels then see the same alignment as torch's allocator.
ALIGNMENT = 64
MAX_TENSORS = 20_000


class TensorEntry(Message):
    """One tensor of the scored model's state, as a child describes it."""

    name: str = Field(min_length=1, max_length=512)
    kind: Literal["parameter", "buffer"]
    dtype: DType
    shape: list[Annotated[int, Field(ge=0, le=2**40)]] = Field(max_length=8)

    @property
    def elements(self) -> int:
        """Number of elements (1 for a scalar)."""
        count = 1
        for size in self.shape:
            count *= size
        return count


class PlacedTensor(TensorEntry):
    """A tensor with its byte offset in the weights buffer (placed by the supervisor)."""

    offset: int = Field(ge=0)


def tensor_bytes(entry: TensorEntry) -> int:
    """Bytes the tensor takes, from the dtype table."""
    return entry.elements * DTYPE_BYTES[entry.dtype]


def place_tensors(entries: list[TensorEntry]) -> tuple[list[PlacedTensor], int]:
    """Place each tensor at the next aligned offset; return them and the buffer's size."""
    placed, offset = [], 0
    for entry in entries:
        placed.append(PlacedTensor(**entry.model_dump(), offset=offset))
        offset += -(-tensor_bytes(entry) // ALIGNMENT) * ALIGNMENT
    return placed, offset


def logits_bytes(rows: int, cols: int, width: int, dtype: LogitsDType) -> int:
    """Bytes of a (rows, cols, width) logits array in `dtype`."""
    return rows * cols * width * DTYPE_BYTES[dtype]
