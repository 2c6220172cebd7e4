"""The sandbox stops escapes, not ordinary training code."""

from __future__ import annotations

from tests.conftest import ROOT, run_cli


def test_dataloader_workers_run_inside_the_sandbox() -> None:
    bundle = ROOT / "tests" / "assets" / "bundles" / "ok_dataloader_workers"
    result = run_cli("run", bundle, "--byte-budget", "4096")
    assert result.exit_code == 0, result.stderr
    record = result.record
    assert record["status"] == "scored"
    states = {layer["name"]: layer["state"] for layer in record["isolation"]}
    assert states["landlock"] == states["seccomp"] == "active"
