"""Compare two signed records' reproducible cores (make test-image: inside vs outside the image).

Both records are verified first (schema, signature, score recomputed from the figures; with
--pubkey, signed by that key; with --stream, their stream files). Then their reproducible
cores (`prism_eval.supervisor.reproduce.core_of`: subject, inputs, run geometry and counts, stream,
audit, score) must be equal field for field: the image runs the same code on the same
hardware, so the comparison is exact (tolerance 0). --expect-image-digest and
--expect-source-commit check what the image wrote into `actual`'s evaluator block. Exit 0
when everything matches, 1 with every problem listed otherwise.

    python scripts/compare_record_cores.py outside/record.json inside/record.json \\
        --pubkey test.pub --stream outside/stream.json --stream inside/stream.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from prism_eval.errors import PrismError
from prism_eval.supervisor.attest.record import Record
from prism_eval.supervisor.attest.verify import ANY_SIGNER, TrustedKeys, verify_record
from prism_eval.supervisor.reproduce import (
    compare_cores,
    describe_differences,
    first_diverging_batch,
)

# Only to describe a mismatch: floats that agree to this are a numerical, not a logical, drift.
NUMERIC_TOLERANCE = 1e-6


def _load(path: Path, pubkey: Path | None, stream: Path | None) -> Record:
    trust = TrustedKeys.from_files([pubkey]) if pubkey else ANY_SIGNER
    return verify_record(path.read_bytes(), trust, stream).record


def _summary(label: str, record: Record) -> str:
    score = f"bpb {record.score.bpb!r}" if record.score else "no score"
    stream = record.stream.sha256[:16] + "…" if record.stream else "no stream"
    return f"{label}: {record.status}, {score}, stream {stream}, evaluator {record.evaluator}"


def main(argv: list[str] | None = None) -> int:
    """Verify both records, compare their cores, print the outcome; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("expected", type=Path, help="the reference record (outside)")
    parser.add_argument("actual", type=Path, help="the record to compare (inside)")
    parser.add_argument("--pubkey", type=Path, help="the key both records must be signed by")
    parser.add_argument(
        "--stream", type=Path, action="append", default=[], help="stream.json of each, in order"
    )
    parser.add_argument("--expect-status", default="scored", help="status both must have")
    parser.add_argument("--expect-image-digest", help="actual's evaluator.image_digest")
    parser.add_argument(
        "--expect-source-commit", help="actual's evaluator.source_commit ('' for none)"
    )
    args = parser.parse_args(argv)
    if len(args.stream) not in (0, 2):
        parser.error("give --stream twice (expected's, then actual's) or not at all")
    streams = args.stream or [None, None]
    try:
        expected = _load(args.expected, args.pubkey, streams[0])
        actual = _load(args.actual, args.pubkey, streams[1])
    except PrismError as exc:
        print(f"compare_record_cores: a record does not verify: {exc}", file=sys.stderr)
        for line in exc.evidence:
            print(f"  {line}", file=sys.stderr)
        return 1
    print(_summary("expected", expected))
    print(_summary("actual  ", actual))
    problems = [
        f"{label} status is {record.status}, not {args.expect_status}"
        for label, record in (("expected", expected), ("actual", actual))
        if record.status != args.expect_status
    ]
    evaluator = actual.evaluator
    if args.expect_image_digest is not None and evaluator.image_digest != args.expect_image_digest:
        problems.append(f"actual image_digest is {evaluator.image_digest!r}, "
                        f"not {args.expect_image_digest!r}")  # fmt: skip
    commit = args.expect_source_commit or None
    if args.expect_source_commit is not None and evaluator.source_commit != commit:
        problems.append(f"actual source_commit is {evaluator.source_commit!r}, not {commit!r}")
    differences = compare_cores(expected, actual, tolerance=0.0)
    first = None
    if differences and streams[0] is not None and streams[1] is not None:
        first = first_diverging_batch(streams[0], streams[1])
    problems += describe_differences(differences, first)
    if differences and not compare_cores(expected, actual, tolerance=NUMERIC_TOLERANCE):
        problems.append(
            f"(equal within a relative {NUMERIC_TOLERANCE:g}: the floats differ in their last "
            "bits — a different reduction order, e.g. another thread count, not another input)"
        )
    if problems:
        print(f"compare_record_cores: {len(problems)} problem(s):", file=sys.stderr)
        for line in problems:
            print(f"  {line}", file=sys.stderr)
        return 1
    print("reproducible cores are identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
