"""Worker (sandboxed): a model's tensors in shared weights buffers — describe, commit, bind.

The trainer commits the scored model's parameters and buffers into its commit buffer before it
asks for a batch; a predictor refreshes its own model's tensors from the scorer's snapshot,
which it can map only read-only (the scorer sealed it against every other writer). Both sides
name tensors the same way (`state_tensors`), so the supervisor can check that the trained model
is the one `build_model(ctx)` builds.
"""

from __future__ import annotations

import mmap
import os
import warnings

import torch

from prism_eval.protocol import PlacedTensor, TensorEntry, tensor_bytes

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
    "float64": torch.float64, "int64": torch.int64, "int32": torch.int32, "int16": torch.int16,
    "int8": torch.int8, "uint8": torch.uint8, "bool": torch.bool,
}  # fmt: skip
DTYPE_NAMES = {dtype: name for name, dtype in DTYPES.items()}
# Wrappers an honest loop hands over: DDP / DataParallel (.module) and torch.compile (._orig_mod).
_WRAPPERS = {"DistributedDataParallel": "module", "DataParallel": "module",
             "OptimizedModule": "_orig_mod"}  # fmt: skip


class LayoutError(RuntimeError):
    """The model's state cannot be committed (lazy, unsupported dtype, changed while training)."""


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The module inside DDP, DataParallel and torch.compile wrappers."""
    while (attribute := _WRAPPERS.get(type(model).__name__)) is not None:
        inner = getattr(model, attribute, None)
        if not isinstance(inner, torch.nn.Module):
            break
        model = inner
    return model


def state_tensors(model: torch.nn.Module) -> list[tuple[str, str, torch.Tensor]]:
    """(name, kind, tensor) for every parameter and buffer, each shared tensor once."""
    found: list[tuple[str, str, torch.Tensor]] = []
    for name, parameter in model.named_parameters():
        found.append((name, "parameter", parameter))
    for name, buffer in model.named_buffers():
        found.append((name, "buffer", buffer))
    return found


def describe(model: torch.nn.Module) -> list[TensorEntry]:
    """The model's tensors as layout entries; LayoutError for what cannot be committed."""
    entries = []
    for name, kind, tensor in state_tensors(model):
        if isinstance(
            tensor,
            torch.nn.parameter.UninitializedParameter | torch.nn.parameter.UninitializedBuffer,
        ):
            raise LayoutError(
                f"{name} is a lazy tensor that is not materialized yet: run one forward in "
                "build_model(ctx) so every tensor has its shape before training starts"
            )
        dtype = DTYPE_NAMES.get(tensor.dtype)
        if dtype is None:
            raise LayoutError(f"{name} has dtype {tensor.dtype}, which cannot be committed")
        entries.append(
            TensorEntry.model_validate(
                {"name": name, "kind": kind, "dtype": dtype, "shape": list(tensor.shape)}
            )
        )
    return entries


def map_buffer(fd: int, writable: bool = True) -> torch.Tensor:
    """The whole shared buffer behind `fd` as a flat uint8 tensor sharing its memory.

    Read-only (`writable=False`) the pages are mapped without write permission: a write
    through the tensor faults (SIGSEGV) instead of changing them."""
    size = os.fstat(fd).st_size
    protection = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
    mapped = mmap.mmap(fd, size, mmap.MAP_SHARED, protection)
    os.close(fd)
    with warnings.catch_warnings():  # torch warns that a read-only buffer is not writable
        warnings.simplefilter("ignore", UserWarning)
        return torch.frombuffer(mapped, dtype=torch.uint8)


def views(flat: torch.Tensor, placed: list[PlacedTensor]) -> list[torch.Tensor]:
    """Each placed tensor as a typed view into the buffer."""
    out = []
    for entry in placed:
        view = flat[entry.offset : entry.offset + tensor_bytes(entry)]
        out.append(view.view(DTYPES[entry.dtype]).view(entry.shape))
    return out


class Committer:
    """Copies the scored model's state into the commit buffer, checking it kept its layout."""

    def __init__(self, model: torch.nn.Module, placed: list[PlacedTensor], flat: torch.Tensor):
        self._model = model
        self._placed = placed
        self._views = views(flat, placed)

    def commit(self) -> None:
        """Copy every tensor into its place (device tensors come back to host memory)."""
        current = state_tensors(self._model)
        if [(n, k) for n, k, _ in current] != [(p.name, p.kind) for p in self._placed]:
            raise LayoutError(
                "the scored model's parameters or buffers changed during training: keep the "
                "model handed to iter_train_batches as build_model(ctx) made it"
            )
        for (name, _, tensor), entry, view in zip(current, self._placed, self._views, strict=True):
            if list(tensor.shape) != entry.shape or DTYPE_NAMES.get(tensor.dtype) != entry.dtype:
                raise LayoutError(
                    f"{name} changed from {entry.dtype} {tuple(entry.shape)} to "
                    f"{tensor.dtype} {tuple(tensor.shape)} during training"
                )
            view.copy_(tensor.detach())


class BoundWeights:
    """A predictor's model whose tensors are refreshed from the scorer's snapshot.

    The snapshot is mapped read-only. The model's tensors become views into one buffer of its
    own (on its device), laid out like the snapshot, and `load` copies the snapshot into it in
    one pass before each forward: one copy, not one per tensor. A forward that writes to its
    weights in place changes only its own copy, which the next `load` overwrites, and the
    snapshot the auditor reads is the scorer's alone.
    """

    def __init__(self, model: torch.nn.Module, placed: list[PlacedTensor], flat: torch.Tensor):
        owned = {name: (kind, tensor) for name, kind, tensor in state_tensors(model)}
        devices = {tensor.device for _, tensor in owned.values()}
        if len(devices) != 1:
            raise LayoutError(
                f"the model's parameters and buffers lie on {len(devices)} devices "
                f"({', '.join(sorted(str(device) for device in devices))}): build_model(ctx) "
                "must put them all on ctx.device"
            )
        size = max((entry.offset + tensor_bytes(entry) for entry in placed), default=0)
        self._snapshot = flat[:size]
        self._own = torch.empty(size, dtype=torch.uint8, device=devices.pop())
        for entry, view in zip(placed, views(self._own, placed), strict=True):
            _rebind(model, entry.name, owned[entry.name][0], view)

    def load(self) -> None:
        """Copy the snapshot into the model's tensors."""
        with torch.no_grad():
            self._own.copy_(self._snapshot)


def _owner(model: torch.nn.Module, name: str) -> tuple[torch.nn.Module, str]:
    path, _, leaf = name.rpartition(".")
    return (model.get_submodule(path) if path else model), leaf


def _rebind(model: torch.nn.Module, name: str, kind: str, tensor: torch.Tensor) -> None:
    """Point one parameter (every alias of it) or buffer at `tensor`."""
    owner, leaf = _owner(model, name)
    if kind == "parameter":
        parameter = owner._parameters[leaf]
        assert parameter is not None
        parameter.data = tensor
    else:
        owner._buffers[leaf] = tensor
