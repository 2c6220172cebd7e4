"""Attack bundles built per test, run through the real CLI with the lint switched off.

The lint is a friendly first pass, not the boundary: every escape test runs with
`unsafe_skip_lint_for_tests`, so what stops the attack is the sandbox alone.
"""

from __future__ import annotations

import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import CliResult, run_cli

if not sys.platform.startswith("linux"):
    pytest.skip("the sandbox is Linux-only", allow_module_level=True)

ARCHITECTURE = """
import torch.nn as nn


class Bigram(nn.Module):
    def __init__(self, vocab_size):
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 16)
        self.head = nn.Linear(16, vocab_size)

    def forward(self, tokens):
        return self.head(self.embed(tokens))


def build_model(ctx):
    return Bigram(ctx.vocab_size)
"""

TRAINING = """
import torch
import torch.nn.functional as F

{attack}


def train(ctx):
    attack(ctx)
    model = ctx.build_model()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for batch in ctx.iter_train_batches(model, batch_size=4, seq_len=32):
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
"""

RunAttack = Callable[..., CliResult]


@pytest.fixture
def run_attack(tmp_path: Path) -> RunAttack:
    """Build a bundle whose training.py defines `attack(ctx)` and run it, lint off."""

    def run(
        attack: str,
        *,
        architecture_prelude: str = "",
        config: dict[str, object] | None = None,
        args: tuple[str | Path, ...] = (),
        env: dict[str, str] | None = None,
    ) -> CliResult:
        bundle = tmp_path / "bundle"
        bundle.mkdir()
        (bundle / "architecture.py").write_text(
            textwrap.dedent(architecture_prelude) + ARCHITECTURE
        )
        (bundle / "training.py").write_text(TRAINING.format(attack=textwrap.dedent(attack)))
        settings = {
            "unsafe_skip_lint_for_tests": True,
            "byte_budget": 4096,
            "train_timeout_s": 60,
            **(config or {}),
        }
        config_file = tmp_path / "config.yaml"
        config_file.write_text(yaml.safe_dump(settings))
        return run_cli("run", bundle, "--config", config_file, *args, env=env)

    return run


def reason(result: CliResult) -> tuple[str, str, str]:
    """(status, rule id, message) of the printed record."""
    record = result.record
    return record["status"], record["reason"]["rule_id"], record["reason"]["message"]


def layer_state(result: CliResult, name: str) -> str:
    """The recorded state of one isolation layer."""
    states = {layer["name"]: layer["state"] for layer in result.record["isolation"]}
    return states[name]
