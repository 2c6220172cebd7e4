"""Worker (sandboxed): `PrismContext`, the object `build_model(ctx)` and `train(ctx)` receive.

It has every field, property and method of the reference challenge's `PrismContext`, under the
same names, so bundles written for it run unchanged; they import it as
`prism_challenge.evaluator.interface.PrismContext`, which `install_reference_alias` provides.
Where this evaluator differs on purpose the field still exists, with an honest value: no resume
(`resume_checkpoint_dir` None, `is_resume` False, `attempt` 1), a byte budget instead of a
wall-clock one (`budget_seconds` None), the train data hidden unless the validator's config says
`data_access: readable` (`data_dir` None). docs/reference-compatibility.md says why.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import torch

from prism_eval.worker.reference_tokenizers import load_reference_tokenizer
from prism_eval.worker.stream import PrismBatch, ScoredStream

DEFAULT_BATCH_SIZE = 8  # the reference's default rows per batch


@dataclass(frozen=True)
class PrismContext:
    """What a bundle may know and do. Everything else belongs to the supervisor.

    The stream is `iter_train_batches`: it yields `PrismBatch`es whose `tokens` are int64
    (batch_size, seq_len) on `device`; train the model to predict `tokens[:, 1:]` from the
    positions before them. Each batch's loss is final before you see it. The run's length is
    `byte_budget` bytes of text; `token_budget` bounds the tokens (every token carries at least
    one byte, BOS aside).
    """

    vocab_size: int
    sequence_length: int
    max_parameters: int
    seed: int
    device: str
    byte_budget: int
    token_budget: int
    artifacts_dir: str
    data_dir: str | None
    reference_tokenizer_dir: str | None
    tokenizer: str
    bos_token_id: int
    max_batch_size: int
    max_layers: int = 96  # advisory, as in the reference: the parameter cap is what binds
    step_budget: int | None = None
    budget_seconds: float | None = None  # the run is as long as its byte budget, not a clock
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    distributed_backend: str | None = None
    resume_checkpoint_dir: str | None = None  # every run starts from the forced random init
    is_resume: bool = False
    attempt: int = 1
    _build: Callable[..., Any] | None = field(default=None, repr=False, compare=False)
    _stream: ScoredStream | None = field(default=None, repr=False, compare=False)
    # Tokenizers this context handed out, by id (kept alive, so an id is never reused): passing
    # one of these to iter_train_batches names a reference stream; any other object is custom.
    _handed_out: dict[int, tuple[str, Any]] = field(default_factory=dict, repr=False, compare=False)

    @property
    def max_seq_len(self) -> int:
        """The longest row iter_train_batches serves (the reference's alias of sequence_length)."""
        return self.sequence_length

    @property
    def max_params(self) -> int:
        """The parameter cap (the reference's alias of max_parameters)."""
        return self.max_parameters

    def build_model(self, *args: Any, **kwargs: Any) -> torch.nn.Module:
        """Build the bundle's model under the forced seed, on `device`."""
        if self._build is None:
            raise RuntimeError("build_model is not available in this stage")
        model = self._build(self, *args, **kwargs)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"build_model returned {type(model).__name__}, not a torch.nn.Module")
        return model.to(self.device)

    def reference_tokenizer(self, name: str) -> Any:
        """A working reference tokenizer: gpt2 (tiktoken), llama (SentencePiece) or byte.

        Pass it to iter_train_batches to train on that tokenization (passing nothing means
        bytes); the supervisor tokenizes the stream with the same pinned files.
        """
        tokenizer = load_reference_tokenizer(str(name).lower(), self.reference_tokenizer_dir)
        self._handed_out[id(tokenizer)] = (str(name).lower(), tokenizer)
        return tokenizer

    def stream_tokenizer(self, tokenizer: Any) -> str:
        """The stream a `tokenizer=` argument asks for: None is bytes, as in the reference."""
        if tokenizer is None:
            return "byte"
        handed = self._handed_out.get(id(tokenizer))
        if handed is not None and handed[1] is tokenizer:
            return handed[0]
        return f"custom:{type(tokenizer).__name__}"[:64]

    def iter_train_batches(
        self,
        model: torch.nn.Module,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        seq_len: int | None = None,
        tokenizer: Any = None,
    ) -> Iterator[PrismBatch]:
        """The scored stream: one pass, in the supervisor's order, until the byte budget."""
        if self._stream is None:
            raise RuntimeError("the train stream is not available in this stage")
        length = self.sequence_length if seq_len is None else seq_len
        return self._stream.open(
            model, int(batch_size), int(length), self.stream_tokenizer(tokenizer)
        )


@dataclass(frozen=True)
class TrainingRecipe:
    """The reference interface's recipe record, for bundles that import it (unused here)."""

    learning_rate: float = 3e-4
    batch_size: int = 4
    optimizer: str = "adamw"
    scheduler: str = "cosine"
    weight_decay: float = 0.01


class SubmissionContractError(ValueError):
    """The reference interface's contract error, for bundles that import or raise it."""


class PrismModelModule(Protocol):
    """The reference interface's component protocol, for bundles that annotate with it."""

    def build_model(self, ctx: PrismContext) -> Any: ...


def import_torch() -> Any:
    """The reference interface's helper: torch, imported."""
    return torch


# Every public name of the reference's interface module, so imports of any of them work.
REFERENCE_INTERFACE: dict[str, Any] = {
    "PrismContext": PrismContext,
    "PrismBatch": PrismBatch,
    "TrainingRecipe": TrainingRecipe,
    "PrismModelModule": PrismModelModule,
    "SubmissionContractError": SubmissionContractError,
    "import_torch": import_torch,
    "DEFAULT_ARCHITECTURE_ENTRYPOINT": "architecture.py",
    "DEFAULT_TRAINING_ENTRYPOINT": "training.py",
    "ARCHITECTURE_FACTORY_NAME": "build_model",
    "TRAINING_ENTRYPOINT_NAME": "train",
}


def install_reference_alias() -> None:
    """Make `prism_challenge.evaluator.interface` importable in this process, with the
    reference's names (REFERENCE_INTERFACE)."""
    names = ("prism_challenge", "prism_challenge.evaluator", "prism_challenge.evaluator.interface")
    modules = [ModuleType(name) for name in names]
    for package in modules[:-1]:
        package.__path__ = []
    interface = modules[-1]
    for name, value in REFERENCE_INTERFACE.items():
        setattr(interface, name, value)
    modules[0].evaluator = modules[1]  # type: ignore[attr-defined]
    modules[1].interface = interface  # type: ignore[attr-defined]
    for name, module in zip(names, modules, strict=True):
        sys.modules[name] = module
