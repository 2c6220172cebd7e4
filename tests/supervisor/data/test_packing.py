"""Tests for supervisor.data.packing: the blocked parallel-stream layout, budgets, the producer.

The expected stream and byte counts are rebuilt here independently of `pack_batches`: ids from
`encode_document`, bytes from decoding the predicted tokens themselves. Where a property is
about positions (what is a target of which batch), the rows are cut from unique ids.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prism_eval.errors import EvaluatorError
from prism_eval.supervisor.data.locked import Document
from prism_eval.supervisor.data.packing import (
    BatchProducer,
    PackedBatch,
    StreamTally,
    block_tokens,
    cut_block,
    pack_batches,
)
from prism_eval.supervisor.data.tokenizers import Tokenizer, load_tokenizer

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


def blocks_of(batches: list[PackedBatch], block_batches: int) -> list[list[PackedBatch]]:
    """The batches grouped by block: full blocks, then what the tail made (a shorter block,
    or one batch of fewer rows)."""
    return [batches[i : i + block_batches] for i in range(0, len(batches), block_batches)]


def reconstruct(batches: list[PackedBatch], block_batches: int) -> tuple[list[int], int]:
    """The stream the batches cover, and how many of its tokens are segment starts; checks
    that row r of each batch continues row r of the batch before it within a block."""
    stream: list[int] = []
    starts = 0
    for block in blocks_of(batches, block_batches):
        rows = block[0].rows.shape[0]
        for r in range(rows):
            segment = block[0].rows[r].tolist()
            for batch in block[1:]:
                row = batch.rows[r].tolist()
                assert row[0] == segment[-1], "a row continues the same row of the batch before"
                segment.extend(row[1:])
            stream.extend(segment)
            starts += 1
    return stream, starts


def pack(
    texts: list[str],
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    seq_len: int,
    byte_budget: int = UNLIMITED,
    block_batches: int = 3,
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
            block_batches=block_batches,
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


# ---- (a) the layout: which token is a target of which batch -------------------------------


@pytest.mark.parametrize(
    ("batch_size", "seq_len", "block_batches"), [(1, 2, 1), (2, 3, 2), (3, 5, 4), (4, 16, 3)]
)
def test_no_input_is_a_target_of_its_own_or_a_later_batch(
    batch_size: int, seq_len: int, block_batches: int
) -> None:
    total = block_tokens(batch_size, seq_len, block_batches)
    ids = np.arange(total, dtype=np.int32)  # each id is its stream position
    batches = list(cut_block(ids, np.ones(total, np.int32), batch_size, seq_len, block_batches))
    targets_from = {}  # position → the batch whose target it is
    for k, (rows, _) in enumerate(batches):
        for position in rows[:, 1:].reshape(-1).tolist():
            assert position not in targets_from, "every position is predicted at most once"
            targets_from[position] = k
    for k, (rows, _) in enumerate(batches):
        for position in rows.reshape(-1).tolist():  # the whole row, targets included
            owner = targets_from.get(position)
            assert owner is None or owner <= k, f"batch {k} holds batch {owner}'s target"
        for position in rows[:, :-1].reshape(-1).tolist():  # what a predictor is given
            owner = targets_from.get(position)
            assert owner is None or owner < k or position in rows[:, 1:], (
                f"batch {k}'s inputs hold batch {owner}'s target {position}"
            )
    # every position but the segment starts is a target, exactly once
    segment = block_batches * (seq_len - 1) + 1
    assert set(targets_from) == set(range(total)) - set(range(0, total, segment))


@pytest.mark.parametrize(("batch_size", "seq_len", "block_batches"), [(2, 3, 2), (3, 6, 3)])
def test_a_batchs_rows_share_no_token(batch_size: int, seq_len: int, block_batches: int) -> None:
    total = block_tokens(batch_size, seq_len, block_batches)
    ids = np.arange(total, dtype=np.int32)
    for rows, _ in cut_block(ids, np.ones(total, np.int32), batch_size, seq_len, block_batches):
        flat = rows.reshape(-1).tolist()
        assert len(set(flat)) == len(flat), "mixing across rows can read nothing of its own"


def test_byte_stream_blocks_by_hand() -> None:
    tokenizer = load_tokenizer("byte")
    batches, tally = pack(["abcdefghi", "jk"], tokenizer, batch_size=2, seq_len=3, block_batches=2)
    bos = tokenizer.bos_id
    a, b, c, d, e, f, g, h, i, j, k = (ord(ch) for ch in "abcdefghijk")
    # stream: BOS a b c d e f g h i BOS j k (13 tokens); a block of 2 batches is 2 segments of
    # 2·2 + 1 = 5 tokens; the 3 tokens left make one short batch of one row.
    assert [batch.rows.tolist() for batch in batches] == [
        [[bos, a, b], [e, f, g]],
        [[b, c, d], [g, h, i]],
        [[bos, j, k]],
    ]
    assert [batch.bytes for batch in batches] == [4, 4, 2]  # BOS carries no bytes
    assert [batch.predicted_tokens for batch in batches] == [4, 4, 2]
    assert tally.stopped_by == "data_exhausted"
    assert tally.documents == 2


@pytest.mark.parametrize(("batch_size", "seq_len"), [(1, 2), (2, 5), (3, 16), (4, 64)])
def test_every_token_but_the_segment_starts_is_predicted_exactly_once(
    tokenizer: Tokenizer, batch_size: int, seq_len: int
) -> None:
    texts = SAMPLE_TEXTS * 3
    batches, tally = pack(texts, tokenizer, batch_size=batch_size, seq_len=seq_len)
    expected = expected_stream(texts, tokenizer)
    covered, starts = reconstruct(batches, 3)
    assert tally.stopped_by == "data_exhausted"
    assert covered == expected[: len(covered)]
    assert sum(b.predicted_tokens for b in batches) == len(covered) - starts
    check_batch_shapes(batches, batch_size, seq_len)


def test_tail_too_short_for_a_batch_becomes_fewer_rows_or_nothing() -> None:
    tokenizer = load_tokenizer("byte")
    # BOS + 10 bytes = 11 tokens: no block of 2 × 5 tokens fits twice; 2 rows of 5 do
    batches, _ = pack(["abcdefghij"], tokenizer, batch_size=4, seq_len=5, block_batches=2)
    assert [b.rows.shape for b in batches] == [(2, 5)]
    batches, tally = pack(["ab"], tokenizer, batch_size=4, seq_len=8)
    assert batches == []
    assert tally.stopped_by == "data_exhausted"


def test_only_one_block_is_tokenized_ahead() -> None:
    consumed: list[str] = []

    def lazily() -> Iterator[Document]:
        for i in range(1000):
            consumed.append(f"d{i}")
            yield Document(id=f"d{i}", text="w" * 9)  # 10 tokens with BOS

    generator = pack_batches(
        lazily(), load_tokenizer("byte"), batch_size=2, seq_len=11, byte_budget=UNLIMITED,
        tally=StreamTally(), block_batches=4,
    )  # fmt: skip
    next(generator)
    # a block is 2 × (4·10 + 1) = 82 tokens: 9 documents, never the whole data
    assert len(consumed) == 9


# ---- (b) byte accounting ------------------------------------------------------------------


@pytest.mark.parametrize(("batch_size", "seq_len"), [(1, 2), (2, 7), (4, 33)])
def test_batch_bytes_are_the_bytes_of_their_targets(
    tokenizer: Tokenizer, batch_size: int, seq_len: int
) -> None:
    batches, tally = pack(SAMPLE_TEXTS * 2, tokenizer, batch_size=batch_size, seq_len=seq_len)
    assert tally.stopped_by == "data_exhausted"
    check_batch_bytes(batches, tokenizer)


def test_fully_consumed_documents_count_all_their_bytes(tokenizer: Tokenizer) -> None:
    # one row per segment of seq_len 2, block of one batch: each segment is BOS-less only when
    # it starts on a BOS, so use one-token documents
    texts = ["a", "b", "c", "d"]
    batches, _ = pack(texts, tokenizer, batch_size=2, seq_len=2, block_batches=1)
    assert sum(b.bytes for b in batches) == 4  # BOS x | BOS y ...: every letter predicted


def test_multibyte_characters_count_their_utf8_bytes_not_characters() -> None:
    batches, _ = pack(["😀😀😀😀"], load_tokenizer("gpt2"), batch_size=1, seq_len=2)
    covered = sum(b.bytes for b in batches)
    assert covered == len(load_tokenizer("gpt2").decode_bytes(
        np.concatenate([b.rows[:, 1:].reshape(-1) for b in batches])
    ))  # fmt: skip


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


@pytest.mark.parametrize(
    ("batch_size", "seq_len", "block_batches"), [(0, 4, 1), (2, 1, 1), (2, 0, 1), (2, 4, 0)]
)
def test_impossible_geometry_is_refused(batch_size: int, seq_len: int, block_batches: int) -> None:
    with pytest.raises(ValueError):
        pack(
            ["abc"], load_tokenizer("byte"), batch_size=batch_size, seq_len=seq_len,
            block_batches=block_batches,
        )  # fmt: skip


# ---- (d) empty documents ------------------------------------------------------------------


def test_empty_documents_are_skipped_and_counted(tokenizer: Tokenizer) -> None:
    texts = ["", "ab", "", "", "cd", ""]
    batches, tally = pack(texts, tokenizer, batch_size=1, seq_len=2)
    assert tally.empty_documents == 4
    assert tally.documents == 2
    assert reconstruct(batches, 3)[0] == expected_stream(["ab", "cd"], tokenizer)[: len(
        reconstruct(batches, 3)[0]
    )]  # fmt: skip


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
    block_batches=st.integers(min_value=1, max_value=4),
)
def test_packing_invariants_hold_for_random_unicode_documents(
    texts: list[str], name: str, batch_size: int, seq_len: int, block_batches: int
) -> None:
    tokenizer = load_tokenizer(name)
    batches, tally = pack(
        texts, tokenizer, batch_size=batch_size, seq_len=seq_len, block_batches=block_batches
    )
    assert tally.stopped_by == "data_exhausted"
    assert tally.empty_documents == sum(1 for t in texts if not t)
    assert tally.documents == sum(1 for t in texts if t)
    check_batch_shapes(batches, batch_size, seq_len)
    check_batch_bytes(batches, tokenizer)
    expected = expected_stream(texts, tokenizer)
    covered, starts = reconstruct(batches, block_batches) if batches else ([], 0)
    assert covered == expected[: len(covered)]
    assert sum(b.predicted_tokens for b in batches) == len(covered) - starts
    if not batches:
        assert len(expected) < seq_len  # not even one row


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
        documents(texts), tokenizer, batch_size=2, seq_len=7, byte_budget=UNLIMITED, tally=tally,
        block_batches=3,
    )  # fmt: skip
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
