"""Shared fixtures: the repository's example bundles and data, and a `prism-eval` runner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUNDLES = ROOT / "examples" / "bundles"
DATA = ROOT / "examples" / "data"
# Small enough to keep the suite fast on 2 cores, large enough to show learning.
TEST_BUDGET = 16384


@dataclass(frozen=True)
class CliResult:
    """One `prism-eval` process: exit code, raw stdout and stderr."""

    exit_code: int
    stdout: bytes
    stderr: str

    def document(self) -> dict[str, Any]:
        """stdout parsed as exactly one JSON document."""
        lines = self.stdout.decode().splitlines()
        assert len(lines) == 1, f"stdout must hold one JSON line, got {len(lines)}"
        parsed: dict[str, Any] = json.loads(lines[0])
        return parsed

    @property
    def record(self) -> dict[str, Any]:
        """The record inside the printed document."""
        record: dict[str, Any] = self.document()["record"]
        return record


def run_cli(
    *args: str | Path, env: dict[str, str] | None = None, timeout: float = 300
) -> CliResult:
    """Run the real console entry point in a fresh process."""
    completed = subprocess.run(
        [sys.executable, "-m", "prism_eval", *map(str, args)],
        capture_output=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
        cwd=ROOT,
    )
    return CliResult(completed.returncode, completed.stdout, completed.stderr.decode())


@pytest.fixture(scope="session")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[CliResult, Path]:
    """The honest example evaluated once for the session, with --out files."""
    out = tmp_path_factory.mktemp("example-out")
    result = run_cli(
        "run", BUNDLES / "ok_tiny_transformer", "--byte-budget", str(TEST_BUDGET), "--out", out
    )
    return result, out
