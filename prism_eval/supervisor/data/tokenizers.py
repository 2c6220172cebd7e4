"""Supervisor: the reference tokenizers (byte, gpt2, llama), their lossless check and byte counts.

The supervisor owns tokenization (docs/design.md §5). A tokenizer turns one document into token ids
and, for each token, the exact number of UTF-8 bytes of the document it stands for, so the score's
denominator is the document's raw byte length whatever the tokenizer. A tokenizer must be lossless
on every document: `decode(ids) == text`, or the run stops with `data.tokenizer_lossy`.
Special-token strings inside a document (`<|endoftext|>`) are ordinary text, never special ids.

Everything is offline: the gpt2 ranks and the llama model are files staged by the operator under
`tokenizer_dir()` (scripts/stage_gpt2.py, scripts/stage_llama.py), each pinned by its sha256;
nothing here can reach a network or a download cache.
"""

from __future__ import annotations

import functools
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import tiktoken

from prism_eval.errors import EvaluatorError
from prism_eval.tokenizer_files import (
    GPT2_BOS_ID,
    GPT2_FILE,
    GPT2_SHA256,
    LLAMA_FILE,
    LLAMA_SHA256,
    TOKENIZER_DIR_ENV,
    TOKENIZER_NAMES,
    gpt2_encoding_arguments,
    read_tiktoken_ranks,
    sha256_file,
)

LLAMA_STAGING_HINT = (
    "download tokenizer.model from hf-internal-testing/llama-tokenizer at revision "
    "d02ad6cb9dd2c2296a6332199fa2fdca5938fef0, then `python scripts/stage_llama.py --from "
    f"tokenizer.model --prefix .venv` (or set {TOKENIZER_DIR_ENV}); it checks the sha256"
)
SPIECE_SPACE = "\u2581"  # '▁', SentencePiece's visible space

IntArray = npt.NDArray[np.int32]


def tokenizer_dir() -> Path:
    """Where staged tokenizer files live: `$PRISM_EVAL_TOKENIZER_DIR`, else under `sys.prefix`."""
    override = os.environ.get(TOKENIZER_DIR_ENV)
    if override:
        return Path(override)
    return Path(sys.prefix) / "share" / "prism-eval" / "tokenizers"


def _first_difference(expected: bytes, actual: bytes) -> str:
    """Describe where two byte strings first differ, for a lossy-tokenizer message."""
    offset = next(
        (i for i, (a, b) in enumerate(zip(expected, actual, strict=False)) if a != b),
        min(len(expected), len(actual)),
    )
    want = expected[offset : offset + 16].decode("utf-8", errors="replace")
    got = actual[offset : offset + 16].decode("utf-8", errors="replace")
    return f"at byte {offset}: the text has {want!r}, decoding the ids gives {got!r}"


class Tokenizer(ABC):
    """A reference tokenizer: ids and per-token UTF-8 byte counts for one document."""

    name: str
    vocab_size: int
    bos_id: int
    fingerprint: str
    lossy_hint: str = "documents must round-trip exactly through the tokenizer"

    def encode_document(self, text: str) -> tuple[IntArray, IntArray]:
        """Encode a document without BOS; return `(ids, byte_counts)`, both int32, same length.

        `byte_counts[i]` is the number of bytes of `text.encode()` that token i stands for, so the
        counts sum to the document's UTF-8 length. Raises `data.tokenizer_lossy` when decoding the
        ids does not give back `text` exactly.
        """
        try:
            data = text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise EvaluatorError(
                "data.bad_text",
                f"document text is not valid Unicode ({exc.reason} at character {exc.start})",
                hint="documents must be valid UTF-8; re-prepare the data directory",
            ) from exc
        ids, counts = self._encode(text, data)
        decoded = self.decode_bytes(ids)
        if decoded != data:
            raise EvaluatorError(
                "data.tokenizer_lossy",
                f"tokenizer {self.name!r} is lossy on this document: "
                + _first_difference(data, decoded),
                hint=self.lossy_hint,
            )
        if int(counts.sum(dtype=np.int64)) != len(data) or len(counts) != len(ids):
            raise EvaluatorError(
                "internal.byte_counts",
                f"tokenizer {self.name!r}: per-token byte counts sum to {int(counts.sum())} "
                f"for a document of {len(data)} bytes",
            )
        return ids, counts

    def decode(self, ids: Sequence[int] | IntArray) -> str:
        """Decode ids to text (BOS decodes to nothing; invalid UTF-8 becomes U+FFFD)."""
        return self.decode_bytes(ids).decode("utf-8", errors="replace")

    def decode_bytes(self, ids: Sequence[int] | IntArray) -> bytes:
        """Decode ids to the exact bytes they stand for; BOS stands for no bytes."""
        array = np.asarray(ids, dtype=np.int64).reshape(-1)
        if array.size and (int(array.min()) < 0 or int(array.max()) >= self.vocab_size):
            bad = int(array[(array < 0) | (array >= self.vocab_size)][0])
            raise EvaluatorError(
                "data.bad_token_id",
                f"token id {bad} is outside tokenizer {self.name!r}'s vocabulary "
                f"[0, {self.vocab_size})",
            )
        return self._decode_bytes(array[array != self.bos_id])

    @abstractmethod
    def _encode(self, text: str, data: bytes) -> tuple[IntArray, IntArray]:
        """Return ids and per-token byte counts; `data` is `text` encoded as UTF-8."""

    @abstractmethod
    def _decode_bytes(self, ids: npt.NDArray[np.int64]) -> bytes:
        """Decode in-range, BOS-free ids to bytes."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} vocab={self.vocab_size} bos={self.bos_id}>"


class ByteTokenizer(Tokenizer):
    """Each UTF-8 byte is a token (ids 0-255); BOS is 256. Lossless by construction."""

    def __init__(self) -> None:
        self.name = "byte"
        self.vocab_size = 257
        self.bos_id = 256
        self.fingerprint = "builtin:byte"

    def _encode(self, text: str, data: bytes) -> tuple[IntArray, IntArray]:
        ids = np.frombuffer(data, dtype=np.uint8).astype(np.int32)
        return ids, np.ones(len(ids), dtype=np.int32)

    def _decode_bytes(self, ids: npt.NDArray[np.int64]) -> bytes:
        return ids.astype(np.uint8).tobytes()


class Gpt2Tokenizer(Tokenizer):
    """GPT-2's byte-level BPE through tiktoken, built from the staged ranks file only."""

    lossy_hint = "gpt2 is byte-level BPE and should never be lossy: report this as a bug"

    def __init__(self, path: Path) -> None:
        ranks = read_tiktoken_ranks(path, GPT2_SHA256)
        self.name = "gpt2"
        self.vocab_size = GPT2_BOS_ID + 1
        self.bos_id = GPT2_BOS_ID
        self.fingerprint = GPT2_SHA256
        self._encoding = tiktoken.Encoding(**gpt2_encoding_arguments(ranks))
        # bytes per id; BOS (the only special token) carries 0 bytes (docs/design.md §5).
        table = np.zeros(self.vocab_size, dtype=np.int32)
        for token, rank in ranks.items():
            table[rank] = len(token)
        self._byte_table = table

    def _encode(self, text: str, data: bytes) -> tuple[IntArray, IntArray]:
        ids = np.asarray(self._encoding.encode_ordinary(text), dtype=np.int32)
        return ids, self._byte_table[ids]

    def _decode_bytes(self, ids: npt.NDArray[np.int64]) -> bytes:
        result: bytes = self._encoding.decode_bytes(ids.tolist())
        return result


class LlamaTokenizer(Tokenizer):
    """A SentencePiece model staged by the operator (the Llama `tokenizer.model`)."""

    lossy_hint = (
        "the SentencePiece model normalizes text (NFKC, whitespace collapsing) or lacks "
        "byte fallback, so some documents cannot round-trip; use a model with identity "
        "normalization and byte_fallback, or declare the `byte` or `gpt2` tokenizer"
    )

    def __init__(self, path: Path) -> None:
        import sentencepiece as spm  # imported here: only llama runs need it

        processor = spm.SentencePieceProcessor()
        try:
            processor.Load(str(path))
        except (OSError, RuntimeError) as exc:
            raise EvaluatorError(
                "inputs.tokenizer_corrupt",
                f"{path} is not a SentencePiece model: {exc}",
                hint="stage the Llama SentencePiece `tokenizer.model` file as llama.model",
            ) from exc
        self.name = "llama"
        self.vocab_size = int(processor.GetPieceSize())
        self.bos_id = int(processor.bos_id())
        if not 0 <= self.bos_id < self.vocab_size:
            raise EvaluatorError(
                "inputs.tokenizer_corrupt",
                f"SentencePiece model {path} has no BOS piece",
                hint="use a model trained with a BOS id (the Llama tokenizer has <s> = 1)",
            )
        self.fingerprint = sha256_file(path)
        self._processor = processor
        # bytes per id: byte pieces `<0xNN>` are one byte, control/unknown pieces none, and a
        # normal piece its UTF-8 length with '▁' standing for one space.
        table = np.zeros(self.vocab_size, dtype=np.int32)
        for i in range(self.vocab_size):
            if processor.IsByte(i):
                table[i] = 1
            elif not (processor.IsControl(i) or processor.IsUnknown(i)):
                table[i] = len(processor.IdToPiece(i).replace(SPIECE_SPACE, " ").encode("utf-8"))
        self._byte_table = table

    def _encode(self, text: str, data: bytes) -> tuple[IntArray, IntArray]:
        ids = np.asarray(self._processor.EncodeAsIds(text), dtype=np.int32)
        counts = self._byte_table[ids]
        # With add_dummy_prefix the model encodes " " + text and the decoder drops that space
        # again: it sits in the first piece, which therefore stands for one byte less.
        extra = int(counts.sum(dtype=np.int64)) - len(data)
        if (
            extra == 1
            and len(ids)
            and self._processor.IdToPiece(int(ids[0])).startswith(SPIECE_SPACE)
        ):
            counts[0] -= 1
        return ids, counts

    def _decode_bytes(self, ids: npt.NDArray[np.int64]) -> bytes:
        text: str = self._processor.DecodeIds(ids.tolist())
        return text.encode("utf-8")


def _missing(name: str, path: Path) -> EvaluatorError:
    if name == "gpt2":
        hint = "run `make install` or `python scripts/stage_gpt2.py --prefix .venv`"
        what = "the gpt2 BPE ranks file"
    else:
        hint = LLAMA_STAGING_HINT
        what = "the reference llama SentencePiece model"
    return EvaluatorError("inputs.tokenizer_missing", f"{what} is not staged at {path}", hint=hint)


@functools.lru_cache(maxsize=16)
def _load_cached(name: str, path: Path, size: int, mtime_ns: int) -> Tokenizer:
    # size and mtime are part of the key so a re-staged file is picked up.
    if name == "gpt2":
        return Gpt2Tokenizer(path)
    digest = sha256_file(path)
    if digest != LLAMA_SHA256:
        raise EvaluatorError(
            "inputs.tokenizer_unpinned",
            f"{path} is not the reference llama tokenizer (sha256 {digest[:16]}…, expected "
            f"{LLAMA_SHA256[:16]}…)",
            hint=LLAMA_STAGING_HINT,
        )
    return LlamaTokenizer(path)


_BYTE = ByteTokenizer()


def load_tokenizer(name: str, directory: Path | None = None) -> Tokenizer:
    """Load a reference tokenizer by name from `directory` (default `tokenizer_dir()`), cached."""
    if name not in TOKENIZER_NAMES:
        raise EvaluatorError(
            "inputs.unknown_tokenizer",
            f"unknown tokenizer {name!r}",
            hint=f"use one of {', '.join(TOKENIZER_NAMES)}",
        )
    if name == "byte":
        return _BYTE
    path = (directory if directory is not None else tokenizer_dir()) / (
        GPT2_FILE if name == "gpt2" else LLAMA_FILE
    )
    try:
        stat = path.stat()
    except FileNotFoundError as exc:
        raise _missing(name, path) from exc
    except OSError as exc:
        raise EvaluatorError("inputs.tokenizer_missing", f"cannot read {path}: {exc}") from exc
    return _load_cached(name, path.absolute(), stat.st_size, stat.st_mtime_ns)
