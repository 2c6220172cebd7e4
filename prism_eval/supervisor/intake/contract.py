"""Supervisor: the bundle contract — prism.yaml in the reference's schema, scripts, symbols.

Checks an extracted bundle's optional manifest (`prism.yaml` or `prism.yml`, in the reference
challenge's schema: `kind`, `architecture_id`, `architecture:` and `training:` sections with
`entrypoint` (`path` or `path::symbol`), `factory` / `function` / `entry`, `files`, and
`tokenizer`), its two scripts and their symbols by parsing (never importing) the scripts, and
refuses bundle files that would shadow a standard or installed module. Declared entrypoints are
honoured exactly; undeclared ones default to architecture.py and training.py. Every problem is a
`Rejected` with a stable rule id. The tokenizer is the declared one, else the one literal
`reference_tokenizer("…")` calls name (_tokenizer_inference.py), else `byte`.
"""

from __future__ import annotations

import ast
import functools
import keyword
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from prism_eval.errors import Rejected
from prism_eval.supervisor.intake._architecture_name import architecture_name
from prism_eval.supervisor.intake._manifest_yaml import load_manifest_yaml, manifest_rejection
from prism_eval.supervisor.intake._tokenizer_inference import inferred_tokenizer
from prism_eval.supervisor.intake.bundle import _LAYOUT_HINT, Bundle
from prism_eval.tokenizer_files import TokenizerName

MANIFEST_NAMES = ("prism.yaml", "prism.yml")
DEFAULTS = {
    "architecture": ("architecture.py", "build_model"),
    "training": ("training.py", "train"),
}
_ALLOWED_SHADOW = frozenset({"architecture", "training"})
_RESERVED_NAMES = frozenset({"prism_eval", "prism_challenge"})
Kind = Literal["full", "architecture_only", "training_for_arch"]


class Role(BaseModel):
    """One section of the manifest: the script of a role and, optionally, its symbol and files."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    entrypoint: str | None = Field(None, description="path, or path::symbol")
    factory: str | None = Field(None, description="The symbol (the reference's first choice).")
    function: str | None = Field(None, description="The symbol, if factory is not given.")
    entry: str | None = Field(None, description="The symbol, if neither of the above is.")
    files: list[str] = Field(default_factory=list, description="Other files of this role.")

    @field_validator("files", mode="before")
    @classmethod
    def _one_file_or_many(cls, value: object) -> object:
        return [value] if isinstance(value, str) else value  # `files: helper.py`, as the reference


class BundleManifest(BaseModel):
    """The optional prism.yaml / prism.yml, in the reference challenge's schema."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    kind: Kind = Field("full", description="Recorded; every kind is evaluated alike.")
    architecture_id: str | None = Field(None, max_length=200, description="Recorded as given.")
    architecture: Role = Field(default_factory=Role, description="architecture.py and build_model")
    training: Role = Field(default_factory=Role, description="training.py and train")
    tokenizer: TokenizerName | None = Field(
        None, description="The stream's tokenizer; else inferred from the scripts, else byte."
    )

    @field_validator("kind", mode="before")
    @classmethod
    def _kind_or_default(cls, value: object) -> object:
        return "full" if value is None else value  # `kind:` left empty means the default

    @field_validator("architecture", "training", mode="before")
    @classmethod
    def _empty_section(cls, value: object) -> object:
        return {} if value is None else value  # `training:` with nothing under it

    @field_validator("architecture_id", mode="before")
    @classmethod
    def _id_as_text(cls, value: object) -> object:
        # The reference keeps any scalar as its text (`architecture_id: 42`).
        return str(value) if isinstance(value, int | float) else value


@dataclass(frozen=True)
class Contract:
    """What the later stages need from the bundle."""

    manifest: BundleManifest
    manifest_path: str | None
    architecture_path: str
    training_path: str
    build_symbol: str
    train_symbol: str
    tokenizer: str
    tokenizer_source: str  # where the tokenizer came from, for the stage's message
    architecture_name: str | None


def _manifest_path(bundle: Bundle) -> str | None:
    """The one manifest file, wherever it is; two are ambiguous."""
    found = sorted(f.path for f in bundle.files if PurePosixPath(f.path).name in MANIFEST_NAMES)
    near_misses = [
        f.path
        for f in bundle.files
        if PurePosixPath(f.path).name.casefold() in MANIFEST_NAMES
        and PurePosixPath(f.path).name not in MANIFEST_NAMES
    ]
    if len(found) > 1:
        raise Rejected(
            "contract.ambiguous_manifest",
            f"the bundle has {len(found)} manifests: {', '.join(found[:5])}",
            hint="keep one prism.yaml",
        )
    if not found and near_misses:
        raise Rejected(
            "contract.invalid", f"{near_misses[0]} is not read", hint="name it prism.yaml"
        )
    return found[0] if found else None


def _read_manifest(bundle: Bundle, path: str | None) -> BundleManifest:
    """Parse the manifest; absent or empty means the defaults, anything else must be valid."""
    if path is None:
        return BundleManifest()
    data = load_manifest_yaml(bundle.read_text(path), path)
    if data is None:
        return BundleManifest()
    try:
        return BundleManifest.model_validate(data)
    except ValidationError as exc:
        sections: dict[str, type[BaseModel]] = {"architecture": Role, "training": Role}
        raise manifest_rejection(exc, path, BundleManifest, sections) from exc


def _symbol(role: Role, declared_path: str | None, default: str) -> str:
    """The role's symbol, with the reference's precedence: factory, function, entry, then
    `path::symbol`, then the default."""
    from_path = declared_path.partition("::")[2] if declared_path else ""
    symbol = role.factory or role.function or role.entry or from_path or default
    if not symbol.isidentifier() or keyword.iskeyword(symbol):
        raise Rejected("contract.invalid", f"symbol {symbol[:80]!r} is not a Python name")
    return symbol


def _resolve(path: str, manifest_dir: str, present: set[str]) -> str | None:
    """A declared path as given from the bundle root, else from the manifest's folder."""
    candidates = [path.lstrip("/")]
    if manifest_dir:
        candidates.append(f"{manifest_dir}/{path.lstrip('/')}")
    return next((c for c in map(_normal, candidates) if c in present), None)


def _normal(path: str) -> str:
    return PurePosixPath(path).as_posix()


def _entrypoint(
    role_name: str, role: Role, manifest_dir: str, present: set[str]
) -> tuple[str, str]:
    """(script path, symbol) of a role: declared exactly, or the default."""
    default_path, default_symbol = DEFAULTS[role_name]
    declared = role.entrypoint
    symbol = _symbol(role, declared, default_symbol)
    if declared:
        path = declared.partition("::")[0]
        found = _resolve(path, manifest_dir, present)
        if found is None:
            raise Rejected(
                "contract.missing_script",
                f"the declared {role_name} entrypoint {path[:120]!r} is not in the bundle",
                hint="declared entrypoints are honoured exactly: fix the path in prism.yaml "
                f"(relative to the bundle or to the manifest's folder {manifest_dir or '.'})",
                evidence=[f"python files present: {', '.join(_scripts(present)) or 'none'}"],
            )
        return _check_importable(role_name, found), symbol
    found = _resolve(default_path, manifest_dir, present) or _default_script(
        role_name, default_path, present
    )
    return _check_importable(role_name, found), symbol


def _default_script(role_name: str, name: str, present: set[str]) -> str:
    """The default script: at the bundle root, else the one file of that name anywhere."""
    if name in present:
        return name
    matches = sorted(p for p in present if PurePosixPath(p).name == name)
    if len(matches) == 1:
        return matches[0]
    raise Rejected(
        "contract.missing_script",
        f"the {role_name} script {name} is "
        + ("missing from the bundle" if not matches else f"ambiguous: {', '.join(matches[:5])}"),
        hint=_LAYOUT_HINT
        if not matches
        else f"declare it in prism.yaml (`{role_name}: {{entrypoint: path/{name}}}`)",
        evidence=[f"python files present: {', '.join(_scripts(present)) or 'none'}"],
    )


def _scripts(present: set[str]) -> list[str]:
    return sorted(p for p in present if p.endswith(".py"))[:20]


def _check_importable(role_name: str, path: str) -> str:
    """An entrypoint must be a `.py` file with an importable name (it is imported by its file
    name; its folders join sys.path, so they may be named anything)."""
    stem = PurePosixPath(path).stem
    if not path.endswith(".py") or not stem.isidentifier() or keyword.iskeyword(stem):
        raise Rejected(
            "contract.bad_entrypoint",
            f"{role_name} entrypoint {path[:120]!r} must be a .py file with an importable name",
            hint="for example architecture.py or src/model.py",
        )
    return path


def _check_role_files(role_name: str, role: Role, manifest_dir: str, present: set[str]) -> None:
    """Every file a section lists must be in the bundle."""
    for listed in role.files:
        if _resolve(listed, manifest_dir, present) is None:
            raise Rejected(
                "contract.missing_file",
                f"prism.yaml lists {listed[:120]!r} among the {role_name} files, and the bundle "
                "has no such file",
                hint="list files by their path in the bundle, or relative to prism.yaml",
            )


def parse_script(bundle: Bundle, path: str) -> ast.Module:
    """Parse one script without running it."""
    try:
        return ast.parse(bundle.read_text(path), filename=path)
    except SyntaxError as exc:
        raise Rejected(
            "contract.syntax_error",
            f"{path}:{exc.lineno}: {exc.msg}",
            hint=f"check it with `python -m py_compile {path}`",
        ) from exc
    except (ValueError, RecursionError, MemoryError) as exc:
        raise Rejected("contract.syntax_error", f"{path}: cannot be parsed: {exc}") from exc


def _bindings(body: list[ast.stmt], top: bool = True) -> Iterator[tuple[ast.stmt, bool, str]]:
    """Yield (statement, directly at top level, name) for every module-level name binding.

    Compound statements (if, try, for, with, match) are entered; function and class bodies
    are not, since their names are local.
    """
    for stmt in body:
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            yield stmt, top, stmt.name
        elif isinstance(stmt, ast.Import | ast.ImportFrom):
            for alias in stmt.names:
                yield stmt, top, (alias.asname or alias.name).split(".")[0]
        else:
            for _, value in ast.iter_fields(stmt):
                for item in value if isinstance(value, list) else [value]:
                    if isinstance(item, ast.stmt):
                        yield from _bindings([item], top=False)
                    elif isinstance(item, ast.ExceptHandler | ast.match_case):
                        if isinstance(item, ast.ExceptHandler) and item.name:
                            yield stmt, False, item.name
                        yield from _bindings(item.body, top=False)
                    elif isinstance(item, ast.AST):
                        for node in ast.walk(item):
                            if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load):
                                yield stmt, top, node.id


def _check_symbol(tree: ast.Module, path: str, symbol: str) -> None:
    """The symbol's last module-level binding must be a plain top-level `def` taking ctx."""
    found = [(stmt, top) for stmt, top, name in _bindings(tree.body) if name == symbol]
    functions = sorted({n for s, t, n in _bindings(tree.body) if t and type(s) is ast.FunctionDef})
    hint = f"top-level functions in {path}: {', '.join(functions[:20]) or 'none'}"
    if not found:
        raise Rejected(
            "contract.missing_symbol", f"{path} has no top-level function {symbol}", hint=hint
        )
    stmt, top = found[-1]
    if not (top and isinstance(stmt, ast.FunctionDef)):
        kind = "async def" if isinstance(stmt, ast.AsyncFunctionDef) else type(stmt).__name__
        raise Rejected(
            "contract.missing_symbol",
            f"{path}:{stmt.lineno}: {symbol} must be a plain top-level `def`, found {kind}",
            hint=hint,
        )
    args = stmt.args
    positional = [*args.posonlyargs, *args.args]
    required = len(positional) - len(args.defaults)
    if (not positional and args.vararg is None) or required > 1 or None in args.kw_defaults:
        raise Rejected(
            "contract.bad_signature",
            f"{path}:{stmt.lineno}: {symbol} must be callable as {symbol}(ctx)",
            hint=f"def {symbol}(ctx): ...",
        )


# A fixed list, not a scan of what happens to be installed: every validator must reach the
# same verdict on the same bundle. Standard library plus the ML stack a bundle may import.
_LIBRARY_NAMES = frozenset({
    "torch", "torchvision", "torchaudio", "triton", "numpy", "scipy", "einops", "safetensors",
    "tiktoken", "sentencepiece", "tokenizers", "transformers", "datasets", "accelerate",
    "jax", "flax", "pandas", "pyarrow", "pydantic", "yaml", "click", "orjson", "rfc8785",
    "cryptography", "pynvml", "setuptools", "pkg_resources", "pip", "typing_extensions",
    "sympy", "networkx", "jinja2", "filelock", "fsspec", "mpmath",
})  # fmt: skip


@functools.cache
def _importable_names() -> frozenset[str]:
    """Top-level module names a bundle file must not reuse: stdlib, built-in, ML stack."""
    names = {*sys.stdlib_module_names, *sys.builtin_module_names, *_RESERVED_NAMES}
    return frozenset((names | _LIBRARY_NAMES) - _ALLOWED_SHADOW)


def _check_module_names(architecture: str, training: str) -> None:
    """The two scripts are imported as modules named after their files, as in the reference
    (`from architecture import build_model`): two names, neither an installed module's."""
    if PurePosixPath(architecture).stem.casefold() == PurePosixPath(training).stem.casefold():
        raise Rejected(
            "contract.bad_entrypoint",
            f"architecture and training must be two files with two names; they are "
            f"{architecture} and {training}",
            hint="the single-module idiom does not satisfy the two-script contract",
        )
    for path in (architecture, training):
        stem = PurePosixPath(path).stem
        if stem in _importable_names():
            raise Rejected(
                "contract.shadowing_module",
                f"{path} is imported as the module {stem!r}, which shadows a standard or "
                "installed module",
                hint=f"rename it, for example to prism_{stem}.py",
            )


def _check_shadowing(present: Iterable[str]) -> None:
    """Reject a bundle file or folder named like a standard or installed module."""
    for path in sorted(p for p in present if p.endswith(".py")):
        top = path.split("/")[0].removesuffix(".py")
        if top in _importable_names():
            raise Rejected(
                "contract.shadowing_module",
                f"{path} shadows the module {top!r}",
                hint=f"rename it, for example to prism_{top}",
            )


def _tokenizer(
    manifest: BundleManifest, manifest_path: str | None, training: ast.Module, path: str
) -> tuple[str, str]:
    """(tokenizer, where it came from): declared, else named in the training script, else byte."""
    if manifest.tokenizer:
        return manifest.tokenizer, f"declared in {manifest_path}"
    inferred = inferred_tokenizer(training, path)
    if inferred:
        return inferred, f"named by reference_tokenizer in {path}"
    return "byte", "the default"


def check_contract(bundle: Bundle) -> Contract:
    """Check the manifest, the two scripts and their symbols; return what later stages need."""
    manifest_path = _manifest_path(bundle)
    manifest = _read_manifest(bundle, manifest_path)
    manifest_dir = str(PurePosixPath(manifest_path).parent) if manifest_path else "."
    manifest_dir = "" if manifest_dir == "." else manifest_dir
    present = {f.path for f in bundle.files}
    architecture, build_symbol = _entrypoint(
        "architecture", manifest.architecture, manifest_dir, present
    )
    training, train_symbol = _entrypoint("training", manifest.training, manifest_dir, present)
    _check_module_names(architecture, training)
    _check_role_files("architecture", manifest.architecture, manifest_dir, present)
    _check_role_files("training", manifest.training, manifest_dir, present)
    trees = {}
    for path, symbol in ((architecture, build_symbol), (training, train_symbol)):
        trees[path] = parse_script(bundle, path)
        _check_symbol(trees[path], path, symbol)
    _check_shadowing(present)
    tokenizer, source = _tokenizer(manifest, manifest_path, trees[training], training)
    return Contract(
        manifest=manifest,
        manifest_path=manifest_path,
        architecture_path=architecture,
        training_path=training,
        build_symbol=build_symbol,
        train_symbol=train_symbol,
        tokenizer=tokenizer,
        tokenizer_source=source,
        architecture_name=architecture_name(trees[architecture]),
    )
