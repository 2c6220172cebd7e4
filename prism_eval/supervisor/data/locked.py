"""Supervisor: locked data directories — the manifest, shard verification and document streams.

A data directory holds `MANIFEST.json` and JSONL shards, one `{"id": ..., "text": ...}` object per
line, at `<split>/<split>-NNNNN.jsonl` (docs/design.md §4-5). The manifest lists every shard with
its sha256, byte size and document count; its `digest` is the sha256 of the RFC 8785 canonical JSON
of the `splits` block, so one hash pins the whole directory. Nothing here trusts a path or a byte
before it is checked: shard paths must stay inside the directory, and a shard is re-hashed while it
is streamed, so a file swapped after `verify_data_dir` still fails. Building such a directory
(`prepare_data`, `lock_data_dir`) is in `data_prepare`.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Iterator
from io import BufferedReader
from pathlib import Path, PurePosixPath
from typing import IO, Any, Final, Literal, NamedTuple

import orjson
import rfc8785
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prism_eval.errors import EvaluatorError

MANIFEST_SCHEMA: Final = "prism-eval.data-manifest/v1"
MANIFEST_NAME = "MANIFEST.json"
SPLITS = ("train", "val", "test")
MAX_MANIFEST_BYTES = 64 * 2**20
LOCK_HINT = (
    "lock the directory with `prism-eval data lock DIR` or build one with "
    "`prism-eval data prepare SRC... --out DIR`"
)
_SHARD_PATH = re.compile(r"^[A-Za-z0-9._\-/]+$")


class ShardEntry(BaseModel):
    """One shard file of a split."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = Field(description="Path relative to the data directory, POSIX separators.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex sha256 of the file's bytes.")
    bytes: int = Field(ge=0, description="Size of the file in bytes.")
    documents: int = Field(ge=0, description="Number of JSONL lines (documents) in the file.")


class SplitEntry(BaseModel):
    """The shards of one split, in stream order, with their totals."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    shards: tuple[ShardEntry, ...] = Field(description="Shards in stream order.")
    documents: int = Field(ge=0, description="Sum of the shards' document counts.")
    bytes: int = Field(ge=0, description="Sum of the shards' file sizes in bytes.")

    @model_validator(mode="after")
    def _totals_match(self) -> SplitEntry:
        if self.documents != sum(s.documents for s in self.shards):
            raise ValueError("documents is not the sum of the shards' documents")
        if self.bytes != sum(s.bytes for s in self.shards):
            raise ValueError("bytes is not the sum of the shards' bytes")
        return self


class DataManifest(BaseModel):
    """`MANIFEST.json`: every shard of every split, and one digest over all of them."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_: Literal["prism-eval.data-manifest/v1"] = Field(
        MANIFEST_SCHEMA, alias="schema", description="Schema name of this manifest."
    )
    splits: dict[str, SplitEntry] = Field(description="Split name → its shards.")
    digest: str = Field(description="sha256 of the RFC 8785 canonical JSON of `splits`.")

    @model_validator(mode="after")
    def _check(self) -> DataManifest:
        unknown = sorted(set(self.splits) - set(SPLITS))
        if unknown:
            raise ValueError(f"unknown split(s) {unknown}; allowed: {list(SPLITS)}")
        paths = [s.path for split in self.splits.values() for s in split.shards]
        if len(paths) != len(set(paths)):
            raise ValueError("a shard path is listed twice")
        if self.digest != splits_digest(self.splits):
            raise ValueError("digest does not match the splits (was the manifest edited?)")
        return self

    def to_json_bytes(self) -> bytes:
        """The manifest file's bytes: sorted keys, two-space indent, trailing newline."""
        data = self.model_dump(mode="json", by_alias=True)
        return (json.dumps(data, sort_keys=True, indent=2, ensure_ascii=False) + "\n").encode()


class Document(NamedTuple):
    """One document of a split."""

    id: str
    text: str


def splits_digest(splits: dict[str, SplitEntry]) -> str:
    """sha256 of the RFC 8785 canonical JSON of a manifest's `splits` block."""
    data = {name: entry.model_dump(mode="json") for name, entry in splits.items()}
    return hashlib.sha256(rfc8785.dumps(data)).hexdigest()


def build_manifest(splits: dict[str, SplitEntry]) -> DataManifest:
    """A manifest for these splits, with its digest computed."""
    return DataManifest(splits=splits, digest=splits_digest(splits))


def _check_shard_path(data_dir: Path, rel: str) -> Path:
    """Resolve a manifest path, refusing anything that could leave the data directory."""
    pure = PurePosixPath(rel)
    if (
        not rel
        or not _SHARD_PATH.match(rel)
        or pure.is_absolute()
        or any(part in ("", ".", "..") for part in rel.split("/"))
        or rel == MANIFEST_NAME
    ):
        raise EvaluatorError(
            "data.unsafe_path",
            f"manifest shard path {rel!r} is not a plain relative path inside the data directory",
            hint="shard paths look like `train/train-00000.jsonl`: no '..', no leading '/'",
        )
    root = data_dir.resolve()
    resolved = (root / pure).resolve()
    if not resolved.is_relative_to(root):
        raise EvaluatorError(
            "data.unsafe_path",
            f"shard {rel} resolves to {resolved}, outside the data directory {root}",
            hint="shards must be regular files inside the data directory, not symlinks out of it",
        )
    return resolved


def manifest_sha256(data_dir: Path) -> str:
    """sha256 of the `MANIFEST.json` bytes, as recorded in a score record."""
    return hashlib.sha256(_read_manifest_bytes(data_dir)).hexdigest()


def _read_manifest_bytes(data_dir: Path) -> bytes:
    path = data_dir / MANIFEST_NAME
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_MANIFEST_BYTES + 1)
    except FileNotFoundError as exc:
        raise EvaluatorError(
            "data.no_manifest", f"no {MANIFEST_NAME} in data directory {data_dir}", hint=LOCK_HINT
        ) from exc
    except OSError as exc:
        raise EvaluatorError("data.no_manifest", f"cannot read {path}: {exc}") from exc
    if len(data) > MAX_MANIFEST_BYTES:
        raise EvaluatorError("data.bad_manifest", f"{path} is larger than {MAX_MANIFEST_BYTES}")
    return data


def load_manifest(data_dir: Path) -> DataManifest:
    """Read and validate `MANIFEST.json`: schema, digest, and shard paths that stay inside."""
    raw = _read_manifest_bytes(data_dir)
    try:
        manifest = DataManifest.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}"
            for err in exc.errors()
        )
        raise EvaluatorError(
            "data.bad_manifest",
            f"{data_dir / MANIFEST_NAME} is invalid: {problems}",
            hint=LOCK_HINT,
        ) from exc
    for split in manifest.splits.values():
        for shard in split.shards:
            _check_shard_path(data_dir, shard.path)
    return manifest


def _select_splits(manifest: DataManifest, splits: Iterable[str] | None) -> list[str]:
    chosen = list(manifest.splits) if splits is None else list(splits)
    for name in chosen:
        if name not in manifest.splits:
            raise EvaluatorError(
                "data.unknown_split",
                f"split {name!r} is not in the data manifest (it has {sorted(manifest.splits)})",
            )
    return chosen


_CHANGED_HINT = "the shard changed after the directory was locked; restore it or re-lock the data"


class _Tally:
    """The running sha256, byte size and line count of a shard being read or written."""

    def __init__(self, path: str) -> None:
        self.path, self.digest, self.bytes, self.documents = path, hashlib.sha256(), 0, 0

    def add(self, line: bytes) -> None:
        self.digest.update(line)
        self.bytes += len(line)
        self.documents += 1

    def entry(self) -> ShardEntry:
        return ShardEntry(
            path=self.path,
            sha256=self.digest.hexdigest(),
            bytes=self.bytes,
            documents=self.documents,
        )


def _check_shard(shard: ShardEntry, actual: ShardEntry) -> None:
    """Raise the first difference between a manifest entry and what is on disk."""
    if actual.bytes != shard.bytes:
        raise EvaluatorError(
            "data.size_mismatch",
            f"shard {shard.path}: {actual.bytes} bytes, the manifest says {shard.bytes}",
            hint=_CHANGED_HINT,
        )
    if actual.sha256 != shard.sha256:
        raise EvaluatorError(
            "data.hash_mismatch",
            f"shard {shard.path}: sha256 is {actual.sha256}, the manifest says {shard.sha256}",
            hint=_CHANGED_HINT,
        )
    if actual.documents != shard.documents:
        raise EvaluatorError(
            "data.count_mismatch",
            f"shard {shard.path}: {actual.documents} documents, the manifest says "
            f"{shard.documents}",
            hint=LOCK_HINT,
        )


def _open_shard(data_dir: Path, shard: ShardEntry) -> BufferedReader:
    path = _check_shard_path(data_dir, shard.path)
    try:
        return path.open("rb")
    except OSError as exc:
        missing = isinstance(exc, FileNotFoundError)
        raise EvaluatorError(
            "data.missing_shard",
            f"shard {shard.path} is missing from {data_dir}"
            if missing
            else f"cannot read shard {shard.path}: {exc}",
            hint="restore the data directory from its source",
        ) from exc


def verify_data_dir(data_dir: Path, splits: Iterable[str] | None = None) -> DataManifest:
    """Load the manifest and check every shard of `splits` (default: all): size, then sha256."""
    manifest = load_manifest(data_dir)
    for name in _select_splits(manifest, splits):
        for shard in manifest.splits[name].shards:
            with _open_shard(data_dir, shard) as handle:
                size = os.fstat(handle.fileno()).st_size
                sha = (
                    hashlib.file_digest(handle, "sha256").hexdigest() if size == shard.bytes else ""
                )
            _check_shard(shard, shard.model_copy(update={"bytes": size, "sha256": sha}))
    return manifest


_LINE_HINTS = {
    "data.bad_line": "every shard line is a JSON object with 'id' (string or integer) and 'text'",
    "data.bad_source": "sources are .jsonl/.ndjson ({id?, text}), .parquet (text, id?), "
    ".txt/.md/.rst",
}


def _to_document(obj: Any, where: str, rule: str, *, id_optional: bool = False) -> Document:
    """Check one `{"id", "text"}` object (a JSONL line or a Parquet row) and make a document."""
    if not isinstance(obj, dict):
        raise EvaluatorError(rule, f"{where}: expected a JSON object", hint=_LINE_HINTS[rule])
    doc_id, text = obj.get("id"), obj.get("text")
    if not isinstance(text, str):
        raise EvaluatorError(rule, f"{where}: 'text' must be a string", hint=_LINE_HINTS[rule])
    if doc_id is None and id_optional:
        doc_id = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if isinstance(doc_id, bool) or not isinstance(doc_id, str | int):
        raise EvaluatorError(
            rule, f"{where}: 'id' must be a string or an integer", hint=_LINE_HINTS[rule]
        )
    return Document(str(doc_id), text)


def _parse_line(line: bytes, where: str, rule: str, *, id_optional: bool = False) -> Document:
    """Parse one JSONL line (orjson: strict UTF-8, no lone surrogates) into a document."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise EvaluatorError(
            rule, f"{where}: not valid JSON: {exc}", hint=_LINE_HINTS[rule]
        ) from exc
    return _to_document(obj, where, rule, id_optional=id_optional)


def _read_shard(handle: IO[bytes], tally: _Tally) -> Iterator[Document]:
    """Parse a shard line by line, feeding every byte to `tally`."""
    for lineno, line in enumerate(handle, start=1):
        tally.add(line)
        yield _parse_line(line, f"{tally.path}:{lineno}", "data.bad_line")


def iter_documents(data_dir: Path, manifest: DataManifest, split: str) -> Iterator[Document]:
    """Stream a split's documents: shards in manifest order, lines in file order.

    Each shard is re-hashed as it is read and checked against the manifest at its end, so a shard
    swapped after `verify_data_dir` still stops the stream (with `data.hash_mismatch`).
    """
    for shard in manifest.splits[_select_splits(manifest, [split])[0]].shards:
        tally = _Tally(shard.path)
        with _open_shard(data_dir, shard) as handle:
            yield from _read_shard(handle, tally)
        _check_shard(shard, tally.entry())
