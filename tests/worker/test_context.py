"""PrismContext has the reference's fields and methods; reference_tokenizer gives real tokenizers.

The names below are the reference challenge's PrismContext (its dataclass fields, its two
properties and its three methods), written out here so a rename on either side shows up.
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import pytest
import tiktoken
import torch

from prism_eval.supervisor.data.tokenizers import load_tokenizer, tokenizer_dir
from prism_eval.worker.context import PrismContext, install_reference_alias
from prism_eval.worker.reference_tokenizers import ReferenceByteTokenizer, ReferenceTokenizerError

REFERENCE_FIELDS = {
    "vocab_size", "sequence_length", "max_layers", "max_parameters", "seed", "data_dir",
    "artifacts_dir", "reference_tokenizer_dir", "token_budget", "step_budget", "budget_seconds",
    "rank", "local_rank", "world_size", "distributed_backend", "device", "resume_checkpoint_dir",
    "is_resume", "attempt",
}  # fmt: skip
REFERENCE_PROPERTIES = {"max_seq_len", "max_params"}
REFERENCE_METHODS = {"build_model", "iter_train_batches", "reference_tokenizer"}


def context(**changes: Any) -> PrismContext:
    values: dict[str, Any] = {
        "vocab_size": 50257,
        "sequence_length": 128,
        "max_parameters": 150_000_000,
        "seed": 1337,
        "device": "cpu",
        "byte_budget": 4096,
        "token_budget": 4096,
        "artifacts_dir": "/tmp/artifacts",
        "data_dir": None,
        "reference_tokenizer_dir": str(tokenizer_dir()),
        "tokenizer": "gpt2",
        "bos_token_id": 50256,
        "max_batch_size": 64,
    }
    return PrismContext(**{**values, **changes})


def test_every_reference_field_property_and_method_is_there() -> None:
    fields = {f.name for f in dataclasses.fields(PrismContext) if not f.name.startswith("_")}
    assert fields >= REFERENCE_FIELDS
    ctx = context()
    for name in REFERENCE_PROPERTIES | REFERENCE_METHODS:
        assert hasattr(ctx, name), name
    assert (ctx.max_seq_len, ctx.max_params) == (128, 150_000_000)


def test_where_this_evaluator_differs_the_values_say_so() -> None:
    ctx = context()
    assert (ctx.resume_checkpoint_dir, ctx.is_resume, ctx.attempt) == (None, False, 1)
    assert ctx.budget_seconds is None  # a byte budget, not a clock
    assert ctx.max_layers == 96  # the reference's advisory value
    assert ctx.distributed_backend is None and ctx.world_size == 1


def test_build_model_passes_extra_arguments_through() -> None:
    seen = {}

    def build(ctx: PrismContext, width: int = 4, *, bias: bool = True) -> torch.nn.Module:
        seen.update(width=width, bias=bias)
        return torch.nn.Linear(width, 2, bias=bias)

    model = context(_build=build).build_model(8, bias=False)
    assert seen == {"width": 8, "bias": False} and model.bias is None


def test_iter_train_batches_takes_its_options_by_keyword_only() -> None:
    with pytest.raises(TypeError):
        context().iter_train_batches(torch.nn.Linear(1, 1), 8)  # type: ignore[misc]


def test_gpt2_is_a_real_tiktoken_encoding_that_agrees_with_the_supervisor() -> None:
    encoding = context().reference_tokenizer("gpt2")
    assert isinstance(encoding, tiktoken.Encoding)
    assert (encoding.n_vocab, encoding.eot_token) == (50257, 50256)
    text = "Prequential coding, ünïcödé and  spaces."
    supervisor_ids, _ = load_tokenizer("gpt2").encode_document(text)
    assert encoding.encode_ordinary(text) == supervisor_ids.tolist()
    assert encoding.decode(encoding.encode(text)) == text


def test_byte_is_the_stream_the_supervisor_builds() -> None:
    byte = context().reference_tokenizer("byte")
    assert isinstance(byte, ReferenceByteTokenizer)
    text = "héllo"
    supervisor_ids, _ = load_tokenizer("byte").encode_document(text)
    assert byte.encode(text) == supervisor_ids.tolist()
    assert byte.decode([*byte.encode(text), byte.eot_token]) == text
    assert byte.n_vocab == load_tokenizer("byte").vocab_size


def test_unknown_or_unstaged_tokenizers_raise_clearly(tmp_path: Any) -> None:
    with pytest.raises(ValueError, match="unknown reference tokenizer"):
        context().reference_tokenizer("bert")
    with pytest.raises(ReferenceTokenizerError, match="not staged"):
        context(reference_tokenizer_dir=str(tmp_path)).reference_tokenizer("llama")
    (tmp_path / "llama.model").write_bytes(b"not the pinned file")
    with pytest.raises(ReferenceTokenizerError, match="not the reference llama"):
        context(reference_tokenizer_dir=str(tmp_path)).reference_tokenizer("llama")


def test_the_stream_a_tokenizer_argument_names() -> None:
    ctx = context()
    gpt2, byte = ctx.reference_tokenizer("gpt2"), ctx.reference_tokenizer("byte")
    assert ctx.stream_tokenizer(None) == "byte"  # as in the reference
    assert ctx.stream_tokenizer(gpt2) == "gpt2"
    assert ctx.stream_tokenizer(byte) == "byte"

    class Impostor:
        name = "gpt2"
        prism_reference_name = "gpt2"

        def encode(self, text: str) -> list[int]:
            return []

    # Only objects this context handed out name a reference stream; anything else is custom.
    assert ctx.stream_tokenizer(Impostor()) == "custom:Impostor"
    assert ctx.stream_tokenizer("gpt2") == "custom:str"
    other = context().reference_tokenizer("gpt2")
    assert ctx.stream_tokenizer(other) == "custom:Encoding"


def test_the_reference_interface_module_exports_its_names() -> None:
    install_reference_alias()
    interface = sys.modules["prism_challenge.evaluator.interface"]
    assert interface.PrismContext is PrismContext
    # Every public name of the reference's interface module.
    reference_names = {
        "PrismContext", "PrismBatch", "TrainingRecipe", "PrismModelModule",
        "SubmissionContractError", "import_torch", "DEFAULT_ARCHITECTURE_ENTRYPOINT",
        "DEFAULT_TRAINING_ENTRYPOINT", "ARCHITECTURE_FACTORY_NAME", "TRAINING_ENTRYPOINT_NAME",
    }  # fmt: skip
    assert reference_names <= set(vars(interface))
    assert issubclass(interface.SubmissionContractError, ValueError)
    assert interface.import_torch() is torch
    assert (interface.DEFAULT_ARCHITECTURE_ENTRYPOINT, interface.TRAINING_ENTRYPOINT_NAME) == (
        "architecture.py",
        "train",
    )
