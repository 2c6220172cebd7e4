"""Tests for prism_eval.worker.weights: describing, committing and binding a model's tensors.

Imported directly: these are the worker's mechanics, tested without a sandbox.
"""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn

from prism_eval.protocol import place_tensors
from prism_eval.worker.weights import (
    BoundWeights,
    Committer,
    LayoutError,
    describe,
    map_buffer,
    unwrap,
)


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(5, 3)
        self.head = nn.Linear(3, 5, bias=False)
        self.head.weight = self.embed.weight  # tied: one tensor, listed once
        self.norm = nn.BatchNorm1d(3)  # buffers: running stats and an int64 counter

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.embed(tokens))


def shared_buffer(size: int) -> torch.Tensor:
    fd = os.memfd_create("test-weights")
    os.ftruncate(fd, max(size, 4096))
    return map_buffer(fd)


def test_describe_lists_parameters_then_buffers_each_shared_tensor_once() -> None:
    entries = describe(Tied())
    assert [(e.name, e.kind, e.dtype, e.shape) for e in entries] == [
        ("embed.weight", "parameter", "float32", [5, 3]),
        ("norm.weight", "parameter", "float32", [3]),
        ("norm.bias", "parameter", "float32", [3]),
        ("norm.running_mean", "buffer", "float32", [3]),
        ("norm.running_var", "buffer", "float32", [3]),
        ("norm.num_batches_tracked", "buffer", "int64", []),
    ]


def test_a_lazy_module_cannot_be_committed_before_it_has_a_shape() -> None:
    with pytest.raises(LayoutError, match="run one forward in build_model"):
        describe(nn.LazyLinear(4))


def test_commit_then_bind_hands_the_trained_weights_to_another_model() -> None:
    torch.manual_seed(0)
    trained, fresh = Tied(), Tied()
    placed, size = place_tensors(describe(trained))
    commit, weights = shared_buffer(size), shared_buffer(size)
    Committer(trained, placed, commit).commit()
    tokens = torch.tensor([[0, 1, 2, 3]])
    assert not torch.equal(fresh(tokens), trained(tokens))
    bound = BoundWeights(fresh, placed, weights)
    weights.copy_(commit)  # what the scorer does with its snapshot
    bound.load()  # what the predictor does before each forward
    assert torch.equal(fresh(tokens), trained(tokens))
    assert fresh.head.weight is fresh.embed.weight  # still tied
    # Every tensor now lies in one buffer of the model's own, so a load is one copy, and that
    # buffer is not the snapshot's memory.
    storages = {tensor.untyped_storage().data_ptr() for tensor in fresh.state_dict().values()}
    assert len(storages) == 1 and storages != {weights.untyped_storage().data_ptr()}
    # A forward that writes its weights in place changes its own copy, never the snapshot,
    # and the next load undoes it.
    with torch.no_grad():
        fresh.head.weight.mul_(2)
    assert torch.equal(weights, commit)
    bound.load()
    assert torch.equal(fresh(tokens), trained(tokens))


def test_a_model_whose_tensors_lie_on_two_devices_cannot_be_bound() -> None:
    model = Tied()
    placed, size = place_tensors(describe(model))
    model.norm.running_mean = model.norm.running_mean.to("meta")
    with pytest.raises(LayoutError, match=r"2 devices \(cpu, meta\).*all on ctx.device"):
        BoundWeights(model, placed, shared_buffer(size))


def test_a_commit_refuses_a_model_whose_tensors_changed() -> None:
    model = Tied()
    placed, size = place_tensors(describe(model))
    committer = Committer(model, placed, shared_buffer(size))
    model.half()
    with pytest.raises(LayoutError, match="changed from float32"):
        committer.commit()
    model.float().extra = nn.Linear(1, 1)
    with pytest.raises(LayoutError, match="parameters or buffers changed"):
        committer.commit()


def test_unwrap_finds_the_module_inside_known_wrappers() -> None:
    inner = Tied()

    class DistributedDataParallel(nn.Module):
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self.module = module

    class OptimizedModule(nn.Module):
        def __init__(self, module: nn.Module) -> None:
            super().__init__()
            self._orig_mod = module

    assert unwrap(OptimizedModule(DistributedDataParallel(inner))) is inner
    assert unwrap(inner) is inner
