"""Supervisor: the scoring math, pure functions over figures the supervisor validated.

Prequential bits-per-byte (docs/design.md §1): the model's summed loss (nats) on each batch, taken
before the miner trains on it, over a single pass of the stream, divided by ln 2 and by the
UTF-8 bytes the predicted tokens stand for:

    bpb = (Σ_batches nats_b) / (ln 2 · Σ_batches bytes_b)

Sums use `math.fsum` (exactly rounded), so the result does not depend on summation order and
an auditor in any language can recompute it bit for bit. final_score = 1 / (1 + bpb) keeps the
reference challenge's semantics: higher is better, in (0, 1].
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import rfc8785
from pydantic import BaseModel, ConfigDict, Field

SCORING_VERSION = "2"  # 2: the blocked parallel-stream layout (docs/scoring.md)


class BatchFigures(BaseModel):
    """One scored batch: nats from the worker (validated); tokens and bytes from the supervisor."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    nats: float = Field(ge=0, description="Summed natural-log loss over the batch's targets.")
    tokens: int = Field(ge=1, description="Predicted tokens in the batch.")
    bytes: int = Field(ge=0, description="UTF-8 bytes those tokens stand for.")


class CurvePoint(BaseModel):
    """Cumulative figures after some batch: the online learning curve."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    batch: int = Field(description="Batches scored so far.")
    bytes: int = Field(description="Bytes scored so far.")
    bpb: float = Field(description="Cumulative bits per byte so far.")
    batch_bpb: float = Field(description="Bits per byte of this batch alone.")


def heldout_terms(
    twin_bpb: float | None, trained_bpb: float | None, recent_final_bpb: float
) -> tuple[float | None, float | None]:
    """(held-out delta, memorization gap) from the audit's figures; (None, None) without
    held-out data. delta = untrained twin − trained; gap = trained − the saved weights' bpb
    on the last scored batches."""
    if twin_bpb is None or trained_bpb is None:
        return None, None
    return twin_bpb - trained_bpb, trained_bpb - recent_final_bpb


def bits_per_byte(nats_total: float, bytes_total: int) -> float:
    """Convert summed nats over `bytes_total` bytes into bits per byte."""
    if bytes_total <= 0:
        raise ValueError("bits per byte needs at least one byte")
    return nats_total / (math.log(2) * bytes_total)


def final_score(bpb: float) -> float:
    """The reference challenge's score: 1 / (1 + bpb); higher is better."""
    return 1.0 / (1.0 + bpb)


class ScoringRules(BaseModel):
    """The constants of the final score (config keys score_*; docs/scoring.md)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    score_tie_epsilon_bpb: float = 1e-4
    score_gap_threshold_bpb: float = 1.0
    score_gap_multiplier: float = 0.5
    score_anomaly_heldout_delta_bpb: float = -0.5


def tie_break(heldout_delta: float | None) -> float:
    """A held-out improvement mapped into [0, 1): d / (1 + d) for d > 0, else 0."""
    if heldout_delta is None or heldout_delta <= 0:
        return 0.0
    return heldout_delta / (1.0 + heldout_delta)


def rank_score(
    bpb: float, heldout_delta: float | None, gap: float | None, rules: ScoringRules
) -> tuple[float, dict[str, float]]:
    """The final score and the multipliers applied (see docs/scoring.md).

    The tie-break lowers bpb by at most `score_tie_epsilon_bpb`, and 1/(1+x) is decreasing,
    so two runs whose bpb differ by more than that epsilon keep their order.
    """
    score = final_score(bpb - rules.score_tie_epsilon_bpb * tie_break(heldout_delta))
    multipliers: dict[str, float] = {}
    if gap is not None and gap > rules.score_gap_threshold_bpb:
        multipliers["memorization"] = rules.score_gap_multiplier
    if heldout_delta is not None and heldout_delta < rules.score_anomaly_heldout_delta_bpb:
        multipliers["anomaly"] = 0.0
    for factor in multipliers.values():
        score *= factor
    return score, multipliers


def catch_probabilities(positions: int, rate: float, steps: int) -> tuple[float, float]:
    """The prefix audit's chance of catching a leak (docs/scoring.md §4): at 1 % of positions
    spread over the run, 1 − 0.99^positions; in 1 % of the steps, 1 − (1 − rate)^(steps/100)."""
    return 1.0 - 0.99**positions, 1.0 - (1.0 - rate) ** (steps / 100)


def total_nats(figures: Sequence[BatchFigures]) -> float:
    """Exactly rounded sum of the batches' nats."""
    return math.fsum(f.nats for f in figures)


def stream_sha256(figures: Sequence[BatchFigures]) -> str:
    """sha256 of the RFC 8785 JSON of [[nats, tokens, bytes], ...]: the stream's fingerprint."""
    rows = [[f.nats, f.tokens, f.bytes] for f in figures]
    return hashlib.sha256(rfc8785.dumps(rows)).hexdigest()


def learning_curve(figures: Sequence[BatchFigures], max_points: int) -> list[CurvePoint]:
    """At most `max_points` evenly spaced cumulative points, always including the last batch."""
    if max_points < 1:
        raise ValueError("a curve needs at least one point")
    if not figures:
        return []
    count = len(figures)
    step = max(1, math.ceil(count / max_points))
    keep = set(range(step - 1, count, step)) | {count - 1}
    points: list[CurvePoint] = []
    nats: list[float] = []
    total_bytes = 0
    for index, figure in enumerate(figures):
        nats.append(figure.nats)
        total_bytes += figure.bytes
        if index in keep and total_bytes > 0:
            batch_bpb = bits_per_byte(figure.nats, figure.bytes) if figure.bytes else 0.0
            points.append(
                CurvePoint(
                    batch=index + 1,
                    bytes=total_bytes,
                    bpb=bits_per_byte(math.fsum(nats), total_bytes),
                    batch_bpb=batch_bpb,
                )
            )
    return points
