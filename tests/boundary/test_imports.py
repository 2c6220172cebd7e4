"""The trust boundary, as an import rule (STYLE: "The tree shows the trust boundary").

- worker/ imports only prism_eval.protocol, its own modules, the standard library and ML
  libraries;
- nothing outside worker/ imports worker/ (it is started as a process);
- the supervisor never imports torch: it has no use for it, and not importing the ML stack
  keeps it small and fast to start.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "prism_eval"
WORKER_THIRD_PARTY = {"torch", "numpy", "safetensors", "pydantic", "orjson"}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def _modules(under: Path) -> list[Path]:
    return sorted(under.rglob("*.py"))


def test_worker_imports_only_protocol_stdlib_and_ml_libraries() -> None:
    for path in _modules(PACKAGE / "worker"):
        for name in _imports(path):
            top = name.split(".")[0]
            allowed = (
                name.startswith("prism_eval.protocol")
                or name.startswith("prism_eval.worker")
                or top in sys.stdlib_module_names
                or top in WORKER_THIRD_PARTY
                or name == "__future__"
            )
            assert allowed, f"{path.relative_to(PACKAGE)} imports {name}"


def test_nothing_outside_the_worker_imports_it() -> None:
    for path in _modules(PACKAGE):
        if "worker" in path.relative_to(PACKAGE).parts:
            continue
        for name in _imports(path):
            assert not name.startswith("prism_eval.worker"), f"{path.name} imports {name}"


def test_supervisor_never_imports_torch() -> None:
    for path in _modules(PACKAGE):
        if "worker" in path.relative_to(PACKAGE).parts:
            continue
        for name in _imports(path):
            assert name.split(".")[0] != "torch", f"{path.name} imports {name}"


def test_rule_catches_a_forbidden_import(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("import prism_eval.pipeline\nfrom prism_eval import worker\n")
    assert {"prism_eval.pipeline", "prism_eval.worker"} <= _imports(sample)
