"""Supervisor: building locked data directories — from raw sources, or by locking a layout.

`prepare_data` reads raw sources (JSONL, Parquet, text files), assigns each document to a split
by `sha256(id) % 1000`, writes size-capped `<split>/<split>-NNNNN.jsonl` shards and then
`MANIFEST.json`; `lock_data_dir` writes the manifest for shards already laid out that way. Both
parse every line and refuse duplicate ids, so a bad directory fails here, not mid-run. Reading and
verifying a locked directory is in `data`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO

import orjson

from prism_eval.errors import EvaluatorError
from prism_eval.supervisor.data.locked import (
    _LINE_HINTS,
    MANIFEST_NAME,
    SPLITS,
    DataManifest,
    Document,
    ShardEntry,
    SplitEntry,
    _check_shard_path,
    _parse_line,
    _read_shard,
    _Tally,
    _to_document,
    build_manifest,
)

SPLIT_BOUNDS = {"train": 950, "val": 975, "test": 1000}  # sha256(id) % 1000 below the bound
JSONL_SUFFIXES = (".jsonl", ".ndjson")
TEXT_SUFFIXES = (".txt", ".md", ".rst")
PARQUET_BATCH_ROWS = 1024


def assign_split(doc_id: str) -> str:
    """The split of a document: `int(sha256(id), 16) % 1000` — train <950, val <975, else test."""
    bucket = int(hashlib.sha256(doc_id.encode("utf-8")).hexdigest(), 16) % 1000
    return next(name for name in SPLITS if bucket < SPLIT_BOUNDS[name])


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
