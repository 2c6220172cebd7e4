"""Shared: the staged reference tokenizer files — names, pinned digests, how gpt2 is rebuilt.

The supervisor tokenizes the stream with these files (tokenizers.py) and a worker hands the
same tokenizers to `train(ctx)` through `ctx.reference_tokenizer` (worker/reference_tokenizers.py),
so both read the same pinned files the same way. Pure standard library: no tokenizer package is
imported here.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path
from typing import Any, Literal, get_args

from prism_eval.errors import EvaluatorError

# The reference tokenizers, the only ones a stream can be tokenized with.
TokenizerName = Literal["byte", "gpt2", "llama"]
TOKENIZER_NAMES: tuple[str, ...] = get_args(TokenizerName)
TOKENIZER_DIR_ENV = "PRISM_EVAL_TOKENIZER_DIR"
GPT2_FILE = "gpt2.tiktoken"
GPT2_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
GPT2_ENDOFTEXT = "<|endoftext|>"
GPT2_BOS_ID = 50256
# The GPT-2 / r50k pre-tokenizer, as tiktoken ships it (tiktoken_ext/openai_public.py).
GPT2_PAT_STR = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}++| ?\p{N}++| ?[^\s\p{L}\p{N}]++|\s++$|\s+(?!\S)|\s"""
)
LLAMA_FILE = "llama.model"
# The reference challenge's llama tokenizer: hf-internal-testing/llama-tokenizer, tokenizer.model
# at revision d02ad6cb9dd2c2296a6332199fa2fdca5938fef0. Two validators with different files would
# score one bundle differently, so no other file is accepted.
LLAMA_SHA256 = "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347"


def sha256_file(path: Path) -> str:
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def read_tiktoken_ranks(path: Path, expected_sha256: str = GPT2_SHA256) -> dict[bytes, int]:
    """Parse a `.tiktoken` ranks file (base64 token, space, rank per line) after a hash check.

    tiktoken's own `load_tiktoken_bpe` reads and writes a download cache keyed by the path, so
    the file is parsed here instead: one local read, nothing else touched.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise EvaluatorError("inputs.tokenizer_missing", f"cannot read {path}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise EvaluatorError(
            "inputs.tokenizer_corrupt",
            f"{path} has sha256 {actual}, expected {expected_sha256}",
            hint="re-stage it: `python scripts/stage_gpt2.py --prefix .venv`",
        )
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(data.splitlines(), start=1):
        if not line:
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error) as exc:
            raise EvaluatorError(
                "inputs.tokenizer_corrupt", f"{path}:{lineno}: not a tiktoken ranks line"
            ) from exc
    return ranks


def gpt2_encoding_arguments(ranks: dict[bytes, int]) -> dict[str, Any]:
    """The arguments of `tiktoken.Encoding` that make GPT-2's encoding from its ranks."""
    return {
        "name": "gpt2",
        "pat_str": GPT2_PAT_STR,
        "mergeable_ranks": ranks,
        "special_tokens": {GPT2_ENDOFTEXT: GPT2_BOS_ID},
        "explicit_n_vocab": GPT2_BOS_ID + 1,
    }
