"""The tree tells the truth at a glance: package contracts, the documented tree, sizes, names."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
from collections import defaultdict
from pathlib import Path

import pytest

from tests.boundary.zones import zone_of
from tests.conftest import ROOT

PACKAGE = ROOT / "prism_eval"
PACKAGES = sorted(p.parent for p in PACKAGE.rglob("__init__.py") if "__pycache__" not in p.parts)
MODULES = sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)
MAX_LINES = 400  # above it, a module's docstring says what its one idea is ("One idea:")
ENTRY_POINTS = {"main"}  # every process has one; the same role on each side


def _dotted(directory: Path) -> str:
    return ".".join(directory.relative_to(ROOT).parts)


@pytest.mark.parametrize("directory", PACKAGES, ids=_dotted)
def test_each_package_states_its_contract(directory: Path) -> None:
    """Its docstring says what it is for, what it may import and what it offers (`__all__`)."""
    init = directory / "__init__.py"
    docstring = ast.get_docstring(ast.parse(init.read_text())) or ""
    assert "May import:" in docstring and "Offers:" in docstring, init
    package = importlib.import_module(_dotted(directory))
    offered = package.__all__
    missing = [name for name in offered if not hasattr(package, name)]
    assert missing == [], f"{_dotted(directory)}.__all__ names what it does not define"
    assert not [n for n in offered if n.startswith("_") and not n.startswith("__")]


def test_the_tree_in_docs_design_md_lists_every_package() -> None:
    """docs/design.md opens with the tree: one table row per package, as `find` sees them."""
    text = (ROOT / "docs" / "design.md").read_text()
    table = text.split("## The tree", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(prism_eval/[a-z_/]*)` \|", table, re.M))
    on_disk = {f"{directory.relative_to(ROOT)}/" for directory in PACKAGES}
    assert documented == on_disk


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_long_module_says_what_its_one_idea_is(path: Path) -> None:
    lines = len(path.read_text().splitlines())
    if lines > MAX_LINES:
        docstring = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "One idea:" in docstring, f"{path.name}: {lines} lines; split it or say why not"


def test_no_name_is_defined_on_two_sides_of_the_boundary() -> None:
    """`probe.run_probe` on both sides read alike and meant different things: never again."""
    sides: dict[str, set[str]] = defaultdict(set)
    for path in MODULES:
        zone = zone_of(path, PACKAGE)
        assert zone is not None
        side = "supervisor" if zone.name == "cli" else zone.name
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                sides[node.name].add(side)
    twice = {name: sorted(s) for name, s in sides.items() if len(s) > 1}
    assert {n: s for n, s in twice.items() if n not in ENTRY_POINTS} == {}


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:  # the parent is a module, not a package
        return False


TOOLS = sorted((ROOT / "scripts").glob("*.py")) + sorted((ROOT / "bench").glob("*.py"))


@pytest.mark.parametrize("path", TOOLS, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_developer_tools_import_names_that_exist(path: Path) -> None:
    """scripts/ and bench/ are not imported by the tests: a rename must not leave them behind."""
    missing = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("prism_eval"):
            module = importlib.import_module(node.module or "")
            for alias in node.names:
                if not hasattr(module, alias.name) and not _is_module(
                    f"{node.module}.{alias.name}"
                ):
                    missing.append(f"{node.module}.{alias.name}")
    assert missing == []
