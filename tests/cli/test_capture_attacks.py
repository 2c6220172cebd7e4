"""The capture's guarantees against hostile bundles (docs/design.md §5, §10): the trainer never
holds a batch before its loss is final, the loss is the scorer's, and the prefix audit catches a
predictor that reads ahead. Every attack ends rejected, or scored no better than its honest twin
(`ok_trigram`: the same model and loop without the attack).

The lint is switched off for all of them: it is a courtesy, not the boundary.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import ROOT, CliResult, run_cli

BUNDLES = ROOT / "tests" / "assets" / "bundles"
BUDGET = 8192


def evaluate(bundle: str, tmp_path: Path, **config: object) -> CliResult:
    settings = {"byte_budget": BUDGET, "unsafe_skip_lint_for_tests": True, **config}
    config_file = tmp_path / f"{bundle}.yaml"
    config_file.write_text(yaml.safe_dump(settings))
    result = run_cli("run", BUNDLES / bundle, "--config", config_file)
    assert "Traceback" not in result.stdout.decode()
    return result


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The honest twin's record."""
    result = evaluate("ok_trigram", tmp_path_factory.mktemp("honest"))
    assert result.exit_code == 0, result.stderr
    return result.record


@pytest.mark.parametrize(
    ("bundle", "printed"),
    [
        ("attack_function_mode_scales_losses", None),
        ("attack_forges_capture_late", None),
        ("attack_dispatch_mode_scales_losses", None),
        ("attack_finalizer_hunts_targets", "hunt: 0 later batches found among"),
        ("attack_reads_the_channel", "peeked: 0 bytes waiting on the channel"),
    ],
)
def test_what_the_trainer_does_cannot_change_a_recorded_loss(
    bundle: str, printed: str | None, honest: dict[str, Any], tmp_path: Path
) -> None:
    result = evaluate(bundle, tmp_path)
    record = result.record
    assert record["status"] == "scored", record["reason"]
    # The same stream, bit for bit: nothing the attack did reached the scored forward or the loss.
    assert record["stream"]["sha256"] == honest["stream"]["sha256"]
    assert record["score"]["bpb"] == honest["score"]["bpb"]
    if printed is not None:
        assert printed in result.stderr


PROBE_CATCHES = {"probe.noncausal", "probe.mixes_rows", "probe.nondeterministic"}


@pytest.mark.parametrize(
    ("bundle", "rules"),
    [
        # The probe's own frames hold the unperturbed rows its checks start from.
        ("attack_walks_the_stack", {"train.prefix_mismatch", "probe.noncausal"}),
        ("attack_trains_on_its_inputs", {"train.prefix_mismatch"}),
        ("attack_leaks_only_when_scored", {"train.prefix_mismatch"}),
        ("attack_thread_in_build_model", {"train.prefix_mismatch"}),
        # Its second call with the same rows differs from the first: which check of the probe
        # sees it first depends on the secret causality positions.
        ("attack_keeps_every_tensor", PROBE_CATCHES),
        ("attack_reads_the_next_row", {"probe.mixes_rows"}),
    ],
)
def test_a_predictor_that_reads_ahead_is_caught(
    bundle: str, rules: set[str], tmp_path: Path
) -> None:
    record = evaluate(bundle, tmp_path, prefix_audit_rate=1.0).record
    assert record["status"] == "rejected"
    assert record["reason"]["rule_id"] in rules


def test_the_prefix_audit_catches_a_leak_on_its_first_audited_step(tmp_path: Path) -> None:
    record = evaluate("attack_leaks_only_when_scored", tmp_path, prefix_audit_rate=1.0).record
    message = record["reason"]["message"]
    assert message.startswith("batch 0, row ")
    assert "the scored forward used tokens after the position it predicted" in message
    train = next(stage for stage in record["stages"] if stage["name"] == "train")
    assert train["status"] == "rejected"


def test_a_tensor_subclass_as_logits_is_refused(tmp_path: Path) -> None:
    record = evaluate("attack_tensor_subclass_logits", tmp_path).record
    assert (record["status"], record["reason"]["rule_id"]) == ("rejected", "probe.forward_failed")
    assert "tensor subclass" in record["reason"]["message"]


def test_honest_records_show_the_prefix_audit(honest: dict[str, Any], tmp_path: Path) -> None:
    audited = evaluate("ok_trigram", tmp_path, prefix_audit_rate=1.0).record
    audit = audited["prefix_audit"]
    assert audit["steps"] == audited["run"]["batches"]
    assert audit["positions"] == audit["steps"] * audited["run"]["batch_size"]
    assert audit["max_diff_nats"] <= audit["tolerance_nats"]
    # Auditing never changes what is scored.
    assert audited["stream"]["sha256"] == honest["stream"]["sha256"]


def test_autocast_around_the_forward_trains_as_usual(
    honest: dict[str, Any], tmp_path: Path
) -> None:
    record = evaluate("ok_autocast_forward", tmp_path).record
    assert record["status"] == "scored", record["reason"]
    assert record["score"]["bpb"] == pytest.approx(honest["score"]["bpb"], rel=0.03)


def test_autocast_around_the_whole_loop_is_scored_in_the_evaluators_precision(
    honest: dict[str, Any], tmp_path: Path
) -> None:
    record = evaluate("ok_autocast_whole_loop", tmp_path).record
    assert record["status"] == "scored", record["reason"]
    audit = record["audit"]
    # Batch 0 is scored from the committed float32 weights in float32, exactly as the referee
    # replays it: the loop's autocast never reaches the scored forward.
    assert audit["step0_reported_nats"] == audit["step0_replayed_nats"]
    assert audit["step0_reported_nats"] == honest["audit"]["step0_reported_nats"]
    assert record["score"]["bpb"] == pytest.approx(honest["score"]["bpb"], rel=0.03)


def test_a_predictor_cannot_write_the_snapshot_the_auditor_reads(
    honest: dict[str, Any], tmp_path: Path
) -> None:
    result = evaluate("attack_writes_the_snapshot", tmp_path)
    record = result.record
    assert record["status"] == "scored", record["reason"]
    assert "snapshot: 1 descriptor(s), 5 writes refused" in result.stderr
    assert record["stream"]["sha256"] == honest["stream"]["sha256"]
