"""Tests for supervisor.data.tokenizers: round trips, exact byte counts, offline loading."""

from __future__ import annotations

import hashlib
import shutil
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prism_eval import tokenizer_files
from prism_eval.errors import EvaluatorError
from prism_eval.supervisor.data import tokenizers
from prism_eval.supervisor.data.tokenizers import (
    GPT2_SHA256,
    LlamaTokenizer,
    Tokenizer,
    load_tokenizer,
    tokenizer_dir,
)
from prism_eval.tokenizer_files import TOKENIZER_NAMES
from tests.conftest import ROOT

TRICKY = [
    "<|endoftext|>",
    "😀",
    "👩‍👩‍👧",
    "日本語のテキスト",
    "e\u0301",  # e + combining acute
    "\u200b",
    "  ",
    "\n\n",
    "\r\n",
    "\t",
    "'s",
    "<s>",
    "</s>",
    "\x00",
    "\ufeff",
]
# arbitrary text (hypothesis never draws lone surrogates) mixed with the strings above
DOCUMENTS = st.lists(st.one_of(st.text(), st.sampled_from(TRICKY)), max_size=8).map("".join)


def check_round_trip(tokenizer: Tokenizer, text: str) -> None:
    """The contract of encode_document: lossless, int32, one byte count per token, exact sum."""
    ids, counts = tokenizer.encode_document(text)
    assert ids.dtype == np.int32 and counts.dtype == np.int32
    assert ids.shape == counts.shape
    assert int(counts.sum()) == len(text.encode("utf-8"))
    assert (counts >= 0).all()
    assert tokenizer.decode(ids.tolist()) == text
    assert tokenizer.bos_id not in ids.tolist()
    if tokenizer.name != "llama":  # a lone llama byte piece decodes to U+FFFD
        # each token's count is the length of the bytes it decodes to
        singles = [len(tokenizer.decode_bytes([int(i)])) for i in ids[:64]]
        assert singles == counts[:64].tolist()


@pytest.fixture(scope="module")
def gpt2() -> Tokenizer:
    """The staged gpt2 tokenizer; fails (never skips) when the ranks file is not staged."""
    try:
        return load_tokenizer("gpt2")
    except EvaluatorError as exc:
        pytest.fail(
            f"gpt2.tiktoken is not staged under {tokenizer_dir()}: {exc}. "
            "Run `make install` or `python scripts/stage_gpt2.py --prefix .venv`.",
            pytrace=False,
        )


# -- byte ------------------------------------------------------------------------------------


def test_byte_tokenizer_shape() -> None:
    tok = load_tokenizer("byte")
    assert (tok.name, tok.vocab_size, tok.bos_id, tok.fingerprint) == (
        "byte",
        257,
        256,
        "builtin:byte",
    )
    ids, counts = tok.encode_document("hé")
    assert ids.tolist() == [104, 195, 169]
    assert counts.tolist() == [1, 1, 1]
    assert tok.decode([256, 104, 256]) == "h"  # BOS stands for no bytes


@settings(max_examples=300, deadline=None)
@given(text=DOCUMENTS)
def test_byte_round_trip_property(text: str) -> None:
    check_round_trip(load_tokenizer("byte"), text)


def test_empty_document_has_no_tokens() -> None:
    ids, counts = load_tokenizer("byte").encode_document("")
    assert ids.size == 0 and counts.size == 0


def test_lone_surrogate_is_refused() -> None:
    with pytest.raises(EvaluatorError) as info:
        load_tokenizer("byte").encode_document("a\ud800b")
    assert info.value.rule_id == "data.bad_text"


def test_decode_rejects_ids_outside_the_vocabulary() -> None:
    with pytest.raises(EvaluatorError) as info:
        load_tokenizer("byte").decode([65, 257])
    assert info.value.rule_id == "data.bad_token_id"


def test_unknown_tokenizer_name() -> None:
    assert TOKENIZER_NAMES == ("byte", "gpt2", "llama")
    with pytest.raises(EvaluatorError) as info:
        load_tokenizer("bpe4096")
    assert info.value.rule_id == "inputs.unknown_tokenizer"


# -- gpt2 ------------------------------------------------------------------------------------


def test_gpt2_known_ids(gpt2: Tokenizer) -> None:
    assert (gpt2.vocab_size, gpt2.bos_id, gpt2.fingerprint) == (50257, 50256, GPT2_SHA256)
    ids, counts = gpt2.encode_document("Hello world")
    assert ids.tolist() == [15496, 995]
    assert counts.tolist() == [5, 6]
    assert gpt2.decode([15496, 995]) == "Hello world"


def test_gpt2_special_token_text_is_ordinary_text(gpt2: Tokenizer) -> None:
    text = "end<|endoftext|>start"
    ids, counts = gpt2.encode_document(text)
    assert 50256 not in ids.tolist()
    assert len(ids) > 3
    assert gpt2.decode(ids.tolist()) == text
    assert int(counts.sum()) == len(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=DOCUMENTS)
def test_gpt2_round_trip_property(gpt2: Tokenizer, text: str) -> None:
    check_round_trip(gpt2, text)


def test_gpt2_multibyte_characters_split_across_tokens(gpt2: Tokenizer) -> None:
    text = "日本語 😀 e\u0301"
    ids, counts = gpt2.encode_document(text)
    assert len(ids) > len(text.split())  # byte-level BPE splits these characters
    assert int(counts.sum()) == len(text.encode())


def test_gpt2_missing_file_says_how_to_stage(tmp_path: Path) -> None:
    with pytest.raises(EvaluatorError) as info:
        load_tokenizer("gpt2", tmp_path)
    assert info.value.rule_id == "inputs.tokenizer_missing"
    assert str(tmp_path / "gpt2.tiktoken") in info.value.message
    assert "stage_gpt2.py" in (info.value.hint or "")


def test_gpt2_corrupt_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "gpt2.tiktoken").write_bytes(b"SGVsbG8= 0\n")
    with pytest.raises(EvaluatorError) as info:
        load_tokenizer("gpt2", tmp_path)
    assert info.value.rule_id == "inputs.tokenizer_corrupt"
    assert GPT2_SHA256 in info.value.message


def test_gpt2_loads_offline_without_a_download_cache(
    gpt2: Tokenizer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    staged = tmp_path / "tok"
    staged.mkdir()
    shutil.copy(tokenizer_dir() / "gpt2.tiktoken", staged / "gpt2.tiktoken")
    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(cache))
    monkeypatch.setenv("DATA_GYM_CACHE_DIR", str(cache))

    def no_network(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("tokenizer loading tried to open a socket")

    monkeypatch.setattr(socket, "socket", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    tok = load_tokenizer("gpt2", staged)
    assert tok.encode_document("Hello world")[0].tolist() == [15496, 995]
    assert list(cache.iterdir()) == []


def test_loading_is_cached(gpt2: Tokenizer) -> None:
    assert load_tokenizer("gpt2") is gpt2
    assert load_tokenizer("byte") is load_tokenizer("byte")


def test_tokenizer_dir_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRISM_EVAL_TOKENIZER_DIR", str(tmp_path))
    assert tokenizer_dir() == tmp_path
    monkeypatch.delenv("PRISM_EVAL_TOKENIZER_DIR")
    assert tokenizer_dir().parts[-3:] == ("share", "prism-eval", "tokenizers")


# -- llama -----------------------------------------------------------------------------------

CORPUS = (
    "The quick brown fox jumps over the lazy dog. "
    "Pack my box with five dozen liquor jugs! "
    "How vexingly quick daft zebras jump; the five boxing wizards jump quickly.\n"
    "Python is a programming language that lets you work quickly and integrate systems.\n"
    "Tokens, bytes and bits per byte: 0123456789 (numbers) [brackets] {braces}.\n"
)


def train_sentencepiece(directory: Path, **options: Any) -> Path:
    """Train a tiny SentencePiece model offline and return the model file's path."""
    import sentencepiece as spm

    corpus = directory / "corpus.txt"
    corpus.write_text(CORPUS * 40, encoding="utf-8")
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(directory / "llama"),
        vocab_size=320,
        model_type="bpe",
        byte_fallback=True,
        hard_vocab_limit=False,
        minloglevel=2,
        **options,
    )
    return directory / "llama.model"


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("llama")
    train_sentencepiece(
        directory,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=True,
        allow_whitespace_only_pieces=True,
    )
    return directory


def test_llama_missing_model_says_where_to_put_it(tmp_path: Path) -> None:
    with pytest.raises(EvaluatorError) as info:
        load_tokenizer("llama", tmp_path)
    assert info.value.rule_id == "inputs.tokenizer_missing"
    assert str(tmp_path / "llama.model") in info.value.message
    assert "scripts/stage_llama.py" in (info.value.hint or "")


def tiny_llama(directory: Path) -> LlamaTokenizer:
    """The llama tokenizer class over a tiny model (load_tokenizer accepts only the pinned one)."""
    return LlamaTokenizer(directory / "llama.model")


def test_only_the_reference_llama_model_is_accepted(llama_dir: Path) -> None:
    with pytest.raises(EvaluatorError) as info:
        load_tokenizer("llama", llama_dir)
    assert info.value.rule_id == "inputs.tokenizer_unpinned"
    assert "is not the reference llama tokenizer" in info.value.message
    assert "scripts/stage_llama.py" in (info.value.hint or "")
    assert "d02ad6cb9dd2c2296a6332199fa2fdca5938fef0" in (info.value.hint or "")


def test_llama_corrupt_model_is_refused(tmp_path: Path) -> None:
    (tmp_path / "llama.model").write_bytes(b"not a model")
    with pytest.raises(EvaluatorError) as info:
        tiny_llama(tmp_path)
    assert info.value.rule_id == "inputs.tokenizer_corrupt"


def test_llama_tiny_model(llama_dir: Path) -> None:
    import sentencepiece as spm

    tok = tiny_llama(llama_dir)
    processor = spm.SentencePieceProcessor(model_file=str(llama_dir / "llama.model"))
    assert tok.vocab_size == processor.get_piece_size()
    assert tok.bos_id == processor.bos_id() == 1
    assert len(tok.fingerprint) == 64


@pytest.mark.parametrize(
    "text",
    [
        "The quick brown fox.",
        " leading space",
        "  two  spaces\n\nand newlines\n",
        "trailing space ",
        "<s> and </s> are text here <unk>",
        "😀 日本語 e\u0301 \x00 tab\there",
        "",
        " ",
        "\n",
    ],
)
def test_llama_round_trip(llama_dir: Path, text: str) -> None:
    check_round_trip(tiny_llama(llama_dir), text)


@settings(max_examples=150, deadline=None)
@given(text=DOCUMENTS.filter(lambda t: "\u2581" not in t))
def test_llama_round_trip_property(llama_dir: Path, text: str) -> None:
    check_round_trip(tiny_llama(llama_dir), text)


def test_llama_dummy_prefix_space_is_not_counted(llama_dir: Path) -> None:
    tok = tiny_llama(llama_dir)
    ids, counts = tok.encode_document("fox")
    assert int(counts.sum()) == 3
    assert tok.decode(ids.tolist()) == "fox"


def test_llama_visible_space_character_is_lossy(llama_dir: Path) -> None:
    # SentencePiece cannot tell a literal '▁' from the space it stands for
    with pytest.raises(EvaluatorError) as info:
        tiny_llama(llama_dir).encode_document("a\u2581b")
    assert info.value.rule_id == "data.tokenizer_lossy"


def test_llama_normalizing_model_is_reported_lossy(tmp_path: Path) -> None:
    train_sentencepiece(tmp_path)  # default nmt_nfkc normalization, collapses whitespace
    tok = tiny_llama(tmp_path)
    for text in ["ｆｕｌｌｗｉｄｔｈ", "two  spaces"]:
        with pytest.raises(EvaluatorError) as info:
            tok.encode_document(text)
        assert info.value.rule_id == "data.tokenizer_lossy"
        assert "llama" in info.value.message
        assert "normaliz" in (info.value.hint or "")


def test_module_exports_the_documented_api() -> None:
    for name in ("tokenizer_dir", "Tokenizer", "load_tokenizer"):
        assert hasattr(tokenizers, name)
    for name in ("TokenizerName", "TOKENIZER_NAMES"):  # shared with the worker
        assert hasattr(tokenizer_files, name)


# -- staging ---------------------------------------------------------------------------------


def load_stage_script() -> Any:
    import importlib.util

    path = ROOT / "scripts" / "stage_gpt2.py"
    spec = importlib.util.spec_from_file_location("stage_gpt2", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_sdist(path: Path, ranks: bytes) -> Path:
    import io
    import tarfile

    with tarfile.open(path, "w:gz") as archive:
        for name, data in [
            ("openai_whisper-20250625/README.md", b"readme"),
            ("openai_whisper-20250625/whisper/assets/gpt2.tiktoken", ranks),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def test_stage_gpt2_from_a_local_sdist(gpt2: Tokenizer, tmp_path: Path) -> None:
    stage = load_stage_script()
    ranks = (tokenizer_dir() / "gpt2.tiktoken").read_bytes()
    sdist = make_sdist(tmp_path / "whisper.tar.gz", ranks)
    target = stage.stage(tmp_path / "prefix", sdist)
    assert target == tmp_path / "prefix" / "share" / "prism-eval" / "tokenizers" / "gpt2.tiktoken"
    assert target.read_bytes() == ranks
    assert stage.stage(tmp_path / "prefix", tmp_path / "absent.tar.gz") == target  # no-op
    assert load_tokenizer("gpt2", target.parent).fingerprint == GPT2_SHA256


def test_stage_gpt2_refuses_wrong_bytes(tmp_path: Path) -> None:
    stage = load_stage_script()
    sdist = make_sdist(tmp_path / "whisper.tar.gz", b"SGVsbG8= 0\n")
    with pytest.raises(stage.StageError, match="sha256"):
        stage.stage(tmp_path / "prefix", sdist)
    assert not (tmp_path / "prefix" / "share" / "prism-eval" / "tokenizers").exists() or not any(
        (tmp_path / "prefix" / "share" / "prism-eval" / "tokenizers").iterdir()
    )


def load_llama_stage_script() -> Any:
    import importlib.util

    path = ROOT / "scripts" / "stage_llama.py"
    spec = importlib.util.spec_from_file_location("stage_llama", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_stage_llama_refuses_any_file_but_the_pinned_one(llama_dir: Path, tmp_path: Path) -> None:
    stage = load_llama_stage_script()
    assert stage.LLAMA_SHA256 == tokenizers.LLAMA_SHA256
    with pytest.raises(stage.StageError, match="not the reference llama tokenizer"):
        stage.stage(llama_dir / "llama.model", tmp_path / "tokenizers")
    assert not (tmp_path / "tokenizers" / "llama.model").exists()


def test_stage_llama_writes_the_file_whose_digest_it_checked(
    llama_dir: Path, tmp_path: Path
) -> None:
    stage = load_llama_stage_script()
    model = llama_dir / "llama.model"
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    target = stage.stage(model, tmp_path / "tokenizers", expected_sha256=digest)
    assert target.read_bytes() == model.read_bytes()
    assert tiny_llama(target.parent).fingerprint == digest
