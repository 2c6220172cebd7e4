"""Supervisor: bundle intake, digest and the prism.yaml contract (DESIGN §4 items 2–3).

A bundle is hostile bytes. This module reads them — from a zip or a directory — with caps on
count and size, writes them to a directory the supervisor owns, and checks the contract by
parsing (never importing) the scripts. Every problem is a `Rejected` with a stable rule id.
"""

from __future__ import annotations

import ast
import codecs
import difflib
import functools
import hashlib
import keyword
import os
import re
import stat
import sys
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Literal

import rfc8785
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prism_eval.config import IntakeLimits
from prism_eval.errors import EvaluatorError, Rejected

ALLOWED_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".txt", ".md", ".toml")
MANIFEST_NAME = "prism.yaml"
_CHUNK_BYTES = 64 * 1024
_MAX_PATH_CHARS = 255
_MAX_MANIFEST_BYTES = 64 * 1024
_LITTER_DIRS = frozenset({"__MACOSX", "__pycache__"})
_LAYOUT_HINT = (
    "expected layout: architecture.py (defines build_model(ctx)), training.py (defines "
    "train(ctx)), optionally prism.yaml and helper files; or name other files in prism.yaml"
)
_ALLOWED_SHADOW = frozenset({"architecture", "training"})
_RESERVED_NAMES = frozenset({"prism_eval", "prism_challenge"})


class BundleFile(BaseModel):
    """One file of an accepted bundle, as recorded in the score record's subject."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(description="Relative POSIX path inside the bundle.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the file's bytes.")
    bytes: int = Field(ge=0, description="Size of the file in bytes.")


@dataclass(frozen=True)
class Bundle:
    """An extracted bundle: read-only files under a directory the supervisor wrote."""

    root: Path
    files: tuple[BundleFile, ...]
    sha256: str

    def read_text(self, path: str) -> str:
        """Return the UTF-8 text of one bundle file; `path` must be one of `files`."""
        if path not in {f.path for f in self.files}:
            raise KeyError(f"{path!r} is not a file of this bundle")
        return (self.root / path).read_text(encoding="utf-8")


def bundle_digest(files: Iterable[BundleFile]) -> str:
    """sha256 of the RFC 8785 canonical JSON of the sorted `[[path, sha256], ...]` list.

    Member order, timestamps and compression do not enter it: re-zipping gives the same digest.
    """
    pairs = sorted([f.path, f.sha256] for f in files)
    return hashlib.sha256(rfc8785.dumps(pairs)).hexdigest()


Opener = Callable[[], AbstractContextManager[IO[bytes]]]


@dataclass(frozen=True)
class _Member:
    """A regular file to extract: its path in the source and how to open it."""

    path: str
    declared_bytes: int
    open: Opener


def _check_path(name: str) -> None:
    """Reject any name that could land outside the destination or means another file."""
    unsafe = (
        not name
        or len(name) > _MAX_PATH_CHARS
        or "\\" in name
        or name.startswith("/")
        or re.match(r"[A-Za-z]:", name) is not None
        or any(unicodedata.category(c) in ("Cc", "Cs") for c in name)
        or any(part in ("", ".", "..") for part in name.split("/"))
    )
    if unsafe:
        raise Rejected(
            "intake.unsafe_path",
            f"unsafe file name in bundle: {name[:120]!r}",
            hint="use relative paths with '/' separators, no '..', no drive letters",
        )


def _is_litter(name: str) -> bool:
    """OS and tool droppings that are ignored, never extracted."""
    parts = name.split("/")
    return (
        parts[-1] == ".DS_Store" or name.endswith(".pyc") or any(p in _LITTER_DIRS for p in parts)
    )


def _check_mode(name: str, mode: int) -> None:
    """Reject symlinks and anything that is not a plain file or directory."""
    if stat.S_ISLNK(mode):
        raise Rejected("intake.symlink", f"symlink in bundle: {name}", hint="include real files")
    if stat.S_IFMT(mode) not in (0, stat.S_IFREG, stat.S_IFDIR):
        raise Rejected("intake.special_file", f"special file in bundle: {name}")


def _zip_members(zf: zipfile.ZipFile) -> Iterator[_Member]:
    """Validate a zip's central directory and yield its regular, non-litter files."""
    for info in zf.infolist():
        name = info.filename.rstrip("/") if info.is_dir() else info.filename
        _check_path(name)
        if _is_litter(name):
            continue
        _check_mode(name, info.external_attr >> 16)
        if info.is_dir():
            continue
        if info.flag_bits & 0x1:
            raise Rejected("intake.encrypted", f"encrypted member: {name}", hint="zip unencrypted")
        yield _Member(name, info.file_size, functools.partial(zf.open, info))


def _directory_members(root: Path) -> Iterator[_Member]:
    """Walk a directory without following symlinks and yield its regular, non-litter files."""
    pending = [""]
    while pending:
        prefix = pending.pop()
        with os.scandir(root / prefix) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                name = f"{prefix}{entry.name}"
                _check_path(name)
                if _is_litter(name):
                    continue
                mode = entry.stat(follow_symlinks=False).st_mode
                _check_mode(name, mode)
                if stat.S_ISDIR(mode):
                    pending.append(f"{name}/")
                    continue
                yield _Member(name, entry.stat(follow_symlinks=False).st_size, _opener(entry.path))


def _opener(path: str) -> Opener:
    """Open a regular file without following a symlink swapped in after the walk."""

    def open_regular() -> IO[bytes]:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise Rejected("intake.special_file", f"not a regular file: {path}")
        return os.fdopen(fd, "rb")

    return open_regular


def _plan(members: Iterable[_Member], limits: IntakeLimits) -> list[tuple[str, _Member]]:
    """Check names, suffixes, duplicates and declared sizes; strip a single top-level folder."""
    chosen: list[_Member] = []
    for member in members:
        chosen.append(member)
        if len(chosen) > limits.max_files:
            raise Rejected(
                "intake.too_many_files",
                f"bundle has more than {limits.max_files} files",
                hint="ship only the scripts and the helpers they need",
            )
    if not chosen:
        raise Rejected("intake.empty", "bundle holds no files", hint=_LAYOUT_HINT)
    tops = {m.path.split("/")[0] for m in chosen}
    strip = len(tops) == 1 and all("/" in m.path for m in chosen)
    plan = [(m.path.split("/", 1)[1] if strip else m.path, m) for m in chosen]
    files: dict[str, str] = {}  # case-folded key -> path, for files and for their parent dirs
    dirs: dict[str, str] = {}
    for path, member in plan:
        if PurePosixPath(path).suffix not in ALLOWED_SUFFIXES:
            raise Rejected(
                "intake.bad_suffix",
                f"file type not allowed: {path}",
                hint=f"allowed suffixes: {' '.join(ALLOWED_SUFFIXES)}",
            )
        key = unicodedata.normalize("NFC", path).casefold()
        parents = ["/".join(key.split("/")[:i]) for i in range(1, key.count("/") + 1)]
        clash = (
            files.get(key) or dirs.get(key) or next((files[p] for p in parents if p in files), None)
        )
        if clash is not None:
            raise Rejected(
                "intake.duplicate",
                f"{path} collides with {clash} (names are compared case-insensitively)",
            )
        files[key] = path
        dirs.update({p: path for p in parents})
        if member.declared_bytes > limits.max_file_bytes:
            raise _too_large(path, limits)
    if sum(m.declared_bytes for m in chosen) > limits.max_total_bytes:
        raise _too_large("bundle", limits)
    return plan


def _too_large(what: str, limits: IntakeLimits) -> Rejected:
    return Rejected(
        "intake.too_large",
        f"{what} is too large",
        hint=f"caps: {limits.max_file_bytes} bytes a file, {limits.max_total_bytes} in all",
    )


def _extract(plan: list[tuple[str, _Member]], dest: Path, limits: IntakeLimits) -> list[BundleFile]:
    """Stream every member to `dest`, counting real bytes; never trust declared sizes."""
    files: list[BundleFile] = []
    total = 0
    for path, member in plan:
        target = dest / path
        target.parent.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256()
        decoder = codecs.getincrementaldecoder("utf-8")("strict")
        size = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            with member.open() as source, os.fdopen(os.open(target, flags, 0o600), "wb") as sink:
                while chunk := source.read(_CHUNK_BYTES):  # inflates at most one chunk at a time
                    size += len(chunk)
                    total += len(chunk)
                    if size > limits.max_file_bytes or total > limits.max_total_bytes:
                        raise _too_large(path if size > limits.max_file_bytes else "bundle", limits)
                    decoder.decode(chunk)
                    digest.update(chunk)
                    sink.write(chunk)
            decoder.decode(b"", final=True)
        except UnicodeDecodeError as exc:
            raise Rejected("intake.not_utf8", f"{path} is not UTF-8 text") from exc
        files.append(BundleFile(path=path, sha256=digest.hexdigest(), bytes=size))
    return files


def _apply_bottom_up(
    dest: Path, on_file: Callable[[str], Any], on_dir: Callable[[str], Any]
) -> None:
    """Call `on_file`/`on_dir` on everything below `dest`, children before parents."""
    for current, dirs, names in os.walk(dest, topdown=False):
        for name in names:
            on_file(os.path.join(current, name))
        for name in dirs:
            on_dir(os.path.join(current, name))


def load_bundle(source: Path, dest_dir: Path, limits: IntakeLimits) -> Bundle:
    """Read a zip or directory bundle into the empty `dest_dir`, enforcing every intake rule.

    Members are streamed in chunks and counted as they inflate, so a zip bomb stops at the cap.
    On rejection `dest_dir` is left empty.
    """
    if not dest_dir.is_dir() or any(dest_dir.iterdir()):
        raise EvaluatorError("intake.dest_not_empty", f"{dest_dir} must be an empty directory")
    try:
        if source.is_dir():
            files = _extract(_plan(_directory_members(source), limits), dest_dir, limits)
        else:
            files = _load_zip(source, dest_dir, limits)
    except BaseException:
        _apply_bottom_up(dest_dir, os.unlink, os.rmdir)  # leave nothing half-written behind
        raise
    _apply_bottom_up(dest_dir, lambda f: os.chmod(f, 0o444), lambda d: os.chmod(d, 0o555))
    os.chmod(dest_dir, 0o555)
    files.sort(key=lambda f: f.path)
    return Bundle(root=dest_dir, files=tuple(files), sha256=bundle_digest(files))


def _load_zip(source: Path, dest_dir: Path, limits: IntakeLimits) -> list[BundleFile]:
    """Open, validate and extract a zip archive; map every archive error to a rule id."""
    try:
        info = source.stat()
    except OSError as exc:
        raise Rejected("intake.bad_archive", f"cannot read bundle {source}: {exc}") from exc
    if not stat.S_ISREG(info.st_mode):
        raise Rejected("intake.bad_archive", f"{source} is neither a zip file nor a directory")
    if info.st_size > limits.max_archive_bytes:
        raise Rejected(
            "intake.too_large",
            f"archive is {info.st_size} bytes",
            hint=f"cap: {limits.max_archive_bytes} bytes",
        )
    try:
        zf = zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as exc:
        raise Rejected("intake.bad_archive", f"not a readable zip: {exc}") from exc
    try:
        with zf:
            return _extract(_plan(_zip_members(zf), limits), dest_dir, limits)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError) as exc:
        raise Rejected("intake.bad_archive", f"corrupt zip: {exc}") from exc
    except (NotImplementedError, RuntimeError) as exc:
        raise Rejected("intake.bad_archive", f"unsupported zip member: {exc}") from exc


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
