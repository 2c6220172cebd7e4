"""Worker (sandboxed): the tokenizer objects `ctx.reference_tokenizer(name)` returns.

As in the reference challenge, gpt2 is a real tiktoken `Encoding` and llama a real
`SentencePieceProcessor`, built from the operator's staged files (read-only in the sandbox, pinned
by sha256); `byte` is a small object with the same methods. `train(ctx)` may use them as it likes.
Handing one to `iter_train_batches` only names the stream: the supervisor tokenizes it with its own
copy, so nothing done to this object can change what is scored.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from prism_eval.tokenizer_files import (
    GPT2_FILE,
    LLAMA_FILE,
    LLAMA_SHA256,
    TOKENIZER_NAMES,
    gpt2_encoding_arguments,
    read_tiktoken_ranks,
    sha256_file,
)


class ReferenceByteTokenizer:
    """UTF-8 bytes as tokens 0-255 and 256 as BOS / end of text: the stream's `byte` tokenizer."""

    name = "byte"
    n_vocab = vocab_size = 257
    eot_token = bos_token_id = 256

    def encode(self, text: str, *args: Any, **kwargs: Any) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: Iterable[int]) -> str:
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")


class ReferenceTokenizerError(RuntimeError):
    """A reference tokenizer cannot be loaded here (not staged, or not the pinned file)."""


def load_reference_tokenizer(name: str, directory: str | None) -> Any:
    """A fresh tokenizer object for `name`, from the staged files under `directory`."""
    if name == "byte":
        return ReferenceByteTokenizer()
    if name not in TOKENIZER_NAMES:
        raise ValueError(f"unknown reference tokenizer {name!r}; expected one of {TOKENIZER_NAMES}")
    if directory is None:
        raise ReferenceTokenizerError("this validator has no reference tokenizer directory")
    path = Path(directory) / (GPT2_FILE if name == "gpt2" else LLAMA_FILE)
    if not path.is_file():
        raise ReferenceTokenizerError(f"the {name} tokenizer is not staged on this validator")
    if name == "gpt2":
        import tiktoken

        return tiktoken.Encoding(**gpt2_encoding_arguments(read_tiktoken_ranks(path)))
    if sha256_file(path) != LLAMA_SHA256:
        raise ReferenceTokenizerError(f"{path} is not the reference llama tokenizer")
    import sentencepiece

    processor = sentencepiece.SentencePieceProcessor()
    processor.Load(str(path))
    return processor
