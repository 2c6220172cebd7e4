"""Supervisor: locked data directories — the manifest, shard verification and document streams.

A data directory holds `MANIFEST.json` and JSONL shards, one `{"id": ..., "text": ...}` object per
line, at `<split>/<split>-NNNNN.jsonl` (DESIGN §4-5). The manifest lists every shard with its
sha256, byte size and document count; its `digest` is the sha256 of the RFC 8785 canonical JSON of
the `splits` block, so one hash pins the whole directory. Nothing here trusts a path or a byte
before it is checked: shard paths must stay inside the directory, and a shard is re-hashed while
it is streamed, so a file swapped after `verify_data_dir` still fails.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
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
SPLIT_BOUNDS = {"train": 950, "val": 975, "test": 1000}  # sha256(id) % 1000 below the bound
JSONL_SUFFIXES = (".jsonl", ".ndjson")
TEXT_SUFFIXES = (".txt", ".md", ".rst")
PARQUET_BATCH_ROWS = 1024
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


def assign_split(doc_id: str) -> str:
    """The split of a document: `int(sha256(id), 16) % 1000` — train <950, val <975, else test."""
    bucket = int(hashlib.sha256(doc_id.encode("utf-8")).hexdigest(), 16) % 1000
    return next(name for name in SPLITS if bucket < SPLIT_BOUNDS[name])


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


def _write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def lock_data_dir(data_dir: Path) -> DataManifest:
    """Write `MANIFEST.json` for an existing layout (`<split>/*.jsonl`, sorted by name).

    Every line is parsed (so a bad line fails now, not mid-run) and ids must be unique. An
    existing manifest is accepted only if it is exactly what locking would write.
    """
    if not data_dir.is_dir():
        raise EvaluatorError("data.no_manifest", f"no data directory at {data_dir}")
    splits: dict[str, SplitEntry] = {}
    seen: set[str] = set()
    for name in SPLITS:
        shards = []
        for path in sorted((data_dir / name).glob("*.jsonl")):
            rel = path.relative_to(data_dir).as_posix()
            _check_shard_path(data_dir, rel)
            tally = _Tally(rel)
            with path.open("rb") as handle:
                for document in _read_shard(handle, tally):
                    _claim_id(seen, document.id, rel)
            shards.append(tally.entry())
        if shards:
            splits[name] = _split_entry(shards)
    if not splits:
        raise EvaluatorError(
            "data.no_shards",
            f"{data_dir} has no shards: expected files like train/train-00000.jsonl",
        )
    manifest = build_manifest(splits)
    target = data_dir / MANIFEST_NAME
    if target.exists():
        if target.read_bytes() != manifest.to_json_bytes():
            raise EvaluatorError(
                "data.already_locked",
                f"{target} exists and does not match the shards on disk",
                hint="remove MANIFEST.json to re-lock the directory deliberately",
            )
        return manifest
    _write_atomically(target, manifest.to_json_bytes())
    return manifest


def _split_entry(shards: list[ShardEntry]) -> SplitEntry:
    return SplitEntry(
        shards=tuple(shards),
        documents=sum(s.documents for s in shards),
        bytes=sum(s.bytes for s in shards),
    )


def _claim_id(seen: set[str], doc_id: str, where: str) -> None:
    if doc_id in seen:
        raise EvaluatorError(
            "data.duplicate_id",
            f"document id {doc_id!r} appears twice (second time in {where})",
            hint="document ids must be unique across all sources and splits",
        )
    seen.add(doc_id)


# -- preparing a data directory from raw sources ---------------------------------------------


def _read_jsonl(path: Path, root: Path) -> Iterator[Document]:
    with path.open("rb") as handle:
        for lineno, line in enumerate(handle, start=1):
            if line.strip():  # raw sources may have blank lines; locked shards may not
                yield _parse_line(line, f"{path}:{lineno}", "data.bad_source", id_optional=True)


def _read_parquet(path: Path, root: Path) -> Iterator[Document]:
    import pyarrow.parquet as pq  # imported here: only parquet sources need it

    columns = ["text"]
    row = 0
    try:
        parquet = pq.ParquetFile(path)
        names = set(parquet.schema_arrow.names)
        if "text" not in names:
            raise EvaluatorError("data.bad_source", f"{path}: no 'text' column ({sorted(names)})")
        columns = ["id", "text"] if "id" in names else ["text"]
        batches = parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns)
        while (batch := next(batches, None)) is not None:
            texts = batch.column("text").to_pylist()
            ids = batch.column("id").to_pylist() if "id" in columns else [None] * len(texts)
            for doc_id, text in zip(ids, texts, strict=True):
                row += 1
                where = f"{path}: row {row}"
                yield _to_document(
                    {"id": doc_id, "text": text}, where, "data.bad_source", id_optional=True
                )
    except EvaluatorError:
        raise
    except Exception as exc:  # pyarrow raises many unrelated types for unreadable files
        raise EvaluatorError(
            "data.bad_source",
            f"{path}: cannot read Parquet column(s) {columns} after row {row}: {exc}",
            hint=_LINE_HINTS["data.bad_source"],
        ) from exc


def _read_text(path: Path, root: Path) -> Iterator[Document]:
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise EvaluatorError("data.bad_source", f"{path}: not UTF-8 text: {exc}") from exc
    yield Document(path.relative_to(root).as_posix() if path != root else path.name, text)


def _reader(path: Path) -> Callable[[Path, Path], Iterator[Document]] | None:
    suffix = path.suffix.lower()
    if suffix in JSONL_SUFFIXES:
        return _read_jsonl
    if suffix == ".parquet":
        return _read_parquet
    return _read_text if suffix in TEXT_SUFFIXES else None


def iter_source_documents(sources: Sequence[Path]) -> Iterator[Document]:
    """Documents from raw sources, in order; directories are walked in sorted path order."""
    for source in sources:
        if source.is_dir():
            files = sorted(
                (p for p in source.rglob("*") if p.is_file()),
                key=lambda p: p.relative_to(source).as_posix(),
            )
            root = source
        elif source.is_file():
            files, root = [source], source
        else:
            raise EvaluatorError("data.bad_source", f"{source}: no such file or directory")
        for path in files:
            if any(part.startswith(".") for part in path.relative_to(root).parts):
                continue  # hidden files (.DS_Store, .git/) are not documents
            reader = _reader(path)
            if reader is None:
                raise EvaluatorError(
                    "data.bad_source",
                    f"{path}: unsupported file type {path.suffix!r}",
                    hint=_LINE_HINTS["data.bad_source"],
                )
            yield from reader(path, root)


class _ShardWriter:
    """Writes one split's documents into size-capped shards and records their entries."""

    def __init__(self, root: Path, split: str, shard_bytes: int) -> None:
        self.root, self.split, self.shard_bytes = root, split, shard_bytes
        self.entries: list[ShardEntry] = []
        self._handle: IO[bytes] | None = None
        self._tally = _Tally("")

    def write(self, line: bytes) -> None:
        if self._handle is not None and self._tally.bytes + len(line) > self.shard_bytes:
            self.close()
        if self._handle is None:
            self._tally = _Tally(f"{self.split}/{self.split}-{len(self.entries):05d}.jsonl")
            (self.root / self.split).mkdir(parents=True, exist_ok=True)
            self._handle = (self.root / self._tally.path).open("xb")
        self._handle.write(line)
        self._tally.add(line)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
            self.entries.append(self._tally.entry())


def prepare_data(
    sources: Sequence[Path], out_dir: Path, *, shard_bytes: int = 64 * 2**20
) -> DataManifest:
    """Build a locked data directory from raw sources; split each document by sha256(id) % 1000.

    Writes `<split>/<split>-NNNNN.jsonl` shards (at most `shard_bytes` each, unless one document
    is larger) and then `MANIFEST.json`, in a staging directory renamed into place at the end, so
    a failure leaves `out_dir` as it was. Refuses a non-empty `out_dir` and duplicate ids.
    """
    if shard_bytes < 1:
        raise EvaluatorError("data.bad_source", f"shard_bytes must be positive, got {shard_bytes}")
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise EvaluatorError(
            "data.out_dir_not_empty",
            f"{out_dir} exists and is not an empty directory",
            hint="choose a new output directory; prepare_data never overwrites data",
        )
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        writers = {name: _ShardWriter(staging, name, shard_bytes) for name in SPLITS}
        seen: set[str] = set()
        for document in iter_source_documents(sources):
            _claim_id(seen, document.id, "the sources")
            line = orjson.dumps({"id": document.id, "text": document.text}) + b"\n"
            writers[assign_split(document.id)].write(line)
        for writer in writers.values():
            writer.close()
        manifest = build_manifest({n: _split_entry(w.entries) for n, w in writers.items()})
        _write_atomically(staging / MANIFEST_NAME, manifest.to_json_bytes())
        staging.chmod(0o755)
        os.replace(staging, out_dir)  # an empty out_dir is replaced atomically
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest
