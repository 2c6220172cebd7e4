"""Known attacks on the score (DESIGN §10): each ends in a record with its status and rule id."""

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
    ],
)
def test_non_causal_model_is_rejected_by_the_probe(bundle: str, mode: str, tmp_path: Path) -> None:
    status, rule, message = _run(bundle, tmp_path)
    assert (status, rule) == ("rejected", "probe.noncausal")
    assert mode in message


def test_model_that_peeks_late_is_caught_by_a_spot_check(tmp_path: Path) -> None:
    status, rule, message = _run("attack_peek_late", tmp_path, spot_check_rate=1.0)
    assert (status, rule) == ("rejected", "train.noncausal")
    assert message.startswith("batch ")
