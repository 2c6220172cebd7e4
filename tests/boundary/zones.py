"""The trust boundary as a table, and the checker that holds every module to it.

Every module lies in one zone, known from its path (ZONES: `lies_in`). A zone may import the
prism_eval packages of its row (`may_import`) and the libraries of its row. Within what a zone
may import, packages meet only at their surface: a module imports modules of its own package
and of the packages around it by path, and anything else through a package's `__init__`, only
names its `__all__` offers. A module whose name starts with `_` serves its own package only.

The checker reads source (ast); it imports nothing, so it runs on a copy of the tree as well
(tests/boundary/test_zones.py plants a bad import in one).
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT_PACKAGE = "prism_eval"
MESSAGES = frozenset({"pydantic", "orjson"})
ML_LIBRARIES = frozenset({"torch", "numpy", "safetensors"})
REFERENCE_TOKENIZERS = frozenset({"tiktoken", "sentencepiece"})  # ctx.reference_tokenizer
SHARED = ("prism_eval.protocol", "prism_eval.errors", "prism_eval.tokenizer_files")
NETWORKED = "prism_eval.supervisor.review.client"  # docstring: "Supervisor (networked):"


@dataclass(frozen=True)
class Zone:
    name: str
    lies_in: tuple[str, ...]  # paths under prism_eval/
    may_import: tuple[str, ...]  # prism_eval packages and modules (the root package always)
    libraries: frozenset[str] | None  # third-party top-level names; None: any but torch
    docstring: str  # how each module's docstring starts


ZONES = (
    Zone("shared", ("protocol", "errors.py", "tokenizer_files.py", "__init__.py"), SHARED,
         MESSAGES | {"numpy"}, "Shared:"),  # numpy only lazily, in a child's channel
    Zone("cli", ("cli", "__main__.py"), (*SHARED, "prism_eval.cli", "prism_eval.supervisor"),
         None, "Supervisor:"),
    Zone("supervisor", ("supervisor",), (*SHARED, "prism_eval.supervisor"), None, "Supervisor"),
    Zone("scorer", ("scorer",), (*SHARED, "prism_eval.scorer"), MESSAGES | {"torch", "numpy"},
         "Scorer (trusted):"),
    Zone("worker", ("worker",), (*SHARED, "prism_eval.worker"),
         MESSAGES | ML_LIBRARIES | REFERENCE_TOKENIZERS, "Worker (sandboxed):"),
)  # fmt: skip
BY_NAME = {zone.name: zone for zone in ZONES}

NOWHERE = (
    "lies in no zone: supervisor code goes under prism_eval/supervisor/ (in the package of its "
    "stage), trusted torch code under prism_eval/scorer/, code that runs beside miner code under "
    "prism_eval/worker/, messages between them under prism_eval/protocol/"
)
WHY = {  # (importing zone, imported zone) → where the code belongs instead
    ("supervisor", "worker"): "the supervisor starts workers as processes (supervisor/sandbox/) "
    "and never imports their code; what both sides need belongs in prism_eval/protocol/",
    ("supervisor", "scorer"): "the supervisor starts the scorer as a process and never imports "
    "its code; what both sides need belongs in prism_eval/protocol/",
    ("cli", "worker"): "the command line calls the supervisor, never the worker",
    ("cli", "scorer"): "the command line calls the supervisor, never the scorer",
    ("worker", "supervisor"): "a worker never imports the supervisor: what both need belongs "
    "in prism_eval/protocol/",
    ("scorer", "supervisor"): "the scorer never imports the supervisor: what both need belongs "
    "in prism_eval/protocol/",
    ("worker", "scorer"): "the workers and the scorer share nothing but prism_eval/protocol/",
    ("scorer", "worker"): "the scorer never imports worker code (it would run beside the "
    "trusted losses); what both need belongs in prism_eval/protocol/",
}
# Inside the supervisor, its packages form layers, so that their surfaces never import each
# other in a circle: package → the supervisor packages it may import besides its own. Every
# package may import the supervisor's leaf modules; only the supervisor's own top modules
# (pipeline, evaluation, reproduce, doctor) import every package.
SUPERVISOR_LAYERS: dict[str, set[str]] = {
    "data": set(),
    "intake": set(),
    "sandbox": set(),
    "attest": {"intake"},
    "present": {"attest"},
    "review": {"attest", "intake"},
    "stages": {"attest", "data", "intake", "sandbox"},
}
SUPERVISOR_LEAVES = {"config", "formula", "progress", "interrupts"}
TORCH_ELSEWHERE = (
    "the supervisor never imports torch: code that needs torch and no miner code belongs in "
    "prism_eval/scorer/, code that runs beside miner code in prism_eval/worker/"
)


def zone_of(path: Path, package: Path) -> Zone | None:
    """The zone a module lies in, from its path; None if it lies in none."""
    first = path.relative_to(package).parts[0]
    return next((zone for zone in ZONES if first in zone.lies_in), None)


class Tree:
    """The modules and packages of one copy of prism_eval, read from source."""

    def __init__(self, package: Path) -> None:
        self.package = package

    def dotted(self, path: Path) -> str:
        parts = list(path.relative_to(self.package.parent).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def path_of(self, dotted: str) -> Path:
        return self.package.parent.joinpath(*dotted.split("."))

    def is_package(self, dotted: str) -> bool:
        return (self.path_of(dotted) / "__init__.py").is_file()

    def package_of(self, dotted: str) -> str:
        """A package is its own package; a module lies in the package above it."""
        return dotted if self.is_package(dotted) else dotted.rpartition(".")[0]

    def imported(self, module: str, name: str) -> str:
        """What `from module import name` imports: a submodule, or a name of `module`."""
        submodule = f"{module}.{name}"
        if self.is_package(submodule) or self.path_of(submodule).with_suffix(".py").is_file():
            return submodule
        return module

    def offers(self, package: str) -> set[str] | None:
        """The names in a package's `__all__`, read statically; None if it has none."""
        tree = ast.parse((self.path_of(package) / "__init__.py").read_text())
        for node in tree.body:
            if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
            ):
                return {ast.literal_eval(e) for e in node.value.elts}  # type: ignore[attr-defined]
        return None


def _encloses(outer: str, inner: str) -> bool:
    return inner == outer or inner.startswith(outer + ".")


def _imports(path: Path) -> list[tuple[str, list[str]]]:
    """(module, names) of every import; names is [] for `import x`. A relative import is
    returned as ".", which no zone may import: the rule reads absolute names only."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.extend((alias.name, []) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append((".", [alias.name for alias in node.names]))
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def violations(path: Path, package: Path) -> list[str]:
    """What the module at `path` imports that the table or a package's surface forbids."""
    tree = Tree(package)
    where = path.relative_to(package.parent)
    zone = zone_of(path, package)
    if zone is None:
        return [f"{where} {NOWHERE}"]
    me = tree.dotted(path)
    mine = me if path.name == "__init__.py" else tree.package_of(me)
    found: list[str] = []
    for module, names in _imports(path):
        if module == ".":
            found.append(f"{where} imports relatively: write `from prism_eval.… import …`, "
                         "so that the boundary test can read what crosses it")  # fmt: skip
            continue
        top = module.split(".")[0]
        if top != ROOT_PACKAGE:
            if top in sys.stdlib_module_names or top == "__future__":
                continue
            allowed = zone.libraries
            if (allowed is None and top == "torch") or (allowed is not None and top not in allowed):
                why = (
                    TORCH_ELSEWHERE
                    if zone.name in ("supervisor", "cli")
                    else (f"the {zone.name} zone imports only {', '.join(sorted(allowed or ()))}")
                )
                found.append(f"{where} imports {module}: {why}")
            continue
        targets = [tree.imported(module, name) for name in names] or [module]
        for target in targets:
            found.extend(_check_target(tree, zone, where, mine, target, module, names))
    return sorted(set(found))


def _check_target(
    tree: Tree, zone: Zone, where: Path, mine: str, target: str, module: str, names: list[str]
) -> list[str]:
    if target == ROOT_PACKAGE:  # the root package's __init__: __version__
        return []
    owner = next((z for z in ZONES for p in z.lies_in
                  if target.split(".")[1] == p.removesuffix(".py")), None)  # fmt: skip
    allowed = any(_encloses(root, target) for root in zone.may_import)
    if not allowed:
        key = (zone.name, owner.name if owner else "?")
        why = WHY.get(key, f"the {zone.name} zone imports only {', '.join(zone.may_import)}")
        return [f"{where} imports {target}: {why}"]
    if target == NETWORKED or module == NETWORKED:
        if zone.name != "cli":
            return [f"{where} imports {NETWORKED}: only the command line imports the networked "
                    "review client, so that no other path (run, verify) loads it"]  # fmt: skip
        return []
    home = tree.package_of(target)
    layering = _layering(where, mine, target)
    if layering:
        return [layering]
    if _encloses(home, mine):  # its own package, or one around it: by module path
        if target == home != ROOT_PACKAGE and names:
            return [f"{where} imports {', '.join(names)} from {home}, its own package's surface: "
                    "import it from the module that defines it (a package's __init__ is not "
                    "yet built while its own modules load)"]  # fmt: skip
        return []
    if target != home:  # reaches into another package's module
        name = target.rpartition(".")[2]
        if name.startswith("_"):
            return [f"{where} imports {target}: `{name}` is private to {home}"]
        return [f"{where} imports {target}: another package is used through its surface, "
                f"`from {home} import ...`, names in its __all__"]  # fmt: skip
    offered = tree.offers(home) or set()
    missing = [n for n in names if n not in offered]
    if missing:
        return [f"{where} imports {', '.join(missing)} from {home}, which does not offer it "
                "(not in its __all__): add it there if other packages need it"]  # fmt: skip
    return []


def _supervisor_package(dotted: str) -> str | None:
    """`stages` for prism_eval.supervisor.stages[...]; "" for the supervisor's top modules."""
    parts = dotted.split(".")
    if parts[:2] != ["prism_eval", "supervisor"]:
        return None
    return parts[2] if len(parts) > 3 or (len(parts) == 3 and parts[2] in SUPERVISOR_LAYERS) else ""


def _layering(where: Path, mine: str, target: str) -> str | None:
    """Why a supervisor package may not import `target`, if it may not."""
    ours, theirs = _supervisor_package(mine), _supervisor_package(target)
    if not ours or theirs is None or theirs == ours:
        return None
    if theirs == "":
        leaf = target.split(".")[2] if target.count(".") >= 2 else ""
        if leaf in SUPERVISOR_LEAVES:
            return None
        return (f"{where} imports {target}: a supervisor package imports only the leaf modules "
                f"{sorted(SUPERVISOR_LEAVES)} of the supervisor, never the modules that drive "
                "the stages (tests/boundary/zones.py: SUPERVISOR_LAYERS)")  # fmt: skip
    if theirs in SUPERVISOR_LAYERS[ours]:
        return None
    allowed = ", ".join(sorted(SUPERVISOR_LAYERS[ours])) or "no other supervisor package"
    return (f"{where} imports {target}: {ours}/ may import {allowed}; the supervisor's packages "
            "are layers, so their surfaces never import each other in a circle "
            "(tests/boundary/zones.py: SUPERVISOR_LAYERS)")  # fmt: skip
