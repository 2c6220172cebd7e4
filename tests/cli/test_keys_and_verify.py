"""keygen, run --key, verify --pubkey, schema: the signer's and the auditor's commands."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import jsonschema
import pytest

from tests.conftest import BUNDLES, CliResult, run_cli


@pytest.fixture(scope="module")
def signed_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A run signed by a fresh key pair: (record file, stream file, public key)."""
    home = tmp_path_factory.mktemp("keys")
    keygen = run_cli("keygen", "--out", home / "validator")
    assert keygen.exit_code == 0, keygen.stderr
    out = home / "out"
    result = run_cli(
        "run", BUNDLES / "ok_tiny_transformer", "--byte-budget", "4096",
        "--key", home / "validator.key", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert result.record["signer"]["mode"] == "key"
    return out / "record.json", out / "stream.json", home / "validator.pub"


def test_keygen_writes_a_private_key_only_its_owner_can_read(tmp_path: Path) -> None:
    result = run_cli("keygen", "--out", tmp_path / "k")
    assert result.exit_code == 0
    assert stat.S_IMODE((tmp_path / "k.key").stat().st_mode) == 0o600
    assert run_cli("keygen", "--out", tmp_path / "k").exit_code == 5


def test_signed_record_verifies_with_its_public_key(signed_run: tuple[Path, Path, Path]) -> None:
    record, stream, pubkey = signed_run
    result = run_cli("verify", record, "--pubkey", pubkey, "--stream", stream)
    assert result.exit_code == 0, result.stderr
    summary = result.document()
    assert summary["verified"] is True and summary["identity"] == "pinned"


def test_tampered_record_fails_verification(
    signed_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    record, _, pubkey = signed_run
    document = json.loads(record.read_bytes())
    document["record"]["score"]["bpb"] -= 0.5
    tampered = tmp_path / "tampered.json"
    tampered.write_text(json.dumps(document))
    result = run_cli("verify", tampered, "--pubkey", pubkey)
    assert result.exit_code == 1
    assert "verify.bad_signature" in result.stderr
    assert result.stdout == b""


def test_record_signed_by_another_key_fails_against_the_pinned_key(
    signed_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    record, _, _ = signed_run
    run_cli("keygen", "--out", tmp_path / "other")
    result = run_cli("verify", record, "--pubkey", tmp_path / "other.pub")
    assert result.exit_code == 1
    assert "verify.wrong_key" in result.stderr


def test_changed_stream_file_fails_verification(
    signed_run: tuple[Path, Path, Path], tmp_path: Path
) -> None:
    record, stream, pubkey = signed_run
    figures = json.loads(stream.read_bytes())
    figures["batches"][0][0] += 1.0
    changed = tmp_path / "stream.json"
    changed.write_text(json.dumps(figures))
    result = run_cli("verify", record, "--pubkey", pubkey, "--stream", changed)
    assert result.exit_code == 1
    assert "stream.sha256" in result.stderr


def test_schema_is_a_json_schema_that_accepts_a_real_record(
    signed_run: tuple[Path, Path, Path],
) -> None:
    result: CliResult = run_cli("schema")
    assert result.exit_code == 0
    schema = result.document()
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(json.loads(signed_run[0].read_bytes()), schema)


def test_data_verify_checks_the_embedded_data() -> None:
    result = run_cli("data", "verify", "examples/data")
    assert result.exit_code == 0, result.stderr
    assert result.document()["verified"] is True


def test_data_prepare_builds_a_dir_that_runs(tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    lines = [json.dumps({"id": f"doc-{i}", "text": f"Document {i}. " * 40}) for i in range(200)]
    source.write_text("\n".join(lines) + "\n")
    prepared = run_cli("data", "prepare", source, "--out", tmp_path / "data")
    assert prepared.exit_code == 0, prepared.stderr
    assert prepared.document()["splits"]["train"]["documents"] > 150
    assert run_cli("data", "verify", tmp_path / "data").exit_code == 0


def test_usage_error_exits_2() -> None:
    assert run_cli("run").exit_code == 2
    assert run_cli("no-such-command").exit_code == 2


def test_verify_without_a_trusted_key_refuses(signed_run: tuple[Path, Path, Path]) -> None:
    record, _, _ = signed_run
    result = run_cli("verify", record)
    assert result.exit_code == 1
    assert "verify.no_trusted_key" in result.stderr
    assert result.stdout == b""


def test_verify_any_signer_says_the_identity_is_unverified(
    signed_run: tuple[Path, Path, Path],
) -> None:
    record, _, _ = signed_run
    result = run_cli("verify", record, "--any-signer")
    assert result.exit_code == 0, result.stderr
    assert result.document()["identity"] == "unverified"
    assert "integrity only" in result.stderr


def test_leaderboard_without_a_trusted_key_refuses(signed_run: tuple[Path, Path, Path]) -> None:
    record, _, pubkey = signed_run
    refused = run_cli("leaderboard", record)
    assert refused.exit_code == 1 and "verify.no_trusted_key" in refused.stderr
    pinned = run_cli("leaderboard", record, "--keyring", pubkey)
    assert pinned.exit_code == 0, pinned.stderr
    assert pinned.document()["identity"] == "pinned"
    assert len(pinned.document()["ranking"]) == 1
