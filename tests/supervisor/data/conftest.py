"""Shared helpers for the data tests (test_data, test_data_prepare): writers and a prepared dir."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from prism_eval.errors import EvaluatorError
from prism_eval.supervisor.data.prepare import prepare_data


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
