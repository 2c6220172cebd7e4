"""Tests for supervisor.data.prepare: split assignment, preparation from sources, locking."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prism_eval.supervisor.data.locked import SPLITS, iter_documents, load_manifest, verify_data_dir
from prism_eval.supervisor.data.prepare import assign_split, lock_data_dir, prepare_data
from tests.supervisor.data.conftest import RaisesRule, sample_rows, write_jsonl

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
