"""Tests for prism_eval.protocol.tensors: where each committed tensor goes in a shared buffer."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from prism_eval.protocol import DTYPE_BYTES, TensorEntry, logits_bytes, place_tensors, tensor_bytes
from prism_eval.protocol.tensors import ALIGNMENT

ENTRIES = st.lists(
    st.builds(
        TensorEntry,
        name=st.text(min_size=1, max_size=8),
        kind=st.sampled_from(["parameter", "buffer"]),
        dtype=st.sampled_from(sorted(DTYPE_BYTES)),
        shape=st.lists(st.integers(0, 9), max_size=3),
    ),
    max_size=12,
)


def test_a_scalar_has_one_element_and_an_empty_dimension_none() -> None:
    assert TensorEntry(name="s", kind="buffer", dtype="int64", shape=[]).elements == 1
    assert TensorEntry(name="e", kind="buffer", dtype="int64", shape=[3, 0]).elements == 0


def test_placement_by_hand() -> None:
    entries = [
        TensorEntry(name="a", kind="parameter", dtype="float32", shape=[3]),  # 12 bytes
        TensorEntry(name="b", kind="parameter", dtype="bfloat16", shape=[40]),  # 80 bytes
        TensorEntry(name="c", kind="buffer", dtype="bool", shape=[]),  # 1 byte
    ]
    placed, size = place_tensors(entries)
    assert [p.offset for p in placed] == [0, 64, 192]
    assert size == 256


@given(ENTRIES)
def test_placed_tensors_are_aligned_in_order_and_never_overlap(entries: list[TensorEntry]) -> None:
    placed, size = place_tensors(entries)
    end = 0
    for entry in placed:
        assert entry.offset % ALIGNMENT == 0
        assert entry.offset >= end
        end = entry.offset + tensor_bytes(entry)
    assert end <= size < end + ALIGNMENT or (not placed and size == 0)


def test_logits_bytes_follow_the_dtype() -> None:
    assert logits_bytes(2, 3, 5, "float32") == 120
    assert logits_bytes(2, 3, 5, "bfloat16") == 60
