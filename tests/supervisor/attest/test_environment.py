"""The evaluator's identity in a record: the source commit of the checkout it runs from."""

from __future__ import annotations

import subprocess

import pytest

from prism_eval.supervisor.attest.environment import evaluator_identity
from tests.conftest import ROOT


def test_a_run_from_a_checkout_names_its_commit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PRISM_EVAL_SOURCE_COMMIT", raising=False)
    head = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True
    )
    if head.returncode != 0:
        pytest.skip("not a git checkout")
    assert evaluator_identity("0.1.0").source_commit == head.stdout.strip()


def test_the_environment_names_the_commit_of_an_installed_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PRISM_EVAL_SOURCE_COMMIT", "0" * 40)  # what the image sets
    assert evaluator_identity("0.1.0").source_commit == "0" * 40
