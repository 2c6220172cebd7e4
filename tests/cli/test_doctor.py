"""`prism-eval doctor`: the host's checks and a real worker's isolation table."""

from __future__ import annotations

from prism_eval.supervisor.config import ISOLATION_LAYERS
from tests.conftest import run_cli


def test_doctor_reports_every_layer_from_a_real_worker() -> None:
    result = run_cli("doctor", "--json")
    assert result.exit_code == 0, result.stderr
    report = result.document()
    assert [layer["name"] for layer in report["isolation"]] == sorted(
        (layer["name"] for layer in report["isolation"]), key=ISOLATION_LAYERS.index
    )
    assert {layer["name"] for layer in report["isolation"]} == set(ISOLATION_LAYERS)
    states = {layer["name"]: layer["state"] for layer in report["isolation"]}
    assert states["seccomp"] == "active" and states["no_new_privs"] == "active"
    checks = {check["name"]: check for check in report["checks"]}
    assert checks["tokenizer gpt2"]["ok"] and checks["default data"]["ok"]
    # This host has network namespaces and lets AF_INET through: ranks can run.
    assert checks["ranks (--nproc)"] == {
        "name": "ranks (--nproc)", "ok": True, "optional": True,
        "detail": "up to 8: private network namespace, loopback TCP",
    }  # fmt: skip


def test_doctor_table_is_readable() -> None:
    result = run_cli("doctor")
    assert result.exit_code == 0
    text = result.stdout.decode()
    assert "isolation (a real worker" in text and "seccomp" in text
