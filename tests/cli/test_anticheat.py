"""Known attacks on the score (docs/design.md §10): each ends in a record with its status and rule
id."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.conftest import ROOT, run_cli

ATTACKS = ROOT / "tests" / "assets" / "bundles"


def _run(bundle: str, tmp_path: Path, **config: object) -> tuple[str, str, str]:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"byte_budget": 8192, **config}))
    result = run_cli("run", ATTACKS / bundle, "--config", config_file)
    record = result.record
    assert "Traceback" not in result.stdout.decode()
    return record["status"], record["reason"]["rule_id"], record["reason"]["message"]


@pytest.mark.parametrize(
    ("bundle", "mode"),
    [
        ("attack_mix_over_time", "eval no grad"),
        ("attack_next_token_embedding", "eval no grad"),
        ("attack_peek_under_no_grad", "eval no grad"),
        ("attack_peek_in_eval_mode", "eval no grad"),
        ("attack_peek_after_calls", "after warm calls"),
        ("attack_hides_leak_behind_huge_logit", "eval no grad"),
    ],
)
def test_non_causal_model_is_rejected_by_the_probe(bundle: str, mode: str, tmp_path: Path) -> None:
    status, rule, message = _run(bundle, tmp_path)
    assert (status, rule) == ("rejected", "probe.noncausal")
    assert mode in message


def test_model_that_peeks_late_is_caught_during_training(tmp_path: Path) -> None:
    # The spot check (after the reveal) or the prefix audit (before it), whichever draws first.
    status, rule, message = _run("attack_peek_late", tmp_path, spot_check_rate=1.0)
    assert (status, rule) in {
        ("rejected", "train.noncausal"),
        ("rejected", "train.prefix_mismatch"),
    }
    assert message.startswith("batch ")


@pytest.mark.parametrize(
    ("bundle", "status", "rule_id", "config"),
    [
        ("attack_changes_init_before_scoring", "rejected", "audit.step0_mismatch", {}),
        ("attack_state_dict_raises", "failed", "train.save_failed", {}),
        ("attack_weights_in_buffer", "rejected", "probe.too_many_params", {}),
        ("attack_lazy_growth", "rejected", "probe.too_many_params", {}),
        ("attack_nonfinite_logits", "rejected", "probe.nonfinite_logits", {}),
    ],
)
def test_attack_ends_in_its_rule(
    bundle: str, status: str, rule_id: str, config: dict[str, object], tmp_path: Path
) -> None:
    assert _run(bundle, tmp_path, **config)[:2] == (status, rule_id)


def test_training_another_model_scores_the_model_handed_to_the_instrument(
    tmp_path: Path,
) -> None:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump({"byte_budget": 8192}))
    result = run_cli("run", ATTACKS / "attack_trains_another_model", "--config", config_file)
    assert result.record["status"] == "scored"
    # The handed model never trains: its stream stays at random-init level (log2(257) ≈ 8).
    assert result.record["score"]["bpb"] > 7.5


def test_fake_records_and_manifests_written_by_the_miner_are_ignored(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_cli(
        "run", ATTACKS / "attack_miner_manifest", "--byte-budget", "8192", "--out", out
    )
    assert result.exit_code == 0, result.stderr
    record = result.record
    assert record["status"] == "scored" and record["score"]["bpb"] > 1.0
    assert '"final_score": 0.99' in result.stderr  # the print went to stderr, marked as worker
    assert b"0.99" not in result.stdout
    assert record["subject"]["files"][0]["path"] == "MANIFEST.json"  # evaluated, not obeyed


def test_heldout_figures_reach_the_score_and_verify(tmp_path: Path) -> None:
    result = run_cli(
        "run", ROOT / "examples" / "bundles" / "ok_tiny_transformer",
        "--byte-budget", "16384", "--heldout", ROOT / "examples" / "data",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    record = result.record
    audit, score = record["audit"], record["score"]
    assert audit["step0_replayed_nats"] == audit["step0_reported_nats"]
    assert score["heldout_delta"] == audit["heldout_twin_bpb"] - audit["heldout_trained_bpb"]
    assert score["heldout_delta"] > 0  # training helps on unseen text
    assert score["gap"] is not None
    record_file = tmp_path / "record.json"
    record_file.write_bytes(result.stdout)
    assert run_cli("verify", record_file, "--any-signer").exit_code == 0
