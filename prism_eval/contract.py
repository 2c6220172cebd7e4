"""Supervisor: the prism.yaml contract (DESIGN §4 item 3).

Checks an extracted bundle's optional prism.yaml, its two scripts and their symbols by parsing
(never importing) the scripts, and refuses bundle files that would shadow a standard or installed
module. Every problem is a `Rejected` with a stable rule id.
"""

from __future__ import annotations

import ast
import difflib
import functools
import keyword
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prism_eval.bundle import _LAYOUT_HINT, Bundle
from prism_eval.errors import Rejected

MANIFEST_NAME = "prism.yaml"
_MAX_MANIFEST_BYTES = 64 * 1024
_ALLOWED_SHADOW = frozenset({"architecture", "training"})
_RESERVED_NAMES = frozenset({"prism_eval", "prism_challenge"})


class Entrypoints(BaseModel):
    """Which bundle files hold the two scripts."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    architecture: str = Field("architecture.py", description="Script defining build_model.")
    training: str = Field("training.py", description="Script defining train.")


class Symbols(BaseModel):
    """Which top-level functions the scripts expose."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    build_model: str = Field("build_model", description="build_model(ctx) -> nn.Module.")
    train: str = Field("train", description="train(ctx), the miner's training loop.")


class BundleManifest(BaseModel):
    """The optional prism.yaml: entrypoints, symbols and the declared tokenizer."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)

    entrypoints: Entrypoints = Field(default_factory=Entrypoints, description="Script files.")
    symbols: Symbols = Field(default_factory=Symbols, description="Function names.")
    tokenizer: Literal["byte", "gpt2", "llama"] = Field(
        "byte", description="Reference tokenizer the supervisor uses for the stream."
    )
    name: str | None = Field(None, max_length=200, description="Display name only.")


_SECTIONS: dict[str, type[BaseModel]] = {"entrypoints": Entrypoints, "symbols": Symbols}


@dataclass(frozen=True)
class Contract:
    """What the later stages need from the bundle: scripts, symbols and tokenizer."""

    manifest: BundleManifest
    architecture_path: str
    training_path: str
    build_symbol: str
    train_symbol: str
    tokenizer: str


class _ManifestLoader(yaml.SafeLoader):
    """Safe YAML without aliases (no billion laughs) and without silent duplicate keys."""

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            raise yaml.MarkedYAMLError(problem="aliases are not allowed", problem_mark=mark)
        return super().compose_node(parent, index)

    def compose_mapping_node(self, anchor: Any) -> yaml.MappingNode:
        node = super().compose_mapping_node(anchor)
        seen: set[str] = set()
        for key, _ in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    raise yaml.MarkedYAMLError(
                        problem=f"duplicate key {key.value[:80]!r}", problem_mark=key.start_mark
                    )
                seen.add(key.value)
        return node


def _read_manifest(bundle: Bundle) -> BundleManifest:
    """Parse prism.yaml; absent or empty means the defaults, anything else must be valid."""
    present = {f.path for f in bundle.files}
    near_misses = [p for p in present if p.casefold() in ("prism.yaml", "prism.yml")]
    if MANIFEST_NAME not in present:
        if near_misses:
            raise Rejected(
                "contract.invalid", f"{near_misses[0]} is not read", hint="name it prism.yaml"
            )
        return BundleManifest()
    text = bundle.read_text(MANIFEST_NAME)
    if len(text) > _MAX_MANIFEST_BYTES:
        raise Rejected("contract.invalid", f"prism.yaml is over {_MAX_MANIFEST_BYTES} bytes")
    try:
        data = yaml.load(text, Loader=_ManifestLoader)
    except yaml.MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else 0
        raise Rejected(
            "contract.bad_yaml", f"prism.yaml:{line}: {exc.problem}", evidence=[str(exc)[:500]]
        ) from exc
    except (yaml.YAMLError, RecursionError) as exc:
        raise Rejected("contract.bad_yaml", f"prism.yaml: {str(exc)[:300]}") from exc
    if data is None:
        return BundleManifest()
    if not isinstance(data, dict):
        raise Rejected("contract.invalid", "prism.yaml must be a mapping of keys to values")
    try:
        return BundleManifest.model_validate(data)
    except ValidationError as exc:
        raise _manifest_rejection(exc) from exc


def _manifest_rejection(exc: ValidationError) -> Rejected:
    """Turn pydantic's errors into one rejection; unknown keys name the allowed ones."""
    errors = exc.errors(include_input=False)
    for error in errors:
        if error["type"] == "extra_forbidden":
            *section, key = (str(part) for part in error["loc"])
            model = _SECTIONS[section[0]] if section else BundleManifest
            allowed = list(model.model_fields)
            close = difflib.get_close_matches(key, allowed, n=1)
            where = f" in section {section[0]!r}" if section else ""
            return Rejected(
                "contract.unknown_key",
                f"unknown key {key[:80]!r}{where} in prism.yaml; allowed: {', '.join(allowed)}",
                hint=f"did you mean {close[0]!r}?" if close else "remove the key",
            )
    details = [f"{'.'.join(map(str, e['loc'])) or 'prism.yaml'}: {e['msg']}" for e in errors]
    return Rejected("contract.invalid", f"prism.yaml: {details[0]}", evidence=details)


def _check_entrypoint(role: str, path: str, present: set[str]) -> str:
    """An entrypoint must be an importable `.py` file that the bundle holds."""
    parts = path.removesuffix(".py").split("/")
    if not path.endswith(".py") or not all(p.isidentifier() for p in parts):
        raise Rejected(
            "contract.bad_entrypoint",
            f"{role} entrypoint {path[:120]!r} must be a .py file with an importable name",
            hint="for example architecture.py or src/model.py",
        )
    if path not in present:
        scripts = sorted(p for p in present if p.endswith(".py"))[:20]
        raise Rejected(
            "contract.missing_script",
            f"the {role} script {path} is missing from the bundle",
            hint=_LAYOUT_HINT,
            evidence=[f"python files present: {', '.join(scripts) or 'none'}"],
        )
    return path


def _parse(bundle: Bundle, path: str) -> ast.Module:
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


def check_contract(bundle: Bundle) -> Contract:
    """Check prism.yaml, the two scripts and their symbols; return what later stages need."""
    manifest = _read_manifest(bundle)
    present = {f.path for f in bundle.files}
    architecture = _check_entrypoint("architecture", manifest.entrypoints.architecture, present)
    training = _check_entrypoint("training", manifest.entrypoints.training, present)
    if architecture.casefold() == training.casefold():
        raise Rejected(
            "contract.bad_entrypoint",
            f"architecture and training must be two files; both are {architecture}",
        )
    for path, symbol in (
        (architecture, manifest.symbols.build_model),
        (training, manifest.symbols.train),
    ):
        if not symbol.isidentifier() or keyword.iskeyword(symbol):
            raise Rejected("contract.invalid", f"symbol {symbol[:80]!r} is not a Python name")
        _check_symbol(_parse(bundle, path), path, symbol)
    _check_shadowing(present)
    return Contract(
        manifest=manifest,
        architecture_path=architecture,
        training_path=training,
        build_symbol=manifest.symbols.build_model,
        train_symbol=manifest.symbols.train,
        tokenizer=manifest.tokenizer,
    )
