"""Worker (sandboxed): `PrismContext`, the object `build_model(ctx)` and `train(ctx)` receive.

Bundles written for the reference challenge import it as
`prism_challenge.evaluator.interface.PrismContext`; `install_reference_alias` provides that
module name so they run unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import torch

from prism_eval.worker.stream import PrismBatch, ScoredStream, tokenizer_name

REFERENCE_TOKENIZERS = ("byte", "gpt2", "llama")


@dataclass(frozen=True)
class ReferenceTokenizer:
    """A handle naming one of the supervisor's reference tokenizers (tokenization is its job)."""

    prism_reference_name: str
    vocab_size: int
    bos_token_id: int

    @property
    def name(self) -> str:
        """The tokenizer's name: byte, gpt2 or llama."""
        return self.prism_reference_name


@dataclass(frozen=True)
class PrismContext:
    """What a bundle may know and do. Everything else belongs to the supervisor.

    The stream is `iter_train_batches`: it yields `PrismBatch`es whose `tokens` are int64
    (batch_size, seq_len) on `device`; train the model to predict `tokens[:, 1:]` from the
    positions before them. Each batch's loss is recorded before you see it. The run's length
    is `byte_budget` bytes of text; `token_budget` is an upper bound on predicted tokens
    (every token carries at least one byte, BOS aside).
    """

    vocab_size: int
    max_seq_len: int
    max_params: int
    seed: int
    device: str
    byte_budget: int
    token_budget: int
    artifacts_dir: str
    data_dir: str | None
    tokenizer: str
    bos_token_id: int
    max_batch_size: int
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    step_budget: int | None = None
    _build: Callable[..., Any] | None = field(default=None, repr=False, compare=False)
    _stream: ScoredStream | None = field(default=None, repr=False, compare=False)

    @property
    def sequence_length(self) -> int:
        """Alias of max_seq_len, the reference challenge's name."""
        return self.max_seq_len

    def build_model(self) -> torch.nn.Module:
        """Build the bundle's model under the forced seed, on `device`."""
        if self._build is None:
            raise RuntimeError("build_model is not available in this stage")
        model = self._build(self)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"build_model returned {type(model).__name__}, not a torch.nn.Module")
        return model.to(self.device)

    def reference_tokenizer(self, name: str) -> ReferenceTokenizer:
        """The handle of the declared reference tokenizer (declare it in prism.yaml)."""
        if name not in REFERENCE_TOKENIZERS:
            raise ValueError(f"unknown tokenizer {name!r}; reference tokenizers: byte, gpt2, llama")
        if name != self.tokenizer:
            raise ValueError(
                f"this bundle declares tokenizer {self.tokenizer!r}; to use {name!r} put "
                f"`tokenizer: {name}` in prism.yaml"
            )
        return ReferenceTokenizer(name, self.vocab_size, self.bos_token_id)

    def iter_train_batches(
        self,
        model: torch.nn.Module,
        batch_size: int = 8,
        seq_len: int | None = None,
        tokenizer: Any = None,
    ) -> Iterator[PrismBatch]:
        """The scored stream: one pass, in the supervisor's order, until the byte budget."""
        if self._stream is None:
            raise RuntimeError("the train stream is not available in this stage")
        length = self.max_seq_len if seq_len is None else seq_len
        return self._stream.open(
            model, int(batch_size), int(length), tokenizer_name(tokenizer, self.tokenizer)
        )


def install_reference_alias() -> None:
    """Make `prism_challenge.evaluator.interface.PrismContext` importable in this process."""
    names = ("prism_challenge", "prism_challenge.evaluator", "prism_challenge.evaluator.interface")
    modules = [ModuleType(name) for name in names]
    for package in modules[:-1]:
        package.__path__ = []
    modules[-1].PrismContext = PrismContext  # type: ignore[attr-defined]
    modules[0].evaluator = modules[1]  # type: ignore[attr-defined]
    modules[1].interface = modules[2]  # type: ignore[attr-defined]
    for name, module in zip(names, modules, strict=True):
        sys.modules[name] = module
