"""Tests for prism_eval.stream: packing documents into overlapping rows, budgets, the producer.

The expected stream and byte counts are rebuilt here independently of `pack_batches`: ids from
`encode_document`, bytes from decoding the predicted tokens themselves.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prism_eval.data import Document
from prism_eval.errors import EvaluatorError
from prism_eval.stream import BatchProducer, PackedBatch, StreamTally, pack_batches
from prism_eval.tokenizers import Tokenizer, load_tokenizer

TOKENIZER_NAMES = ["byte", "gpt2"]
UNLIMITED = 10**15

TRICKY = [
    "<|endoftext|>",
    "😀",
    "👩‍👩‍👧",
    "日本語のテキスト",
    "中文",
    "e\u0301",  # e + combining acute
    "a\u0308\u0323",  # a + two combining marks
    "\u200b",
    " ",
    "\n",
    "\x00",
]
DOCUMENT_TEXTS = st.lists(st.one_of(st.text(max_size=40), st.sampled_from(TRICKY)), max_size=6).map(
    "".join
)

SAMPLE_TEXTS = [
    "Hello, world! This is the first document.",
    "",
    "日本語のテキストと emoji 😀👩‍👩‍👧 and <|endoftext|> inside.",
    "e\u0301 combining marks, tabs\tand\nnewlines.",
    "",
    "The quick brown fox jumps over the lazy dog. " * 5,
    "short",
]


@pytest.fixture(params=TOKENIZER_NAMES)
def tokenizer(request: pytest.FixtureRequest) -> Tokenizer:
    return load_tokenizer(request.param)


def documents(texts: list[str]) -> list[Document]:
    return [Document(id=f"doc-{i}", text=text) for i, text in enumerate(texts)]


def expected_stream(texts: list[str], tokenizer: Tokenizer) -> list[int]:
    """BOS + tokens(document) for each non-empty document, concatenated."""
    stream: list[int] = []
    for text in texts:
        if text:
            stream.append(tokenizer.bos_id)
            stream.extend(tokenizer.encode_document(text)[0].tolist())
    return stream


def reconstruct(batches: list[PackedBatch]) -> list[int]:
    """The stream the batches cover, checking the one-token overlaps on the way."""
    stream: list[int] = []
    for batch in batches:
        rows = batch.rows
        if stream:
            assert int(rows[0, 0]) == stream[-1], "a batch must start on the previous last token"
        else:
            stream.append(int(rows[0, 0]))
        for r in range(rows.shape[0]):
            if r:
                assert int(rows[r, 0]) == int(rows[r - 1, -1]), "rows overlap by one token"
            stream.extend(rows[r, 1:].tolist())
    return stream


def pack(
    texts: list[str],
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    seq_len: int,
    byte_budget: int = UNLIMITED,
) -> tuple[list[PackedBatch], StreamTally]:
    tally = StreamTally()
    batches = list(
        pack_batches(
            documents(texts),
            tokenizer,
            batch_size=batch_size,
            seq_len=seq_len,
            byte_budget=byte_budget,
            tally=tally,
        )
    )
    return batches, tally


def check_batch_shapes(batches: list[PackedBatch], batch_size: int, seq_len: int) -> None:
    for number, batch in enumerate(batches):
        assert batch.index == number
        assert batch.rows.dtype == np.int32
        assert batch.rows.ndim == 2 and batch.rows.shape[1] == seq_len
        rows = batch.rows.shape[0]
        assert 1 <= rows <= batch_size
        if number < len(batches) - 1:
            assert rows == batch_size, "only the last batch may be short"
        assert batch.predicted_tokens == rows * (seq_len - 1)


def check_batch_bytes(batches: list[PackedBatch], tokenizer: Tokenizer) -> None:
    """Each batch's bytes are the bytes its predicted tokens (positions 1..) decode to."""
    for batch in batches:
        targets = batch.rows[:, 1:].reshape(-1)
        assert batch.bytes == len(tokenizer.decode_bytes(targets))


# ---- (a) every stream token after the first is predicted exactly once ---------------------


@pytest.mark.parametrize(("batch_size", "seq_len"), [(1, 2), (2, 5), (3, 16), (4, 64)])
def test_every_stream_token_after_the_first_is_predicted_exactly_once(
    tokenizer: Tokenizer, batch_size: int, seq_len: int
) -> None:
    texts = SAMPLE_TEXTS * 3
    batches, tally = pack(texts, tokenizer, batch_size=batch_size, seq_len=seq_len)
    expected = expected_stream(texts, tokenizer)
    covered = reconstruct(batches)
    assert tally.stopped_by == "data_exhausted"
    assert covered == expected[: len(covered)]
    # what is dropped at the end is shorter than one row's predictions
    assert 0 <= len(expected) - len(covered) < seq_len - 1
    assert sum(b.predicted_tokens for b in batches) == len(covered) - 1
    check_batch_shapes(batches, batch_size, seq_len)


def test_byte_stream_rows_by_hand() -> None:
    tokenizer = load_tokenizer("byte")
    batches, tally = pack(["abcde", "fg"], tokenizer, batch_size=2, seq_len=3)
    bos = tokenizer.bos_id
    a, b, c, d, e, f, g = (ord(ch) for ch in "abcdefg")
    # stream: BOS a b c d e BOS f g (9 tokens); 2 rows of 3 overlapping by one per batch
    assert [batch.rows.tolist() for batch in batches] == [
        [[bos, a, b], [b, c, d]],
        [[d, e, bos], [bos, f, g]],
    ]
    assert [batch.bytes for batch in batches] == [4, 3]  # BOS carries no bytes
    assert [batch.predicted_tokens for batch in batches] == [4, 4]
    assert tally.stopped_by == "data_exhausted"
    assert tally.documents == 2


def test_short_last_batch_keeps_full_rows_and_drops_the_tail() -> None:
    tokenizer = load_tokenizer("byte")
    # BOS + 10 bytes = 11 tokens; batch 0 takes 0..8, the rest (8..10) is one row of 3 short of 4
    batches, tally = pack(["abcdefghij"], tokenizer, batch_size=2, seq_len=5)
    assert len(batches) == 1
    assert batches[0].rows.tolist()[1][-1] == ord("h")
    assert batches[0].bytes == 8
    # BOS + 12 bytes = 13 tokens: a full batch (0..8) then one more row (8..12)
    batches, _ = pack(["abcdefghijkl"], tokenizer, batch_size=2, seq_len=5)
    assert [b.rows.shape for b in batches] == [(2, 5), (1, 5)]
    assert [b.bytes for b in batches] == [8, 4]
    assert tally.stopped_by == "data_exhausted"


def test_stream_shorter_than_one_row_yields_no_batches() -> None:
    batches, tally = pack(["ab"], load_tokenizer("byte"), batch_size=4, seq_len=8)
    assert batches == []
    assert tally.stopped_by == "data_exhausted"


# ---- (b) byte accounting ------------------------------------------------------------------


@pytest.mark.parametrize(("batch_size", "seq_len"), [(1, 2), (2, 7), (4, 33)])
def test_batch_bytes_sum_to_the_documents_bytes_minus_the_dropped_tail(
    tokenizer: Tokenizer, batch_size: int, seq_len: int
) -> None:
    texts = SAMPLE_TEXTS * 2
    batches, tally = pack(texts, tokenizer, batch_size=batch_size, seq_len=seq_len)
    assert tally.stopped_by == "data_exhausted"
    expected = expected_stream(texts, tokenizer)
    covered = len(reconstruct(batches))
    dropped_tail = expected[covered:]
    document_bytes = sum(len(text.encode("utf-8")) for text in texts)
    tail_bytes = len(tokenizer.decode_bytes(dropped_tail))
    assert sum(b.bytes for b in batches) == document_bytes - tail_bytes
    check_batch_bytes(batches, tokenizer)


def test_fully_consumed_documents_count_all_their_bytes(tokenizer: Tokenizer) -> None:
    # seq_len 2: every token is its own row, so nothing can be dropped at the end
    texts = SAMPLE_TEXTS
    batches, tally = pack(texts, tokenizer, batch_size=3, seq_len=2)
    assert tally.stopped_by == "data_exhausted"
    assert sum(b.bytes for b in batches) == sum(len(t.encode("utf-8")) for t in texts)
    assert len(reconstruct(batches)) == len(expected_stream(texts, tokenizer))


def test_multibyte_characters_count_their_utf8_bytes_not_characters() -> None:
    # 4 emoji = 16 UTF-8 bytes; seq_len 2 consumes everything
    batches, _ = pack(["😀😀😀😀"], load_tokenizer("gpt2"), batch_size=64, seq_len=2)
    assert sum(b.bytes for b in batches) == 16


# ---- (c) the byte budget ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("budget", "expected_batches"), [(1, 1), (8, 1), (9, 2), (16, 2), (17, 3), (24, 3)]
)
def test_budget_stops_after_the_first_batch_that_reaches_it(
    budget: int, expected_batches: int
) -> None:
    # byte tokenizer, 2 rows x 4 predictions: every batch of this document is exactly 8 bytes
    batches, tally = pack(
        ["x" * 100], load_tokenizer("byte"), batch_size=2, seq_len=5, byte_budget=budget
    )
    assert len(batches) == expected_batches
    assert [b.bytes for b in batches] == [8] * expected_batches
    assert tally.stopped_by == "budget"


def test_budget_reached_on_the_last_full_batch_reports_budget() -> None:
    # BOS + 16 bytes = 17 tokens = exactly two batches of 8 predictions
    batches, tally = pack(
        ["y" * 16], load_tokenizer("byte"), batch_size=2, seq_len=5, byte_budget=16
    )
    assert len(batches) == 2
    assert tally.stopped_by == "budget"


def test_budget_stop_with_gpt2_matches_cumulative_bytes() -> None:
    tokenizer = load_tokenizer("gpt2")
    texts = SAMPLE_TEXTS * 10
    everything, _ = pack(texts, tokenizer, batch_size=2, seq_len=9)
    cumulative = np.cumsum([b.bytes for b in everything])
    budget = int(cumulative[len(cumulative) // 2]) - 1
    expected = int(np.argmax(cumulative >= budget)) + 1
    batches, tally = pack(texts, tokenizer, batch_size=2, seq_len=9, byte_budget=budget)
    assert tally.stopped_by == "budget"
    assert len(batches) == expected
    assert sum(b.bytes for b in batches) >= budget
    assert sum(b.bytes for b in batches[:-1]) < budget
    for got, want in zip(batches, everything, strict=False):
        np.testing.assert_array_equal(got.rows, want.rows)


def test_budget_larger_than_the_data_ends_with_data_exhausted() -> None:
    batches, tally = pack(
        ["z" * 40], load_tokenizer("byte"), batch_size=2, seq_len=5, byte_budget=41
    )
    assert tally.stopped_by == "data_exhausted"
    assert sum(b.bytes for b in batches) <= 40


def test_budget_stop_does_not_read_documents_beyond_need() -> None:
    consumed: list[str] = []

    def lazily() -> Iterator[Document]:
        for i in range(1000):
            consumed.append(f"d{i}")
            yield Document(id=f"d{i}", text="w" * 10)

    tally = StreamTally()
    batches = list(
        pack_batches(
            lazily(), load_tokenizer("byte"), batch_size=1, seq_len=11, byte_budget=20, tally=tally
        )
    )
    assert sum(b.bytes for b in batches) >= 20
    assert tally.stopped_by == "budget"
    assert len(consumed) < 10


@pytest.mark.parametrize(("batch_size", "seq_len"), [(0, 4), (2, 1), (2, 0)])
def test_impossible_geometry_is_refused(batch_size: int, seq_len: int) -> None:
    with pytest.raises(ValueError):
        pack(["abc"], load_tokenizer("byte"), batch_size=batch_size, seq_len=seq_len)


# ---- (d) empty documents ------------------------------------------------------------------


def test_empty_documents_are_skipped_and_counted(tokenizer: Tokenizer) -> None:
    texts = ["", "ab", "", "", "cd", ""]
    batches, tally = pack(texts, tokenizer, batch_size=1, seq_len=2)
    assert tally.empty_documents == 4
    assert tally.documents == 2
    assert reconstruct(batches) == expected_stream(["ab", "cd"], tokenizer)


def test_only_empty_documents_give_no_batches() -> None:
    batches, tally = pack(["", "", ""], load_tokenizer("byte"), batch_size=1, seq_len=2)
    assert batches == []
    assert (tally.documents, tally.empty_documents) == (0, 3)
    assert tally.stopped_by == "data_exhausted"


# ---- (e) properties over random unicode ---------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(DOCUMENT_TEXTS, max_size=8),
    name=st.sampled_from(TOKENIZER_NAMES),
    batch_size=st.integers(min_value=1, max_value=4),
    seq_len=st.integers(min_value=2, max_value=17),
)
def test_packing_invariants_hold_for_random_unicode_documents(
    texts: list[str], name: str, batch_size: int, seq_len: int
) -> None:
    tokenizer = load_tokenizer(name)
    batches, tally = pack(texts, tokenizer, batch_size=batch_size, seq_len=seq_len)
    assert tally.stopped_by == "data_exhausted"
    assert tally.empty_documents == sum(1 for t in texts if not t)
    assert tally.documents == sum(1 for t in texts if t)
    check_batch_shapes(batches, batch_size, seq_len)
    check_batch_bytes(batches, tokenizer)
    expected = expected_stream(texts, tokenizer)
    covered = reconstruct(batches) if batches else []
    assert covered == expected[: len(covered)]
    if batches:
        assert 0 <= len(expected) - len(covered) < seq_len - 1
    else:
        assert len(expected) < seq_len  # not even one row
    dropped = expected[len(covered) :]
    document_bytes = sum(len(t.encode("utf-8")) for t in texts)
    assert sum(b.bytes for b in batches) + len(tokenizer.decode_bytes(dropped)) == document_bytes


@settings(max_examples=100, deadline=None)
@given(
    texts=st.lists(DOCUMENT_TEXTS, min_size=1, max_size=8),
    batch_size=st.integers(min_value=1, max_value=3),
    seq_len=st.integers(min_value=2, max_value=9),
    budget=st.integers(min_value=1, max_value=400),
)
def test_random_budget_stops_at_the_first_batch_reaching_it(
    texts: list[str], batch_size: int, seq_len: int, budget: int
) -> None:
    tokenizer = load_tokenizer("gpt2")
    everything, _ = pack(texts, tokenizer, batch_size=batch_size, seq_len=seq_len)
    batches, tally = pack(
        texts, tokenizer, batch_size=batch_size, seq_len=seq_len, byte_budget=budget
    )
    spent = [b.bytes for b in batches]
    if tally.stopped_by == "budget":
        assert sum(spent) >= budget > sum(spent[:-1])
    else:
        assert tally.stopped_by == "data_exhausted"
        assert sum(b.bytes for b in everything[: len(batches)]) == sum(spent)
        # no full batch before the end reached the budget
        assert all(sum(spent[: k + 1]) < budget for k in range(len(spent) - 1))
    for got, want in zip(batches, everything, strict=False):
        np.testing.assert_array_equal(got.rows, want.rows)
        assert got.bytes == want.bytes


# ---- (f) the producer thread --------------------------------------------------------------


def drain(producer: BatchProducer) -> list[PackedBatch]:
    out: list[PackedBatch] = []
    while (batch := producer.next_batch()) is not None:
        out.append(batch)
    return out


def test_producer_yields_the_same_batches_as_the_generator(tokenizer: Tokenizer) -> None:
    texts = SAMPLE_TEXTS * 8
    direct, _ = pack(texts, tokenizer, batch_size=2, seq_len=7)
    tally = StreamTally()
    generator = pack_batches(
        documents(texts), tokenizer, batch_size=2, seq_len=7, byte_budget=UNLIMITED, tally=tally
    )
    producer = BatchProducer(generator, depth=2)
    try:
        produced = drain(producer)
        assert producer.next_batch() is None  # stays at the end
    finally:
        producer.close()
    assert len(produced) == len(direct) > 2
    for got, want in zip(produced, direct, strict=True):
        assert (got.index, got.predicted_tokens, got.bytes) == (
            want.index,
            want.predicted_tokens,
            want.bytes,
        )
        np.testing.assert_array_equal(got.rows, want.rows)
    assert tally.stopped_by == "data_exhausted"


def test_producer_reraises_an_error_from_the_generator_in_the_consumer() -> None:
    tokenizer = load_tokenizer("byte")
    first = next(
        pack_batches(
            documents(["abc"]),
            tokenizer,
            batch_size=1,
            seq_len=2,
            byte_budget=UNLIMITED,
            tally=StreamTally(),
        )
    )

    def failing() -> Iterator[PackedBatch]:
        yield first
        yield first
        raise RuntimeError("tokenizer blew up")

    producer = BatchProducer(failing())
    try:
        assert producer.next_batch() is first
        assert producer.next_batch() is first
        with pytest.raises(RuntimeError, match="tokenizer blew up"):
            producer.next_batch()
    finally:
        producer.close()


def test_producer_reraises_a_bad_document_error_from_pack_batches() -> None:
    texts = ["fine text " * 5, "lone surrogate \ud800 here"]
    generator = pack_batches(
        documents(texts),
        load_tokenizer("byte"),
        batch_size=1,
        seq_len=4,
        byte_budget=UNLIMITED,
        tally=StreamTally(),
    )
    producer = BatchProducer(generator)
    try:
        with pytest.raises(EvaluatorError) as info:
            drain(producer)
    finally:
        producer.close()
    assert info.value.rule_id == "data.bad_text"


def test_producer_close_before_draining_stops_the_thread() -> None:
    texts = ["q" * 1000]
    generator = pack_batches(
        documents(texts),
        load_tokenizer("byte"),
        batch_size=1,
        seq_len=2,
        byte_budget=UNLIMITED,
        tally=StreamTally(),
    )
    producer = BatchProducer(generator, depth=1)
    assert producer.next_batch() is not None
    producer.close()
    assert not producer._thread.is_alive()
