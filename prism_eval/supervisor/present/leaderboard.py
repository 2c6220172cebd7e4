"""Supervisor: rank verified records — best per submitter, the reference's tie-break, weights.

Every record is verified first (signature by a trusted key, schema, recomputed score; without a
trusted key only when the caller asked for integrity alone); a record that fails is listed with
the reason and left out.
Only `scored` records rank. For each submitter the best record counts. Order: final_score in
buckets of 1e-9 (higher first), then the earliest submission, then the bundle digest — the
reference challenge's tie-break, which makes the order total and reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from prism_eval.errors import VerificationFailed
from prism_eval.supervisor.attest import Record, TrustedKeys, verify_record

SCORE_BUCKET = 1e-9
WeightScheme = Literal["winner", "proportional"]


@dataclass(frozen=True)
class Entry:
    """One ranked record."""

    path: str
    submitter: str
    record: Record

    @property
    def final_score(self) -> float:
        """The record's final score (scored records only rank)."""
        assert self.record.score is not None
        return self.record.score.final_score

    def sort_key(self) -> tuple[int, str, str]:
        """Bucketed score (descending), earliest submission, bundle digest."""
        bucket = -math.floor(self.final_score / SCORE_BUCKET)
        submitted = self.record.subject.submitted_at or self.record.started_at
        return bucket, submitted, self.record.subject.bundle_sha256 or ""


@dataclass(frozen=True)
class Leaderboard:
    """The ranking, what was left out and why, and the dry-run weights."""

    ranking: list[Entry]
    excluded: list[tuple[str, str]]
    weights: dict[str, float]


def submitter_of(record: Record) -> str:
    """Who a record counts for: its submitter id, else its bundle digest."""
    return record.subject.submitter or f"bundle:{record.subject.bundle_sha256}"


def dry_run_weights(ranking: list[Entry], scheme: WeightScheme) -> dict[str, float]:
    """Weights per submitter: all to the winner, or proportional to final scores."""
    if not ranking:
        return {}
    if scheme == "winner":
        return {entry.submitter: float(index == 0) for index, entry in enumerate(ranking)}
    total = math.fsum(entry.final_score for entry in ranking)
    return {entry.submitter: entry.final_score / total for entry in ranking} if total else {}


def build_leaderboard(
    paths: list[Path], trust: TrustedKeys, scheme: WeightScheme = "winner"
) -> Leaderboard:
    """Verify every record, keep each submitter's best scored one, rank, weigh."""
    best: dict[str, Entry] = {}
    excluded: list[tuple[str, str]] = []
    for path in paths:
        try:
            record = verify_record(path.read_bytes(), trust).record
        except (OSError, VerificationFailed) as exc:
            excluded.append((str(path), str(exc)))
            continue
        if record.status != "scored" or record.score is None:
            excluded.append((str(path), f"not scored: {record.status} ({record.reason.rule_id})"))
            continue
        entry = Entry(str(path), submitter_of(record), record)
        current = best.get(entry.submitter)
        if current is None or entry.sort_key() < current.sort_key():
            best[entry.submitter] = entry
    ranking = sorted(best.values(), key=Entry.sort_key)
    return Leaderboard(ranking, excluded, dry_run_weights(ranking, scheme))
