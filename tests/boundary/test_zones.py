"""The trust boundary, as an import rule (docs/design.md §2: the zones; the table: zones.py).

The supervisor never imports torch nor the code of the processes it starts; the scorer
(trusted) imports torch but never the worker nor any bundle code; the worker imports only the
shared protocol, the standard library and ML libraries. Packages meet at their `__init__`.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path

import pytest

from tests.boundary.zones import BY_NAME, violations, zone_of
from tests.conftest import ROOT

PACKAGE = ROOT / "prism_eval"
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_imports_only_what_its_zone_may(path: Path) -> None:
    assert violations(path, PACKAGE) == []


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_each_module_docstring_starts_with_its_zone(path: Path) -> None:
    docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
    zone = zone_of(path, PACKAGE)
    assert zone is not None
    expected = "" if path == PACKAGE / "__init__.py" else zone.docstring  # it describes all
    assert docstring.startswith(expected), f"{path.name}: {docstring[:40]!r}"


def _copy_of_the_package(tmp_path: Path) -> Path:
    copy = tmp_path / "prism_eval"
    shutil.copytree(PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    return copy


def test_a_planted_import_from_the_supervisor_into_the_worker_fails(tmp_path: Path) -> None:
    copy = _copy_of_the_package(tmp_path)
    modules = sorted(copy.rglob("*.py"))
    assert [v for m in modules for v in violations(m, copy)] == []  # the copy is clean

    train = copy / "supervisor" / "stages" / "train.py"
    train.write_text(train.read_text() + "\nfrom prism_eval.worker.loader import load_script\n")
    found = [v for m in modules for v in violations(m, copy)]
    assert found == [
        "prism_eval/supervisor/stages/train.py imports prism_eval.worker.loader: the supervisor "
        "starts workers as processes (supervisor/sandbox/) and never imports their code; what "
        "both sides need belongs in prism_eval/protocol/"
    ]


@pytest.mark.parametrize(
    ("where", "source", "says"),
    [
        ("worker/sample.py", "import prism_eval.supervisor\n", "a worker never imports the"),
        ("scorer/sample.py", "from prism_eval import worker\n", "the scorer never imports worker"),
        ("scorer/sample.py", "import prism_eval.worker.loader\n", "the scorer never imports"),
        ("supervisor/sample.py", "import torch\n", "the supervisor never imports torch"),
        ("supervisor/stages/sample.py", "from prism_eval.scorer import nats\n",
         "the supervisor starts the scorer as a process"),
        ("protocol/sample.py", "import torch.nn\n", "the shared zone imports only"),
        ("sample.py", "import os\n", "lies in no zone: supervisor code goes under"),
        ("cli/sample.py", "import prism_eval.worker.loader\n", "the command line calls"),
        ("supervisor/stages/sample.py", "from prism_eval.supervisor.intake.bundle import Bundle\n",
         "another package is used through its surface, `from prism_eval.supervisor.intake"),
        ("supervisor/stages/sample.py", "from prism_eval.supervisor.intake import _prompt\n",
         "does not offer it"),
        ("supervisor/stages/sample.py",
         "from prism_eval.supervisor.intake._manifest_yaml import load_manifest_yaml\n",
         "`_manifest_yaml` is private to prism_eval.supervisor.intake"),
        ("supervisor/stages/sample.py", "from prism_eval.supervisor.data import secret_name\n",
         "which does not offer it (not in its __all__)"),
        ("supervisor/stages/sample.py", "from prism_eval.supervisor.stages import run_audit\n",
         "its own package's surface: import it from the module that defines it"),
        ("supervisor/data/sample.py", "from prism_eval.supervisor.stages import run_audit\n",
         "data/ may import no other supervisor package"),
        ("supervisor/stages/sample.py", "from prism_eval.supervisor.pipeline import STAGES\n",
         "imports only the leaf modules"),
        ("supervisor/stages/sample.py", "from prism_eval.supervisor.review import client\n",
         "only the command line imports the networked review client"),
        ("worker/sample.py", "from prism_eval.protocol.frames import read_frame\n",
         "through its surface"),
        ("worker/sample.py", "from ..supervisor import pipeline\n", "imports relatively"),
    ],
)  # fmt: skip
def test_the_rule_catches_a_forbidden_import(
    tmp_path: Path, where: str, source: str, says: str
) -> None:
    copy = _copy_of_the_package(tmp_path)
    path = copy / where
    path.write_text('"""Supervisor: a sample."""\n' + source)
    found = violations(path, copy)
    assert any(says in v for v in found), found


def test_the_table_names_every_top_level_entry() -> None:
    """A new top-level module or package must be placed in a zone's row, on purpose."""
    for entry in PACKAGE.iterdir():
        if entry.name == "__pycache__" or not (entry.suffix == ".py" or entry.is_dir()):
            continue
        if entry.is_dir() and not (entry / "__init__.py").exists():
            continue  # data, not code
        assert zone_of(entry if entry.suffix else entry / "__init__.py", PACKAGE), entry.name
    assert set(BY_NAME) == {"shared", "cli", "supervisor", "scorer", "worker"}
