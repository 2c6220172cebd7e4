"""Supervisor: run a recorded evaluation again and compare its reproducible core.

The core is what must not change between two honest evaluations of the same bundle on the
same data with the same config: the subject, the inputs, the run's geometry and counts, the
stream, the audit's figures, the score and the ranks check's figures — not timings, memory,
environment or signatures.
With tolerance 0 (the default) every field must be equal: the same software and hardware stack
reproduces bit for bit. Across hardware, floating-point kernels differ; a relative tolerance
(e.g. 1e-3) then applies to the loss figures, and the stream digest is not compared.
"""

from __future__ import annotations

import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from prism_eval.errors import VerificationFailed
from prism_eval.supervisor.attest import Record
from prism_eval.supervisor.config import EvalConfig
from prism_eval.supervisor.evaluation import evaluate
from prism_eval.supervisor.pipeline import RunRequest

CORE = {
    "status": None,
    "reason": ("rule_id",),
    "subject": ("bundle_sha256", "files"),
    "inputs": ("data", "heldout", "tokenizer", "seed", "config_sha256"),
    "run": (
        "batch_size", "seq_len", "batches", "tokens", "bytes", "documents", "empty_documents",
        "stopped_by", "model_params", "float_buffer_elements",
    ),
    "stream": ("sha256", "batches", "nats", "tokens", "bytes", "curve"),
    "audit": None,
    "score": None,
    "ranks": ("nproc", "backend", "device", "batch_size", "seq_len", "ranks",
              "final_weights_sha256"),
}  # fmt: skip
# Digests of floats: meaningful only at tolerance 0.
EXACT_ONLY = {"stream.sha256", "ranks.final_weights_sha256"}


@dataclass(frozen=True)
class Difference:
    """One field that did not reproduce."""

    field: str
    recorded: Any
    reproduced: Any


def core_of(record: Record) -> dict[str, Any]:
    """The reproducible core of a record, flattened to dotted field names."""
    data = record.model_dump(mode="json", by_alias=True)
    core: dict[str, Any] = {}
    for section, fields in CORE.items():
        value = data.get(section)
        if fields is None or value is None:
            core[section] = value
        else:
            core.update({f"{section}.{name}": value.get(name) for name in fields})
    return core


def _close(recorded: Any, reproduced: Any, tolerance: float) -> bool:
    if isinstance(recorded, float) and isinstance(reproduced, float):
        return math.isclose(recorded, reproduced, rel_tol=tolerance, abs_tol=tolerance)
    if isinstance(recorded, dict) and isinstance(reproduced, dict):
        return recorded.keys() == reproduced.keys() and all(
            _close(recorded[k], reproduced[k], tolerance) for k in recorded
        )
    if isinstance(recorded, list) and isinstance(reproduced, list):
        return len(recorded) == len(reproduced) and all(
            _close(a, b, tolerance) for a, b in zip(recorded, reproduced, strict=True)
        )
    return bool(recorded == reproduced)


def compare_cores(recorded: Record, reproduced: Record, tolerance: float) -> list[Difference]:
    """Every core field that differs (beyond `tolerance` for floats when it is > 0)."""
    mine, theirs = core_of(recorded), core_of(reproduced)
    differences = []
    for name, value in mine.items():
        if tolerance > 0 and name in EXACT_ONLY:
            continue
        if not _close(value, theirs.get(name), tolerance):
            differences.append(Difference(name, value, theirs.get(name)))
    return differences


def first_diverging_batch(recorded_stream: Path, reproduced_stream: Path) -> int | None:
    """Index of the first batch whose (nats, tokens, bytes) differ between two stream files."""
    mine = orjson.loads(recorded_stream.read_bytes())["batches"]
    theirs = orjson.loads(reproduced_stream.read_bytes())["batches"]
    for index, (a, b) in enumerate(zip(mine, theirs, strict=False)):
        if a != b:
            return index
    return None if len(mine) == len(theirs) else min(len(mine), len(theirs))


def describe_differences(differences: list[Difference], first_batch: int | None) -> list[str]:
    """Readable lines: each field with both values, then the first diverging batch."""
    lines = [f"{d.field}: recorded {_short(d.recorded)} / reproduced {_short(d.reproduced)}"
             for d in differences]  # fmt: skip
    if first_batch is not None:
        lines.append(f"the streams first diverge at batch {first_batch}")
    return lines


def _short(value: Any) -> str:
    text = orjson.dumps(value).decode()
    return text if len(text) <= 160 else text[:157] + "…"


def reproduce_record(
    record: Record,
    *,
    bundle: Path,
    data_dir: Path,
    heldout_dir: Path | None,
    tolerance: float,
    recorded_stream: Path | None = None,
    review_verdict: Path | None = None,
    reviewer_keys: tuple[Path, ...] = (),
) -> Record:
    """Evaluate again with the record's config; raise VerificationFailed with a diff if the
    core differs. Returns the reproduced record."""
    if record.inputs is None:
        raise VerificationFailed("reproduce.no_inputs", "the record has no inputs to reproduce")
    config = EvalConfig.model_validate(record.inputs.config)
    with tempfile.TemporaryDirectory(prefix="prism-eval-reproduce-") as out:
        request = RunRequest(
            bundle=bundle, data_dir=data_dir, config=config, heldout_dir=heldout_dir,
            out_dir=Path(out), review_verdict=review_verdict, reviewer_keys=reviewer_keys,
        )  # fmt: skip
        reproduced = evaluate(request, dict(os.environ)).record
        differences = compare_cores(record, reproduced, tolerance)
        first = None
        if differences and recorded_stream is not None:
            first = first_diverging_batch(recorded_stream, Path(out) / "stream.json")
    if differences:
        raise VerificationFailed(
            "reproduce.mismatch",
            f"{len(differences)} field(s) of the reproducible core differ",
            evidence=describe_differences(differences, first),
        )
    return reproduced
