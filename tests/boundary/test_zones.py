"""The trust boundary, as an import rule (docs/design.md §2: the zones).

Every module belongs to one zone, from its path; each zone may import only what its row of
ZONES allows. The supervisor never imports torch (it has no use for it) nor the code of the
processes it starts; the scorer (trusted) imports torch but never the worker nor any bundle
code; the worker imports only the shared protocol, the standard library and ML libraries. A
module whose name starts with an underscore is not for other zones.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "prism_eval"
ML_LIBRARIES = {"torch", "numpy", "safetensors"}
REFERENCE_TOKENIZERS = {"tiktoken", "sentencepiece"}  # what ctx.reference_tokenizer returns
MESSAGES = {"pydantic", "orjson"}
NEVER_IN_THE_SUPERVISOR = {"torch"}

# zone → (prism_eval zones it may import, third-party top-level packages it may import)
ZONES: dict[str, tuple[set[str], set[str] | None]] = {
    "shared": ({"shared"}, MESSAGES | {"numpy"}),  # numpy only lazily, in a child's channel
    "worker": ({"shared", "worker"}, MESSAGES | ML_LIBRARIES | REFERENCE_TOKENIZERS),
    "scorer": ({"shared", "scorer"}, MESSAGES | {"torch", "numpy"}),
    "supervisor": ({"shared", "supervisor"}, None),  # any library but torch
}
SHARED = ("protocol", "errors.py", "tokenizer_files.py", "__init__.py")


def zone_of_path(relative: Path) -> str:
    """A module's zone, from where it lies in the package."""
    top = relative.parts[0]
    if top in ("worker", "scorer"):
        return top
    return "shared" if top in SHARED else "supervisor"


def zone_of_import(name: str) -> str | None:
    """The zone of an imported prism_eval module; None for anything outside the package."""
    parts = name.split(".")
    if parts[0] != "prism_eval":
        return None
    if len(parts) == 1:
        return "shared"
    if parts[1] in ("worker", "scorer"):
        return parts[1]
    return "shared" if parts[1] in ("protocol", "errors", "tokenizer_files") else "supervisor"


def imports_of(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def violations(path: Path) -> list[str]:
    """What `path` imports that its zone may not."""
    zone = zone_of_path(path.relative_to(PACKAGE))
    allowed_zones, allowed_libraries = ZONES[zone]
    found = []
    for name in sorted(imports_of(path)):
        top = name.split(".")[0]
        target = zone_of_import(name)
        if target is not None:
            private = any(part.startswith("_") and part != "__init__" for part in name.split("."))
            if target not in allowed_zones or (private and target != zone):
                found.append(f"{zone} imports {name} ({target})")
        elif top in sys.stdlib_module_names or top == "__future__":
            continue
        elif allowed_libraries is None:
            if top in NEVER_IN_THE_SUPERVISOR:
                found.append(f"{zone} imports {name}")
        elif top not in allowed_libraries:
            found.append(f"{zone} imports {name}")
    return found


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_what_its_zone_may(path: Path) -> None:
    assert violations(path) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_docstring_starts_with_its_zone(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    expected = {
        "shared": "Shared:",
        "worker": "Worker (sandboxed):",
        "scorer": "Scorer (trusted):",
        "supervisor": "Supervisor",  # "Supervisor:" or "Supervisor (networked):"
    }[zone_of_path(path.relative_to(PACKAGE))]
    if path.name == "__init__.py" and path.parent == PACKAGE:
        expected = ""  # the package's own docstring describes all zones
    assert docstring.startswith(expected), f"{path.name}: {docstring[:40]!r}"


@pytest.mark.parametrize(
    ("zone_dir", "source", "expected"),
    [
        (
            "worker",
            "import prism_eval.supervisor.pipeline\n",
            "worker imports prism_eval.supervisor.pipeline",
        ),
        ("scorer", "from prism_eval import worker\n", "scorer imports prism_eval.worker"),
        ("scorer", "import prism_eval.worker.loader\n", "scorer imports prism_eval.worker"),
        ("pipeline_x.py", "import torch\n", "supervisor imports torch"),
        ("pipeline_x.py", "from prism_eval.scorer import nats\n", "supervisor imports"),
        ("protocol", "import torch.nn\n", "shared imports torch"),
    ],
)
def test_the_rule_catches_a_forbidden_import(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, zone_dir: str, source: str, expected: str
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", tmp_path)
    path = tmp_path / zone_dir / "sample.py" if "." not in zone_dir else tmp_path / zone_dir
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(source)
    assert any(v.startswith(expected) for v in violations(path)), violations(path)
