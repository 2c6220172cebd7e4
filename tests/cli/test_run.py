"""`prism-eval run` end to end: real workers, real training, real records."""

from __future__ import annotations

import math
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from prism_eval.supervisor.attest.verify import ANY_SIGNER, verify_record
from prism_eval.supervisor.stages.step_clock import PHASES
from tests.conftest import BUNDLES, DATA, ROOT, TEST_BUDGET, CliResult, run_cli


def test_example_is_scored_with_a_plausible_bpb(example_run: tuple[CliResult, Path]) -> None:
    result, _ = example_run
    assert result.exit_code == 0, result.stderr
    record = result.record
    assert record["status"] == "scored"
    assert [s["name"] for s in record["stages"]] == [
        "inputs", "intake", "contract", "lint", "review", "probe", "train", "audit", "ranks",
        "score", "record",
    ]  # fmt: skip
    # A random-init byte model starts near log2(257) ≈ 8.0 bits; a little training lowers it.
    assert 2.0 < record["score"]["bpb"] < math.log2(257)
    assert record["score"]["final_score"] == 1 / (1 + record["score"]["bpb"])
    run = record["run"]
    assert run["bytes"] >= TEST_BUDGET and run["stopped_by"] == "budget"
    assert run["tokens"] == run["batches"] * run["batch_size"] * (run["seq_len"] - 1)
    # Where a step's time went, phase by phase (timings: never part of the reproducible core).
    assert set(run["step_ms"]) == set(PHASES)
    assert all(ms >= 0 for ms in run["step_ms"].values()) and run["step_ms"]["predict"] > 0
    assert 0 < run["first_batch_seconds"] < record["stages"][6]["seconds"]
    assert "a scored step took" in result.stderr and "predict" in result.stderr
    assert record["signer"]["mode"] == "ephemeral"
    subject = record["subject"]
    assert (subject["architecture_name"], subject["kind"]) == ("Tiny causal transformer", "full")
    assert 0 < subject["compressed_bytes"] < sum(f["bytes"] for f in subject["files"])


def test_example_record_verifies_with_its_stream(example_run: tuple[CliResult, Path]) -> None:
    result, out = example_run
    verified = verify_record(result.stdout.strip(), ANY_SIGNER, out / "stream.json")
    assert verified.record.status == "scored"
    assert (out / "record.json").read_bytes() == result.stdout
    assert (out / "final.safetensors").stat().st_size > 0


def test_two_runs_are_bit_identical(example_run: tuple[CliResult, Path]) -> None:
    first = example_run[0].record
    second = run_cli(
        "run", BUNDLES / "ok_tiny_transformer", "--byte-budget", str(TEST_BUDGET)
    ).record
    assert second["stream"] == first["stream"]
    assert second["score"] == first["score"]
    assert second["subject"] == first["subject"]


def test_worker_output_never_reaches_stdout(example_run: tuple[CliResult, Path]) -> None:
    result, _ = example_run
    assert "prism-eval: train: passed" in result.stderr
    assert result.stdout.count(b"\n") == 1


@pytest.mark.parametrize(
    ("bundle", "status", "exit_code", "rule_id"),
    [
        ("reject_build_raises", "rejected", 3, "probe.build_failed"),
        ("reject_not_a_module", "rejected", 3, "probe.not_a_module"),
        ("reject_wrong_shape", "rejected", 3, "probe.bad_output_shape"),
        ("reject_narrow_logits", "rejected", 3, "probe.narrow_logits"),
        ("reject_custom_tokenizer", "rejected", 3, "train.custom_tokenizer"),
        ("fail_never_iterates", "failed", 4, "train.no_batches"),
        ("fail_train_raises", "failed", 4, "train.exception"),
        ("fail_stops_early", "failed", 4, "train.stream_incomplete"),
        ("reject_missing_script", "rejected", 3, "contract.missing_script"),
        ("reject_bad_yaml", "rejected", 3, "contract.bad_yaml"),
        ("reject_unknown_key", "rejected", 3, "contract.unknown_key"),
        ("reject_missing_symbol", "rejected", 3, "contract.missing_symbol"),
        ("reject_lint_subprocess", "rejected", 3, "lint.process"),
    ],
)
def test_bad_bundle_ends_in_a_record_with_status_and_rule(
    bundle: str, status: str, exit_code: int, rule_id: str
) -> None:
    result = run_cli("run", BUNDLES / bundle, "--byte-budget", str(TEST_BUDGET))
    assert result.exit_code == exit_code, result.stderr
    record = result.record
    assert (record["status"], record["reason"]["rule_id"]) == (status, rule_id)
    assert record["reason"]["message"]
    assert "Traceback" not in result.stdout.decode()
    ended = [s for s in record["stages"] if s["status"] not in ("passed", "skipped")]
    assert ended[0]["rule_id"] == rule_id
    verify_record(result.stdout.strip(), ANY_SIGNER)


def test_reference_interface_bundle_scores_with_gpt2() -> None:
    result = run_cli("run", BUNDLES / "ok_reference_interface", "--byte-budget", "8192")
    assert result.exit_code == 0, result.stderr
    assert result.record["inputs"]["tokenizer"]["name"] == "gpt2"
    assert result.record["inputs"]["tokenizer"]["vocab_size"] == 50257


def test_manifest_hash_mismatch_is_an_error(tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    shard = sorted((data / "train").glob("*.jsonl"))[0]
    content = bytearray(shard.read_bytes())
    content[100] ^= 1
    shard.write_bytes(bytes(content))
    result = run_cli("run", BUNDLES / "ok_tiny_transformer", "--data", data)
    assert result.exit_code == 5
    assert result.record["status"] == "error"
    assert result.record["reason"]["rule_id"] == "data.hash_mismatch"
    assert shard.name in result.record["reason"]["message"]


def test_missing_tokenizer_file_is_an_error(tmp_path: Path) -> None:
    env = {"PRISM_EVAL_TOKENIZER_DIR": str(tmp_path)}
    result = run_cli("run", BUNDLES / "ok_reference_interface", env=env)
    assert result.exit_code == 5
    assert result.record["reason"]["rule_id"] == "inputs.tokenizer_missing"


@pytest.mark.parametrize("content", [b"", b"not a zip at all"])
def test_unreadable_or_empty_zip_is_rejected(tmp_path: Path, content: bytes) -> None:
    archive = tmp_path / "bundle.zip"
    if content:
        archive.write_bytes(content)
    else:
        zipfile.ZipFile(archive, "w").close()
    result = run_cli("run", archive)
    assert result.exit_code == 3
    assert result.record["status"] == "rejected"
    assert result.record["reason"]["rule_id"].startswith("intake.")


def test_bad_config_file_still_prints_an_error_record(tmp_path: Path) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("byte_budgett: 12\n")
    result = run_cli("run", BUNDLES / "ok_tiny_transformer", "--config", config)
    assert result.exit_code == 5
    assert result.record["reason"]["rule_id"] == "config.invalid"
    assert result.record["inputs"] is None


def test_unwritable_out_ends_in_an_error_record_before_any_work(tmp_path: Path) -> None:
    taken = tmp_path / "a-file"
    taken.write_text("not a directory")
    result = run_cli("run", BUNDLES / "ok_tiny_transformer", "--out", taken)
    assert result.exit_code == 5
    assert result.record["reason"]["rule_id"] == "output.unwritable"
    assert str(taken) in result.record["reason"]["message"]
    assert [s["status"] for s in result.record["stages"][:2]] == ["error", "skipped"]
    assert "Traceback" not in result.stderr


def test_record_states_worker_and_host_layers(example_run: tuple[CliResult, Path]) -> None:
    from prism_eval.supervisor.config import ISOLATION_LAYERS
    from prism_eval.supervisor.sandbox.host import HOST_LAYERS

    names = [layer["name"] for layer in example_run[0].record["isolation"]]
    assert names == [*ISOLATION_LAYERS, *HOST_LAYERS]


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_run_still_prints_its_record(signal_number: int, tmp_path: Path) -> None:
    # A Kubernetes eviction or a CI timeout sends SIGTERM; Ctrl-C sends SIGINT.
    process = subprocess.Popen(
        [sys.executable, "-m", "prism_eval", "run", str(BUNDLES / "ok_tiny_transformer"),
         "--byte-budget", str(64 * 2**20)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
    )  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:  # wait until training is under way
        if b"training:" in line:
            break
    time.sleep(2)
    process.send_signal(signal_number)
    stdout, _ = process.communicate(timeout=120)
    result = CliResult(process.returncode, stdout, "")
    record = result.record
    assert result.exit_code == 5
    assert (record["status"], record["reason"]["rule_id"]) == ("error", "run.interrupted")
    name = signal.Signals(signal_number).name
    assert record["reason"]["message"] == (
        f"the run was interrupted by {name} during the train stage"
    )
    stages = {stage["name"]: stage["status"] for stage in record["stages"]}
    assert stages["probe"] == "passed" and stages["train"] == "error"
    assert stages["audit"] == "skipped"
    assert record["run"]["batches"] > 0  # what was scored before the signal is kept


def test_a_zip_on_standard_input_is_evaluated_like_the_file(tmp_path: Path) -> None:
    archive = tmp_path / "bundle.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted((BUNDLES / "ok_tiny_transformer").iterdir()):
            zf.write(path, path.name)
    from_file = run_cli("run", archive, "--byte-budget", "4096")
    completed = subprocess.run(
        [sys.executable, "-m", "prism_eval", "run", "-", "--byte-budget", "4096"],
        stdin=archive.open("rb"), capture_output=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    from_stdin = CliResult(completed.returncode, completed.stdout, completed.stderr.decode())
    assert from_stdin.exit_code == 0, from_stdin.stderr
    assert from_stdin.record["subject"]["source"] == "-"
    for field in ("bundle_sha256", "files"):
        assert from_stdin.record["subject"][field] == from_file.record["subject"][field]
    assert from_stdin.record["stream"] == from_file.record["stream"]


def test_garbage_on_standard_input_is_rejected_as_a_bad_archive() -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "prism_eval", "run", "-"],
        input=b"not a zip at all", capture_output=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    record = CliResult(completed.returncode, completed.stdout, "").record
    assert (completed.returncode, record["reason"]["rule_id"]) == (3, "intake.bad_archive")
