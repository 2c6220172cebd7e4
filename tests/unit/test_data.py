"""Tests for prism_eval.data: manifests, shard verification, document streams, preparation."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from prism_eval.data import (
    MANIFEST_SCHEMA,
    SPLITS,
    DataManifest,
    Document,
    ShardEntry,
    SplitEntry,
    assign_split,
    build_manifest,
    iter_documents,
    load_manifest,
    lock_data_dir,
    manifest_sha256,
    prepare_data,
    verify_data_dir,
)
from prism_eval.errors import EvaluatorError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "data"


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(orjson.dumps(row) + b"\n" for row in rows))
    return path


def sample_rows(n: int = 60) -> list[dict[str, Any]]:
    return [{"id": f"doc-{i}", "text": f"Document {i}: " + "words " * (i % 7)} for i in range(n)]


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A prepared directory with several train shards."""
    source = write_jsonl(tmp_path / "src" / "docs.jsonl", sample_rows(200))
    prepare_data([source], tmp_path / "data", shard_bytes=2048)
    return tmp_path / "data"


class RaisesRule:
    """Context manager: the block must raise an EvaluatorError with this rule id."""

    def __init__(self, rule_id: str) -> None:
        self.rule_id = rule_id
        self.error: EvaluatorError | None = None

    def __enter__(self) -> RaisesRule:
        return self

    def __exit__(self, kind: Any, value: Any, tb: Any) -> bool:
        assert isinstance(value, EvaluatorError), f"expected {self.rule_id}, got {value!r}"
        assert value.rule_id == self.rule_id, f"expected {self.rule_id}, got {value}"
        self.error = value
        return True

    @property
    def message(self) -> str:
        assert self.error is not None
        return self.error.message


def rewrite_manifest(data_dir: Path, edit: Any) -> None:
    """Apply `edit` to the manifest's splits and store it again with a valid digest."""
    raw = json.loads((data_dir / "MANIFEST.json").read_text())
    edit(raw["splits"])
    raw["digest"] = hashlib.sha256(rfc8785.dumps(raw["splits"])).hexdigest()
    (data_dir / "MANIFEST.json").write_text(json.dumps(raw))


# -- manifest ----------------------------------------------------------------------------------


def test_manifest_round_trip(data_dir: Path) -> None:
    manifest = load_manifest(data_dir)
    raw = (data_dir / "MANIFEST.json").read_bytes()
    assert manifest.to_json_bytes() == raw
    assert raw.endswith(b"}\n")
    assert json.loads(raw)["schema"] == MANIFEST_SCHEMA
    assert DataManifest.model_validate_json(manifest.to_json_bytes()) == manifest
    assert manifest_sha256(data_dir) == hashlib.sha256(raw).hexdigest()
    splits_json = json.loads(raw)["splits"]
    assert manifest.digest == hashlib.sha256(rfc8785.dumps(splits_json)).hexdigest()
    assert len(manifest.splits["train"].shards) > 1
    assert verify_data_dir(data_dir) == manifest


@settings(max_examples=50, deadline=None)
@given(
    counts=st.lists(st.tuples(st.integers(0, 10**9), st.integers(0, 10**6)), min_size=0, max_size=4)
)
def test_manifest_model_round_trip_property(counts: list[tuple[int, int]]) -> None:
    shards = [
        ShardEntry(path=f"train/train-{i:05d}.jsonl", sha256="0" * 64, bytes=b, documents=d)
        for i, (b, d) in enumerate(counts)
    ]
    split = SplitEntry(
        shards=tuple(shards),
        documents=sum(d for _, d in counts),
        bytes=sum(b for b, _ in counts),
    )
    manifest = build_manifest({"train": split})
    assert DataManifest.model_validate_json(manifest.to_json_bytes()) == manifest


def test_missing_manifest(tmp_path: Path) -> None:
    with RaisesRule("data.no_manifest"):
        load_manifest(tmp_path)


def test_edited_manifest_fails_its_digest(data_dir: Path) -> None:
    raw = json.loads((data_dir / "MANIFEST.json").read_text())
    raw["splits"]["train"]["shards"][0]["documents"] += 1
    raw["splits"]["train"]["documents"] += 1
    (data_dir / "MANIFEST.json").write_text(json.dumps(raw))
    with RaisesRule("data.bad_manifest") as caught:
        load_manifest(data_dir)
    assert "digest" in caught.message


@pytest.mark.parametrize(
    "edit",
    [
        lambda raw: raw.update(schema="prism-eval.data-manifest/v0"),
        lambda raw: raw.update(extra=1),
        lambda raw: raw["splits"].update(dev=raw["splits"]["val"]),
    ],
    ids=["schema", "unknown-key", "unknown-split"],
)
def test_malformed_manifest(data_dir: Path, edit: Any) -> None:
    raw = json.loads((data_dir / "MANIFEST.json").read_text())
    edit(raw)
    raw["digest"] = hashlib.sha256(rfc8785.dumps(raw["splits"])).hexdigest()
    (data_dir / "MANIFEST.json").write_text(json.dumps(raw))
    with RaisesRule("data.bad_manifest"):
        load_manifest(data_dir)


@pytest.mark.parametrize(
    "path", ["../outside.jsonl", "/etc/passwd", "train/../../x.jsonl", "train\\x.jsonl", ""]
)
def test_unsafe_shard_path_is_rejected(data_dir: Path, path: str) -> None:
    rewrite_manifest(data_dir, lambda splits: splits["val"]["shards"][0].update(path=path))
    with RaisesRule("data.unsafe_path"):
        load_manifest(data_dir)


def test_symlink_out_of_the_data_dir_is_rejected(data_dir: Path, tmp_path: Path) -> None:
    shard = data_dir / "val" / "val-00000.jsonl"
    outside = tmp_path / "outside.jsonl"
    outside.write_bytes(shard.read_bytes())
    shard.unlink()
    shard.symlink_to(outside)
    with RaisesRule("data.unsafe_path") as caught:
        verify_data_dir(data_dir)
    assert "val/val-00000.jsonl" in caught.message


# -- verification ------------------------------------------------------------------------------


def test_flipped_byte_is_a_hash_mismatch_naming_the_shard(data_dir: Path) -> None:
    shard = data_dir / "train" / "train-00001.jsonl"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0x01
    shard.write_bytes(bytes(data))
    with RaisesRule("data.hash_mismatch") as caught:
        verify_data_dir(data_dir)
    assert "train/train-00001.jsonl" in caught.message
    expected = load_manifest(data_dir).splits["train"].shards[1].sha256
    assert expected in caught.message
    assert hashlib.sha256(bytes(data)).hexdigest() in caught.message
    verify_data_dir(data_dir, ["val", "test"])  # other splits still verify


def test_shard_swapped_after_verification_stops_the_stream(data_dir: Path) -> None:
    manifest = verify_data_dir(data_dir)
    shard = data_dir / "train" / "train-00000.jsonl"
    shard.write_bytes(shard.read_bytes().replace(b"Document", b"Dokument"))
    with RaisesRule("data.hash_mismatch"):
        list(iter_documents(data_dir, manifest, "train"))


def test_truncated_shard_is_a_size_mismatch(data_dir: Path) -> None:
    shard = data_dir / "test" / "test-00000.jsonl"
    shard.write_bytes(shard.read_bytes()[:-5])
    with RaisesRule("data.size_mismatch") as caught:
        verify_data_dir(data_dir)
    assert "test/test-00000.jsonl" in caught.message


def test_missing_shard(data_dir: Path) -> None:
    (data_dir / "val" / "val-00000.jsonl").unlink()
    with RaisesRule("data.missing_shard") as caught:
        verify_data_dir(data_dir)
    assert "val/val-00000.jsonl" in caught.message


def test_unknown_split(data_dir: Path) -> None:
    with RaisesRule("data.unknown_split"):
        verify_data_dir(data_dir, ["heldout"])
    with RaisesRule("data.unknown_split"):
        list(iter_documents(data_dir, load_manifest(data_dir), "dev"))


# -- streaming ---------------------------------------------------------------------------------


def test_iter_documents_keeps_manifest_and_line_order(data_dir: Path) -> None:
    manifest = verify_data_dir(data_dir)
    expected = []
    for shard in manifest.splits["train"].shards:
        for line in (data_dir / shard.path).read_bytes().splitlines():
            row = json.loads(line)
            expected.append(Document(row["id"], row["text"]))
    documents = list(iter_documents(data_dir, manifest, "train"))
    assert documents == expected
    assert len(documents) == manifest.splits["train"].documents
    # prepare_data keeps the sources' order within a split
    order = [int(d.id.split("-")[1]) for d in documents]
    assert order == sorted(order)


def test_integer_ids_become_strings(tmp_path: Path) -> None:
    data_dir = tmp_path / "ref"
    write_jsonl(data_dir / "train" / "train-00000.jsonl", [{"id": 7, "text": "seven"}])
    manifest = lock_data_dir(data_dir)
    assert list(iter_documents(data_dir, manifest, "train")) == [Document("7", "seven")]


@pytest.mark.parametrize(
    "line",
    [
        b"not json\n",
        b"[1, 2]\n",
        b'{"text": "no id"}\n',
        b'{"id": true, "text": "bool id"}\n',
        b'{"id": "x", "text": 5}\n',
        b'{"id": "x", "text": "\\ud800"}\n',
        b"\n",
    ],
)
def test_bad_line_names_shard_and_line(tmp_path: Path, line: bytes) -> None:
    shard = tmp_path / "ref" / "train" / "train-00000.jsonl"
    shard.parent.mkdir(parents=True)
    shard.write_bytes(b'{"id": "a", "text": "fine"}\n' + line)
    with RaisesRule("data.bad_line") as caught:
        lock_data_dir(tmp_path / "ref")
    assert caught.message.startswith("train/train-00000.jsonl:2: ")


# -- preparation -------------------------------------------------------------------------------


def test_split_assignment_follows_sha256_of_the_id(data_dir: Path) -> None:
    manifest = load_manifest(data_dir)
    for split in SPLITS:
        for document in iter_documents(data_dir, manifest, split):
            bucket = int(hashlib.sha256(document.id.encode()).hexdigest(), 16) % 1000
            expected = "train" if bucket < 950 else "val" if bucket < 975 else "test"
            assert split == expected == assign_split(document.id)


@settings(max_examples=200)
@given(doc_id=st.text(min_size=1))
def test_assign_split_bounds(doc_id: str) -> None:
    bucket = int(hashlib.sha256(doc_id.encode()).hexdigest(), 16) % 1000
    assert assign_split(doc_id) == ("train" if bucket < 950 else "val" if bucket < 975 else "test")


def test_prepare_from_jsonl_parquet_and_text(tmp_path: Path) -> None:
    src = tmp_path / "src"
    write_jsonl(src / "a.jsonl", [{"id": "j1", "text": "from jsonl"}, {"text": "no id here"}])
    (src / "notes").mkdir(parents=True)
    (src / "notes" / "b.txt").write_text("a text file\n", encoding="utf-8")
    (src / "notes" / "c.md").write_text("# markdown ünïcode\n", encoding="utf-8")
    (src / "notes" / ".DS_Store").write_bytes(b"\x00\x01")  # hidden: ignored
    table = pa.table({"id": [f"p{i}" for i in range(10)], "text": [f"row {i}" for i in range(10)]})
    pq.write_table(table, src / "rows.parquet", row_group_size=3)
    pq.write_table(pa.table({"text": ["only text"]}), tmp_path / "single.parquet")

    manifest = prepare_data([src, tmp_path / "single.parquet"], tmp_path / "out")
    documents = {
        d.id: d.text for split in SPLITS for d in iter_documents(tmp_path / "out", manifest, split)
    }
    assert documents["j1"] == "from jsonl"
    assert documents[hashlib.sha256(b"no id here").hexdigest()] == "no id here"
    assert documents["notes/b.txt"] == "a text file\n"
    assert documents["notes/c.md"] == "# markdown ünïcode\n"
    assert {f"p{i}" for i in range(10)} <= set(documents)
    assert documents[hashlib.sha256(b"only text").hexdigest()] == "only text"
    assert len(documents) == 15
    assert sum(s.documents for s in manifest.splits.values()) == 15
    verify_data_dir(tmp_path / "out")


def test_prepare_is_deterministic(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", sample_rows())
    first = prepare_data([source], tmp_path / "one", shard_bytes=500)
    second = prepare_data([source], tmp_path / "two", shard_bytes=500)
    assert first == second
    for split in first.splits.values():
        for shard in split.shards:
            assert (tmp_path / "one" / shard.path).read_bytes() == (
                tmp_path / "two" / shard.path
            ).read_bytes()


def test_prepare_caps_shard_size(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", sample_rows(100))
    manifest = prepare_data([source], tmp_path / "out", shard_bytes=300)
    shards = manifest.splits["train"].shards
    assert len(shards) > 5
    assert [s.path for s in shards] == [f"train/train-{i:05d}.jsonl" for i in range(len(shards))]
    assert all(s.bytes <= 300 for s in shards)


def test_prepare_refuses_duplicate_ids(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"id": "same", "text": "one"}])
    write_jsonl(tmp_path / "b.jsonl", [{"id": "same", "text": "two"}])
    with RaisesRule("data.duplicate_id") as caught:
        prepare_data([tmp_path / "a.jsonl", tmp_path / "b.jsonl"], tmp_path / "out")
    assert "'same'" in caught.message
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # staging removed


def test_prepare_refuses_a_non_empty_out_dir(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "docs.jsonl", sample_rows(3))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with RaisesRule("data.out_dir_not_empty"):
        prepare_data([source], tmp_path / "out")
    (tmp_path / "empty").mkdir()
    prepare_data([source], tmp_path / "empty")  # an existing empty directory is fine
    verify_data_dir(tmp_path / "empty")


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("x.csv", b"id,text\n"),
        ("x.jsonl", b'{"id": "a"}\n'),
        ("x.txt", b"\xff\xfe not utf-8"),
        ("x.parquet", b"not parquet"),
    ],
)
def test_prepare_rejects_bad_sources(tmp_path: Path, name: str, content: bytes) -> None:
    (tmp_path / name).write_bytes(content)
    with RaisesRule("data.bad_source"):
        prepare_data([tmp_path / name], tmp_path / "out")


def test_parquet_without_text_column_is_rejected(tmp_path: Path) -> None:
    pq.write_table(pa.table({"content": ["x"]}), tmp_path / "x.parquet")
    with RaisesRule("data.bad_source") as caught:
        prepare_data([tmp_path / "x.parquet"], tmp_path / "out")
    assert "text" in caught.message


# -- locking a reference layout ----------------------------------------------------------------


def test_lock_reference_layout(tmp_path: Path) -> None:
    data_dir = tmp_path / "ref"
    rows = sample_rows(10)
    write_jsonl(data_dir / "train" / "train-00001.jsonl", rows[5:])
    write_jsonl(data_dir / "train" / "train-00000.jsonl", rows[:5])
    write_jsonl(data_dir / "val" / "val-00000.jsonl", [{"id": "v", "text": "held"}])
    manifest = lock_data_dir(data_dir)
    assert [s.path for s in manifest.splits["train"].shards] == [
        "train/train-00000.jsonl",
        "train/train-00001.jsonl",
    ]
    assert manifest.splits["train"].documents == 10
    assert "test" not in manifest.splits
    assert verify_data_dir(data_dir) == manifest
    assert [d.id for d in iter_documents(data_dir, manifest, "train")] == [r["id"] for r in rows]
    assert lock_data_dir(data_dir) == manifest  # locking again is a no-op
    write_jsonl(data_dir / "train" / "train-00002.jsonl", [{"id": "new", "text": "late"}])
    with RaisesRule("data.already_locked"):
        lock_data_dir(data_dir)


def test_lock_refuses_duplicate_ids_and_empty_dirs(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "dup" / "train" / "train-00000.jsonl", [{"id": 1, "text": "a"}])
    write_jsonl(tmp_path / "dup" / "val" / "val-00000.jsonl", [{"id": "1", "text": "b"}])
    with RaisesRule("data.duplicate_id"):
        lock_data_dir(tmp_path / "dup")
    (tmp_path / "empty").mkdir()
    with RaisesRule("data.no_shards"):
        lock_data_dir(tmp_path / "empty")


# -- the embedded dataset ------------------------------------------------------------------------


def test_embedded_dataset_verifies_and_has_train_documents() -> None:
    manifest = verify_data_dir(EXAMPLES)
    assert set(manifest.splits) == set(SPLITS)
    assert manifest.splits["train"].documents > 1000
    total = sum(entry.bytes for entry in manifest.splits.values())
    assert 3_000_000 < total <= 5_000_000
    first = next(iter_documents(EXAMPLES, manifest, "train"))
    assert first.text.strip()
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert manifest.digest in readme
    assert re.search(r"Python Software Foundation License", (EXAMPLES / "LICENSE").read_text())
