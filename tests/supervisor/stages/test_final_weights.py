"""Reading back final.safetensors without trusting it."""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from prism_eval.errors import Failed
from prism_eval.supervisor.stages.final_weights import read_final_weights

CAP = 1 << 30


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "final.safetensors"
    save_file({"a": torch.zeros(3, 4), "b": torch.ones(5, dtype=torch.float16)}, str(path))
    return path


def test_valid_file_is_summarized(weights: Path) -> None:
    artifacts = read_final_weights(weights, CAP)
    assert (artifacts.tensors, artifacts.elements) == (2, 17)
    assert artifacts.final_weights_bytes == weights.stat().st_size


def test_missing_file_is_a_failure(tmp_path: Path) -> None:
    with pytest.raises(Failed) as caught:
        read_final_weights(tmp_path / "final.safetensors", CAP)
    assert caught.value.rule_id == "audit.missing_final_weights"


def test_truncated_file_is_a_failure(weights: Path) -> None:
    weights.write_bytes(weights.read_bytes()[:-8])
    with pytest.raises(Failed) as caught:
        read_final_weights(weights, CAP)
    assert caught.value.rule_id == "audit.bad_final_weights"


def test_symlink_is_not_followed(weights: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.safetensors"
    os.symlink(weights, link)
    with pytest.raises(Failed) as caught:
        read_final_weights(link, CAP)
    assert caught.value.rule_id == "audit.bad_final_weights"


def test_file_over_the_cap_is_refused(weights: Path) -> None:
    with pytest.raises(Failed, match="over the cap"):
        read_final_weights(weights, 16)


def _write(path: Path, header: dict[str, object], data: bytes) -> None:
    encoded = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(encoded)) + encoded + data)


@pytest.mark.parametrize(
    "header",
    [
        {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}},  # shape vs bytes
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}},  # gap at the start
        {"a": {"dtype": "XX", "shape": [1], "data_offsets": [0, 4]}},  # unknown dtype
        {"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
         "b": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}},  # overlap
        {"a": {"dtype": "F32", "shape": [-1, -2], "data_offsets": [0, 8]}},  # negative sizes
        {"a": {"dtype": "F32", "shape": ["2"], "data_offsets": [0, 8]}},  # a string size
    ],
)  # fmt: skip
def test_inconsistent_header_is_refused(tmp_path: Path, header: dict[str, object]) -> None:
    path = tmp_path / "final.safetensors"
    _write(path, header, bytes(8))
    with pytest.raises(Failed) as caught:
        read_final_weights(path, CAP)
    assert caught.value.rule_id == "audit.bad_final_weights"
