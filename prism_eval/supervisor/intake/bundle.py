"""Supervisor: bundle intake and digest (docs/design.md §4 item 2).

A bundle is hostile bytes. This module reads them — from a zip or a directory — with caps on
count and size, and writes them to a directory the supervisor owns; it never imports them. Every
problem is a `Rejected` with a stable rule id. The prism.yaml contract is checked in `contract`.
"""

from __future__ import annotations

import codecs
import contextlib
import functools
import hashlib
import os
import re
import stat
import unicodedata
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import rfc8785
from pydantic import BaseModel, ConfigDict, Field

from prism_eval.errors import EvaluatorError, Rejected
from prism_eval.supervisor.config import IntakeLimits

ALLOWED_SUFFIXES = (".py", ".yaml", ".yml", ".json", ".txt", ".md", ".toml")
_CHUNK_BYTES = 64 * 1024
_MAX_PATH_CHARS = 255
_LITTER_DIRS = frozenset({"__MACOSX", "__pycache__"})
_LAYOUT_HINT = (
    "expected layout: architecture.py (defines build_model(ctx)), training.py (defines "
    "train(ctx)), optionally prism.yaml and helper files; or name other files in prism.yaml"
)


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

    @functools.cached_property
    def compressed_bytes(self) -> int:
        """zlib level 9 over every file (path, NUL, bytes) in path order.

        Deterministic and independent of how the miner zipped it: the bound on how much a
        bundle could carry besides its code (a pretrained table, say), shown in every record.
        """
        compressor = zlib.compressobj(9)
        size = 0
        for file in self.files:
            size += len(compressor.compress(file.path.encode() + b"\0"))
            size += len(compressor.compress((self.root / file.path).read_bytes()))
        return size + len(compressor.flush())

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


Opener = Callable[[], AbstractContextManager[Any]]  # → something with read(size) -> bytes


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
        # ZipInfo.is_dir() raises IndexError on an empty name: a hostile archive's to give
        is_dir = info.filename.endswith("/")
        name = info.filename.rstrip("/") if is_dir else info.filename
        _check_path(name)
        if _is_litter(name):
            continue
        _check_mode(name, info.external_attr >> 16)
        if is_dir:
            continue
        if info.flag_bits & 0x1:
            raise Rejected("intake.encrypted", f"encrypted member: {name}", hint="zip unencrypted")
        yield _Member(name, info.file_size, functools.partial(_ZipMember, zf, info))


def _bad_archive(exc: BaseException) -> Rejected:
    return Rejected("intake.bad_archive", f"corrupt zip: {type(exc).__name__}: {exc}"[:400])


class _ZipMember:
    """A zip member's stream. Whatever goes wrong reading it — a bad offset, an unknown
    version or method, a broken deflate stream — is the archive's fault, never ours."""

    def __init__(self, zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> None:
        self._zf, self._info = zf, info
        self._stream: IO[bytes] | None = None

    def __enter__(self) -> _ZipMember:
        try:
            self._stream = self._zf.open(self._info)
        except Exception as exc:
            raise _bad_archive(exc) from exc
        return self

    def read(self, size: int) -> bytes:
        assert self._stream is not None
        try:
            return self._stream.read(size)
        except Exception as exc:
            raise _bad_archive(exc) from exc

    def __exit__(self, *exc_info: object) -> None:
        if self._stream is not None:
            with contextlib.suppress(Exception):
                self._stream.close()


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
        if PurePosixPath(path).suffix.lower() not in ALLOWED_SUFFIXES:  # README.MD too
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


STDIN = Path("-")


def save_stream(stream: IO[bytes], path: Path, limits: IntakeLimits) -> Path:
    """Copy a zip read from a stream (`run -`: stdin) to `path`, refusing more than the archive
    cap before reading it all."""
    size = 0
    with path.open("wb") as sink:
        while chunk := stream.read(_CHUNK_BYTES):
            size += len(chunk)
            if size > limits.max_archive_bytes:
                raise Rejected(
                    "intake.too_large",
                    f"the archive on standard input is over {limits.max_archive_bytes} bytes",
                    hint=f"cap: {limits.max_archive_bytes} bytes",
                )
            sink.write(chunk)
    return path


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
    except Exception as exc:  # any archive the parser cannot take is not a bundle
        raise Rejected("intake.bad_archive", f"not a readable zip: {exc}"[:400]) from exc
    with zf:
        return _extract(_plan(_zip_members(zf), limits), dest_dir, limits)
