"""Tests for supervisor.formula: bits per byte, final score, exact sums, fingerprint, curve."""

from __future__ import annotations

import hashlib
import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from prism_eval.supervisor.formula import (
    BatchFigures,
    ScoringRules,
    bits_per_byte,
    final_score,
    learning_curve,
    rank_score,
    stream_sha256,
    tie_break,
    total_nats,
)

FIGURES = st.builds(
    BatchFigures,
    nats=st.floats(min_value=0, max_value=1e12, allow_nan=False, allow_infinity=False),
    tokens=st.integers(min_value=1, max_value=10**6),
    bytes=st.integers(min_value=1, max_value=10**7),
)


# ---- bits per byte and final score --------------------------------------------------------


def test_two_bits_per_byte_by_hand() -> None:
    # 2 bits per byte over 100 bytes is 200 bits = 200 ln 2 nats.
    assert bits_per_byte(2 * math.log(2) * 100, 100) == 2.0


def test_uniform_257_way_model_over_byte_tokens_gives_log2_257() -> None:
    tokens = 1000
    nats = math.fsum([math.log(257)] * tokens)  # each byte token costs ln 257 nats
    assert bits_per_byte(nats, tokens) == pytest.approx(math.log2(257), rel=1e-14)


def test_zero_loss_gives_zero_bpb_and_score_one() -> None:
    assert bits_per_byte(0.0, 10) == 0.0
    assert final_score(0.0) == 1.0


@pytest.mark.parametrize("total_bytes", [0, -1])
def test_bits_per_byte_without_bytes_is_refused(total_bytes: int) -> None:
    with pytest.raises(ValueError):
        bits_per_byte(1.0, total_bytes)


@pytest.mark.parametrize(
    ("bpb", "expected"), [(0.0, 1.0), (1.0, 0.5), (3.0, 0.25), (0.25, 0.8), (9.0, 0.1)]
)
def test_final_score_is_one_over_one_plus_bpb(bpb: float, expected: float) -> None:
    assert final_score(bpb) == pytest.approx(expected, rel=1e-15)


@given(st.floats(min_value=0, max_value=1e6), st.floats(min_value=0, max_value=1e6))
def test_final_score_is_in_unit_interval_and_decreasing_in_bpb(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert 0.0 < final_score(high) <= final_score(low) <= 1.0


# ---- exact sums ---------------------------------------------------------------------------


def test_total_nats_is_bit_identical_under_any_order() -> None:
    values = [1e16, 1.0, 0.1, 3.3, 1e-3, 7.25, 1e15, 2.0**-30, 123456.789, 0.7]
    figures = [BatchFigures(nats=v, tokens=1, bytes=1) for v in values]
    expected = math.fsum(values)
    rng = random.Random(0)
    naive_sums = set()
    for _ in range(200):
        rng.shuffle(figures)
        assert total_nats(figures).hex() == expected.hex()
        naive_sums.add(sum(f.nats for f in figures))
    # the data is chosen so a plain left-to-right sum depends on the order
    assert len(naive_sums) > 1


@given(st.lists(FIGURES, min_size=1, max_size=40), st.randoms(use_true_random=False))
def test_total_nats_equals_fsum_for_every_permutation(
    figures: list[BatchFigures], rng: random.Random
) -> None:
    shuffled = list(figures)
    rng.shuffle(shuffled)
    assert total_nats(shuffled).hex() == total_nats(figures).hex()
    assert total_nats(figures) == math.fsum(f.nats for f in figures)


def test_total_nats_of_no_batches_is_zero() -> None:
    assert total_nats([]) == 0.0


# ---- stream fingerprint -------------------------------------------------------------------


def test_stream_sha256_is_sha256_of_the_hand_written_canonical_json() -> None:
    figures = [
        BatchFigures(nats=1.5, tokens=10, bytes=20),
        BatchFigures(nats=0.25, tokens=3, bytes=4),
        BatchFigures(nats=2.0, tokens=1, bytes=1),  # RFC 8785 writes 2.0 as 2
    ]
    expected = hashlib.sha256(b"[[1.5,10,20],[0.25,3,4],[2,1,1]]").hexdigest()
    assert stream_sha256(figures) == expected


def test_stream_sha256_changes_when_one_nats_moves_by_one_ulp() -> None:
    figures = [BatchFigures(nats=1.0 + i / 7, tokens=5, bytes=9) for i in range(20)]
    last = figures[-1]
    nudged = [*figures[:-1], last.model_copy(update={"nats": math.nextafter(last.nats, 10.0)})]
    assert nudged[-1].nats != last.nats
    assert stream_sha256(nudged) != stream_sha256(figures)


def test_stream_sha256_depends_on_batch_order() -> None:
    a = BatchFigures(nats=1.0, tokens=1, bytes=1)
    b = BatchFigures(nats=2.0, tokens=1, bytes=1)
    assert stream_sha256([a, b]) != stream_sha256([b, a])


def test_stream_sha256_changes_with_tokens_or_bytes() -> None:
    base = [BatchFigures(nats=1.0, tokens=4, bytes=4)]
    assert stream_sha256(base) != stream_sha256([BatchFigures(nats=1.0, tokens=5, bytes=4)])
    assert stream_sha256(base) != stream_sha256([BatchFigures(nats=1.0, tokens=4, bytes=5)])


@given(st.lists(FIGURES, max_size=20))
def test_stream_sha256_is_a_pure_function_of_the_figures(figures: list[BatchFigures]) -> None:
    copies = [BatchFigures.model_validate(f.model_dump()) for f in figures]
    assert stream_sha256(copies) == stream_sha256(figures)


# ---- figures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fields",
    [
        {"nats": -1e-9, "tokens": 1, "bytes": 1},
        {"nats": 1.0, "tokens": 0, "bytes": 1},
        {"nats": 1.0, "tokens": 1, "bytes": -1},
        {"nats": 1.0, "tokens": 1, "bytes": 1, "extra": 1},
    ],
    ids=["negative-nats", "no-tokens", "negative-bytes", "extra-field"],
)
def test_batch_figures_refuse_impossible_values(fields: dict[str, float]) -> None:
    with pytest.raises(ValidationError):
        BatchFigures.model_validate(fields)


# ---- learning curve -----------------------------------------------------------------------


def test_learning_curve_of_no_batches_is_empty() -> None:
    assert learning_curve([], 256) == []


def test_learning_curve_with_few_batches_keeps_every_batch() -> None:
    figures = [
        BatchFigures(nats=8 * math.log(2), tokens=4, bytes=4),  # 2 bpb
        BatchFigures(nats=4 * math.log(2), tokens=4, bytes=4),  # 1 bpb
    ]
    points = learning_curve(figures, 256)
    assert [p.batch for p in points] == [1, 2]
    assert [p.bytes for p in points] == [4, 8]
    assert points[0].bpb == pytest.approx(2.0, rel=1e-15)
    assert points[1].bpb == pytest.approx(1.5, rel=1e-15)
    assert points[1].batch_bpb == pytest.approx(1.0, rel=1e-15)


@pytest.mark.parametrize(
    ("count", "max_points"),
    [(1, 1), (3, 2), (10, 3), (7, 7), (8, 7), (257, 256), (1000, 256), (1001, 256), (5, 1)],
)
def test_learning_curve_is_thinned_and_always_keeps_the_last_batch(
    count: int, max_points: int
) -> None:
    figures = [BatchFigures(nats=float(i % 13), tokens=3, bytes=1 + i % 5) for i in range(count)]
    points = learning_curve(figures, max_points)
    assert 0 < len(points) <= max_points
    assert points[-1].batch == count
    assert points[-1].bytes == sum(f.bytes for f in figures)


@given(
    st.lists(FIGURES, min_size=1, max_size=300),
    st.integers(min_value=1, max_value=40),
)
def test_learning_curve_is_bounded_and_ends_at_the_totals(
    figures: list[BatchFigures], max_points: int
) -> None:
    points = learning_curve(figures, max_points)
    total_bytes = sum(f.bytes for f in figures)
    assert 1 <= len(points) <= max_points
    last = points[-1]
    assert last.batch == len(figures)
    assert last.bytes == total_bytes
    assert last.bpb == bits_per_byte(total_nats(figures), total_bytes)
    assert last.batch_bpb == bits_per_byte(figures[-1].nats, figures[-1].bytes)
    batches = [p.batch for p in points]
    assert batches == sorted(set(batches))
    for point in points:
        prefix = figures[: point.batch]
        assert point.bytes == sum(f.bytes for f in prefix)
        assert point.bpb == bits_per_byte(total_nats(prefix), point.bytes)


# ---- the final score's rules (docs/scoring.md) ---------------------------------------------

RULES = ScoringRules()


def test_without_heldout_the_final_score_is_one_over_one_plus_bpb() -> None:
    assert rank_score(1.5, None, None, RULES) == (1 / 2.5, {})


@given(
    bpb=st.floats(0.0, 20.0),
    gap_bpb=st.floats(0.0, 5.0),
    delta_a=st.floats(-0.4, 50.0),
    delta_b=st.floats(-0.4, 50.0),
)
def test_tie_break_never_reorders_runs_further_apart_than_epsilon(
    bpb: float, gap_bpb: float, delta_a: float, delta_b: float
) -> None:
    worse = bpb + RULES.score_tie_epsilon_bpb * 1.0001 + gap_bpb
    better_score, _ = rank_score(bpb, delta_a, None, RULES)
    worse_score, _ = rank_score(worse, delta_b, None, RULES)
    assert better_score > worse_score


def test_tie_break_orders_equal_bpb_by_heldout_delta() -> None:
    assert rank_score(2.0, 0.5, None, RULES)[0] > rank_score(2.0, 0.1, None, RULES)[0]
    assert 0.0 <= tie_break(1e9) < 1.0 and tie_break(-1.0) == 0.0 and tie_break(None) == 0.0


def test_memorization_gap_halves_the_score() -> None:
    score, multipliers = rank_score(2.0, 0.0, RULES.score_gap_threshold_bpb + 0.01, RULES)
    assert multipliers == {"memorization": 0.5}
    assert score == pytest.approx(0.5 / 3.0)


def test_anomaly_zeroes_the_score() -> None:
    score, multipliers = rank_score(2.0, RULES.score_anomaly_heldout_delta_bpb - 0.1, None, RULES)
    assert score == 0.0 and multipliers["anomaly"] == 0.0
