"""Tests for the supervisor's pure pieces of the scored run: the predictor's inputs, the prefix
audit's rate, the model check at stream open, and the shared buffers' seals (the snapshot's
with the scorer's and the predictor's own mapping code: the kernel enforces them)."""

from __future__ import annotations

import fcntl
import mmap
import os

import numpy as np
import pytest
import torch

from prism_eval.errors import EvaluatorError, Rejected
from prism_eval.protocol import TensorEntry
from prism_eval.scorer.service import map_bytes
from prism_eval.supervisor.config import load_config
from prism_eval.supervisor.formula import catch_probabilities
from prism_eval.supervisor.stages._buffers import SharedBuffers
from prism_eval.supervisor.stages._capture import audit_rate, withhold_last
from prism_eval.supervisor.stages.train import check_model
from prism_eval.worker.weights import map_buffer


def entry(
    name: str, shape: list[int], kind: str = "parameter", dtype: str = "float32"
) -> TensorEntry:
    return TensorEntry.model_validate({"name": name, "kind": kind, "dtype": dtype, "shape": shape})


def test_the_last_column_is_withheld_and_nothing_else_changes() -> None:
    rows = np.arange(12, dtype=np.int32).reshape(3, 4)
    inputs = withhold_last(rows, 256)
    assert inputs[:, -1].tolist() == [256, 256, 256]
    assert np.array_equal(inputs[:, :-1], rows[:, :-1])
    assert rows[0, -1] == 3  # the batch itself is untouched


def test_the_audit_rate_rises_for_runs_with_few_steps() -> None:
    config = load_config("cpu", None, {"byte_budget": 100_000, "prefix_audit_rate": 0.1,
                                       "prefix_audit_min_steps": 50})  # fmt: skip
    assert audit_rate(config, 100) == 0.1  # 1,000 steps: 100 audited at the base rate
    assert audit_rate(config, 1_000) == 0.5  # 100 steps: 50 of them
    assert audit_rate(config, 100_000) == 1.0  # one step
    assert audit_rate(load_config("cpu", None, {"prefix_audit_rate": 0.2}), 10) == 0.2


def test_catch_probabilities_follow_the_formulas_in_the_docs() -> None:
    spread, steps = catch_probabilities(positions=459, rate=0.5, steps=1000)
    assert spread == pytest.approx(1 - 0.99**459) and spread > 0.99
    assert steps == pytest.approx(1 - 0.5**10)


def test_the_trained_model_must_be_the_built_one() -> None:
    built = [entry("a.weight", [2, 3]), entry("a.bias", [3])]
    check_model([entry("a.weight", [2, 3], dtype="bfloat16"), entry("a.bias", [3])], built, 100)
    with pytest.raises(Rejected) as caught:
        check_model([entry("a.weight", [2, 4]), entry("b.bias", [3])], built, 100)
    assert caught.value.rule_id == "train.model_mismatch"
    assert "not built: b.bias; missing: a.bias; other shape: a.weight" in caught.value.message


def test_the_cap_counts_parameters_and_floating_buffers_of_the_scored_model() -> None:
    tensors = [entry("w", [10]), entry("stats", [5], "buffer"), entry("n", [], "buffer", "int64")]
    check_model(tensors, tensors, 15)
    with pytest.raises(Rejected) as caught:
        check_model(tensors, tensors, 14)
    assert caught.value.rule_id == "train.too_many_params"


def test_shared_buffers_are_sealed_before_anyone_else_sees_them() -> None:
    buffers = SharedBuffers({"logits": 10_000, "empty": 0})
    try:
        logits, empty = buffers.fds(["logits", "empty"])
        assert os.fstat(logits).st_size == 10_000
        assert os.fstat(empty).st_size > 0  # at least a page: mappable
        seals = fcntl.fcntl(logits, fcntl.F_GET_SEALS)
        assert seals == fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
        with pytest.raises(PermissionError):
            os.ftruncate(logits, 0)  # a child shrinking it under the scorer
        with pytest.raises(PermissionError):
            fcntl.fcntl(logits, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)  # nor adding seals
        os.pwrite(logits, b"still writable", 0)
    finally:
        buffers.close()


def test_the_snapshot_is_writable_only_through_its_writers_mapping() -> None:
    buffers = SharedBuffers({"snapshot": 10_000}, writer_sealed=["snapshot"])
    try:
        (fd,) = buffers.fds(["snapshot"])
        with pytest.raises(EvaluatorError) as refused:
            buffers.require_writer_sealed("snapshot")  # not yet: no reader may have it
        assert refused.value.rule_id == "internal.buffer_unsealed"
        writer = map_bytes(os.dup(fd), seal_writes=True)  # what the scorer does at set-up
        buffers.require_writer_sealed("snapshot")
        writer[:5].copy_(torch.tensor(list(b"hello"), dtype=torch.uint8))
        reader = map_buffer(os.dup(fd), writable=False)  # what the predictor does
        assert bytes(reader[:5].tolist()) == b"hello"
        with pytest.raises(PermissionError):
            mmap.mmap(fd, 10_000, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        with pytest.raises(PermissionError):
            os.pwrite(fd, b"forged", 0)
        with pytest.raises(PermissionError):
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
        writer[:5].copy_(torch.tensor(list(b"world"), dtype=torch.uint8))  # the writer still can
        assert bytes(reader[:5].tolist()) == b"world"
    finally:
        buffers.close()
