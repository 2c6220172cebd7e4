"""The auditor's tools: verify --reproduce and export --dsse."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path

import pytest

from prism_eval.errors import VerificationFailed
from prism_eval.supervisor.attest.dsse import verify_envelope
from prism_eval.supervisor.attest.record import SignedRecord
from prism_eval.supervisor.attest.signing import public_key_from_raw_b64
from prism_eval.supervisor.reproduce import compare_cores
from tests.conftest import BUNDLES, TEST_BUDGET, CliResult, run_cli

EXAMPLE = BUNDLES / "ok_tiny_transformer"


def test_unchanged_bundle_reproduces_bit_for_bit(example_run: tuple[CliResult, Path]) -> None:
    _, out = example_run
    result = run_cli(
        "verify", out / "record.json", "--any-signer", "--reproduce", "--bundle", EXAMPLE,
        "--stream", out / "stream.json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.document()["reproduced"] is True


def test_changed_bundle_does_not_reproduce_and_the_diff_says_where(
    example_run: tuple[CliResult, Path], tmp_path: Path
) -> None:
    _, out = example_run
    changed = tmp_path / "bundle"
    shutil.copytree(EXAMPLE, changed)
    training = changed / "training.py"
    training.write_text(training.read_text().replace("lr=3e-3", "lr=1e-3"))
    result = run_cli(
        "verify", out / "record.json", "--any-signer", "--reproduce", "--bundle", changed,
        "--stream", out / "stream.json",
    )  # fmt: skip
    assert result.exit_code == 1
    assert "reproduce.mismatch" in result.stderr
    assert "subject.bundle_sha256: recorded" in result.stderr
    assert "score: recorded" in result.stderr
    # Batch 0 is scored before any training, so the streams part at batch 1.
    assert "the streams first diverge at batch 1" in result.stderr


def test_another_seed_changes_the_core(example_run: tuple[CliResult, Path]) -> None:
    first = SignedRecord.model_validate_json(example_run[0].stdout).record
    other = run_cli("run", EXAMPLE, "--byte-budget", str(TEST_BUDGET), "--seed", "7")
    second = SignedRecord.model_validate_json(other.stdout).record
    fields = {d.field for d in compare_cores(first, second, 0.0)}
    assert {"inputs.seed", "inputs.config_sha256", "stream.sha256", "score"} <= fields
    assert "subject.bundle_sha256" not in fields


def test_dsse_export_verifies_and_a_flipped_byte_does_not(
    example_run: tuple[CliResult, Path], tmp_path: Path
) -> None:
    result, out = example_run
    exported = run_cli("export", "--dsse", out / "record.json")
    assert exported.exit_code == 0, exported.stderr
    envelope = exported.document()
    key = public_key_from_raw_b64(result.record["signer"]["public_key"])
    statement = verify_envelope(json.dumps(envelope).encode(), key)
    assert statement["subject"][0]["digest"]["sha256"] == result.record["subject"]["bundle_sha256"]
    assert statement["predicate"] == result.record
    payload = bytearray(base64.b64decode(envelope["payload"]))
    payload[len(payload) // 2] ^= 1
    envelope["payload"] = base64.b64encode(bytes(payload)).decode()
    with pytest.raises(VerificationFailed) as caught:
        verify_envelope(json.dumps(envelope).encode(), key)
    assert caught.value.rule_id == "verify.bad_signature"


def test_leaderboard_ranks_real_records_and_drops_a_tampered_one(
    example_run: tuple[CliResult, Path], tmp_path: Path
) -> None:
    _, out = example_run
    mine = run_cli(
        "run", EXAMPLE, "--byte-budget", "4096", "--submitter", "alice",
        "--submitted-at", "2026-11-01T12:00:00",
    )  # fmt: skip
    assert mine.record["subject"]["submitter"] == "alice"
    assert mine.record["subject"]["submitted_at"] == "2026-11-01T12:00:00Z"
    alice = tmp_path / "alice.json"
    alice.write_bytes(mine.stdout)
    tampered = tmp_path / "tampered.json"
    document = json.loads((out / "record.json").read_bytes())
    document["record"]["subject"]["submitter"] = "mallory"
    tampered.write_text(json.dumps(document))
    result = run_cli(
        "leaderboard", alice, out / "record.json", tampered, "--weights", "--any-signer"
    )
    assert result.exit_code == 0, result.stderr
    board = result.document()
    assert len(board["ranking"]) == 2
    assert {entry["submitter"] for entry in board["ranking"]} >= {"alice"}
    assert {entry["architecture_name"] for entry in board["ranking"]} == {"Tiny causal transformer"}
    assert all(entry["compressed_bytes"] > 0 for entry in board["ranking"])
    assert board["excluded"][0]["record"] == str(tampered)
    assert sorted(board["weights"].values()) == [0.0, 1.0]
