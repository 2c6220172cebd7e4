"""Tests for prism_eval.supervisor.data.locked: manifests, shard verification, document streams."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st

from prism_eval.supervisor.data.locked import (
    MANIFEST_SCHEMA,
    SPLITS,
    DataManifest,
    Document,
    ShardEntry,
    SplitEntry,
    build_manifest,
    iter_documents,
    load_manifest,
    manifest_sha256,
    verify_data_dir,
)
from prism_eval.supervisor.data.prepare import lock_data_dir
from tests.conftest import ROOT
from tests.supervisor.data.conftest import RaisesRule, write_jsonl

EXAMPLES = ROOT / "examples" / "data"


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
