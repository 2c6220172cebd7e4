"""The leaderboard: verified records only, best per submitter, the reference's tie-break."""

from __future__ import annotations

import json
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from prism_eval.supervisor.attest import issuing as attest
from prism_eval.supervisor.attest.verify import ANY_SIGNER, TrustedKeys
from prism_eval.supervisor.formula import BatchFigures
from prism_eval.supervisor.present.leaderboard import build_leaderboard
from tests.supervisor.attest.test_record_verify import make_record, signed_bytes, write_public_key

IDENTITY = attest.SigningIdentity(Ed25519PrivateKey.generate(), "key")


def _record(
    tmp_path: Path, name: str, nats: float, submitter: str, submitted_at: str, digest: str
) -> Path:
    record = make_record([BatchFigures(nats=nats, tokens=100, bytes=100)], IDENTITY.signer())
    subject = record.subject.model_copy(
        update={"submitter": submitter, "submitted_at": submitted_at, "bundle_sha256": digest}
    )
    path = tmp_path / f"{name}.json"
    path.write_bytes(signed_bytes(record.model_copy(update={"subject": subject}), IDENTITY))
    return path


def trusting(tmp_path: Path) -> TrustedKeys:
    """The validator's key, as a verifier pins it."""
    return TrustedKeys.from_files([write_public_key(tmp_path / "v.pub", IDENTITY.key)])


def test_crafted_records_rank_in_the_reference_order(tmp_path: Path) -> None:
    paths = [
        _record(tmp_path, "alice-old", 90.0, "alice", "2026-01-01T00:00:00Z", "a" * 64),
        _record(tmp_path, "alice-best", 60.0, "alice", "2026-01-03T00:00:00Z", "b" * 64),
        _record(tmp_path, "bob", 60.0, "bob", "2026-01-02T00:00:00Z", "c" * 64),  # ties alice
        _record(tmp_path, "carol", 50.0, "carol", "2026-01-05T00:00:00Z", "d" * 64),
        _record(tmp_path, "dave", 80.0, "dave", "2026-01-01T00:00:00Z", "e" * 64),
    ]
    board = build_leaderboard(paths, trusting(tmp_path))
    # carol has the lowest bpb; bob and alice tie, bob submitted first; alice's old run drops.
    assert [e.submitter for e in board.ranking] == ["carol", "bob", "alice", "dave"]
    assert board.ranking[2].path.endswith("alice-best.json")
    assert board.weights == {"carol": 1.0, "bob": 0.0, "alice": 0.0, "dave": 0.0}
    assert board.excluded == []


def test_tampered_and_foreign_records_are_excluded_with_a_reason(tmp_path: Path) -> None:
    good = _record(tmp_path, "good", 60.0, "alice", "2026-01-01T00:00:00Z", "a" * 64)
    tampered = _record(tmp_path, "tampered", 70.0, "mallory", "2026-01-01T00:00:00Z", "b" * 64)
    document = json.loads(tampered.read_bytes())
    document["record"]["subject"]["submitter"] = "eve"
    tampered.write_text(json.dumps(document))
    stranger = attest.SigningIdentity(Ed25519PrivateKey.generate(), "key")
    foreign = tmp_path / "foreign.json"
    record = make_record([BatchFigures(nats=10.0, tokens=100, bytes=100)], stranger.signer())
    foreign.write_bytes(signed_bytes(record, stranger))
    board = build_leaderboard([good, tampered, foreign], trusting(tmp_path))
    assert [e.submitter for e in board.ranking] == ["alice"]
    reasons = dict(board.excluded)
    assert "verify.bad_signature" in reasons[str(tampered)]
    assert "verify.wrong_key" in reasons[str(foreign)]


def test_proportional_weights_sum_to_one(tmp_path: Path) -> None:
    paths = [
        _record(tmp_path, "a", 60.0, "a", "2026-01-01T00:00:00Z", "a" * 64),
        _record(tmp_path, "b", 80.0, "b", "2026-01-01T00:00:00Z", "b" * 64),
    ]
    board = build_leaderboard(paths, trusting(tmp_path), "proportional")
    assert abs(sum(board.weights.values()) - 1.0) < 1e-12
    assert board.weights["a"] > board.weights["b"]


def test_a_strangers_record_ranks_only_when_the_caller_asks_for_integrity_alone(
    tmp_path: Path,
) -> None:
    mine = _record(tmp_path, "mine", 60.0, "alice", "2026-01-01T00:00:00Z", "a" * 64)
    stranger = attest.SigningIdentity(Ed25519PrivateKey.generate(), "key")
    record = make_record([BatchFigures(nats=0.0, tokens=100, bytes=100)], stranger.signer())
    theirs = tmp_path / "theirs.json"
    theirs.write_bytes(signed_bytes(record, stranger))  # bpb 0.0: would rank first
    assert [e.path for e in build_leaderboard([mine, theirs], trusting(tmp_path)).ranking] == [
        str(mine)
    ]
    unverified = build_leaderboard([mine, theirs], ANY_SIGNER)
    assert [e.path for e in unverified.ranking] == [str(theirs), str(mine)]
