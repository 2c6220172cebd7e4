"""The ranks check's pure parts: how the stream is shared out, and how errors are named."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import cast

import numpy as np
import pytest

from prism_eval.errors import EvaluatorError, Failed, Rejected
from prism_eval.protocol import StreamOpen
from prism_eval.supervisor.config import load_config
from prism_eval.supervisor.data.locked import Document
from prism_eval.supervisor.data.packing import PackedBatch
from prism_eval.supervisor.data.tokenizers import load_tokenizer
from prism_eval.supervisor.doctor import selftest_spec
from prism_eval.supervisor.sandbox.launch import WorkerProcess
from prism_eval.supervisor.stages.ranks import (
    MIN_BATCHES_PER_RANK,
    SharedStream,
    as_rank_error,
    open_namespaces,
    shard_batches,
)


def batches(count: int, size: int = 100) -> list[PackedBatch]:
    rows = np.zeros((2, 8), dtype=np.int32)
    return [PackedBatch(index, rows, 14, size) for index in range(count)]


def test_batch_i_goes_to_rank_i_mod_n_with_equal_counts() -> None:
    shards = shard_batches(batches(50), nproc=3, byte_budget=1000)
    assert [[b.index for b in shard] for shard in shards] == [
        [0, 3, 6, 9],
        [1, 4, 7, 10],
        [2, 5, 8, 11],
    ]  # fmt: skip: 12 batches, the first multiple of 3 with 1,000 bytes


def test_every_rank_gets_at_least_the_minimum_however_small_the_budget() -> None:
    shards = shard_batches(batches(50), nproc=4, byte_budget=1)
    assert [len(shard) for shard in shards] == [MIN_BATCHES_PER_RANK] * 4


def test_a_short_stream_is_cut_to_a_multiple_of_the_ranks() -> None:
    shards = shard_batches(batches(7), nproc=3, byte_budget=10**9)
    assert [[b.index for b in shard] for shard in shards] == [[0, 3], [1, 4], [2, 5]]
    assert shard_batches(batches(1), nproc=2, byte_budget=10) == [[], []]


def test_the_shards_do_not_read_past_what_they_need() -> None:
    consumed = []

    def stream() -> object:
        for batch in batches(1000):
            consumed.append(batch.index)
            yield batch

    shard_batches(stream(), nproc=2, byte_budget=500)  # type: ignore[arg-type]
    assert len(consumed) == 6


@pytest.mark.parametrize(
    ("error", "rule"),
    [
        (Failed("train.exception", "train(ctx) raised"), "ranks.exception"),
        (Failed("audit.missing_final_weights", "no file"), "ranks.missing_final_weights"),
        (Rejected("train.bad_seq_len", "seq_len 9999"), "ranks.bad_seq_len"),
    ],
)
def test_rank_errors_keep_their_verdict_under_this_stage(error: Failed, rule: str) -> None:
    named = as_rank_error(error, 3)
    assert type(named) is type(error)
    assert named.rule_id == rule
    assert named.message == f"rank 3: {error.message}"


def test_too_little_text_for_every_rank_is_the_evaluators_error(tmp_path: Path) -> None:
    spec = selftest_spec(tmp_path, load_config("cpu"))
    text = [Document(id="only", text="x" * 100)]  # one batch of 1 × 64, not four
    config = load_config("cpu", None, {"ranks_byte_budget": 10})
    stream = SharedStream(spec, text, load_tokenizer("byte"), nproc=4, config=config)
    with pytest.raises(EvaluatorError) as caught:
        stream.check(StreamOpen(batch_size=1, seq_len=64, tokenizer="byte"))
    assert caught.value.rule_id == "ranks.too_little_data"


def test_a_rank_zero_in_our_own_network_namespace_stops_the_check() -> None:
    # Any process of ours shares our namespace: ranks there would talk TCP on the host's network.
    with subprocess.Popen(["sleep", "60"]) as process:
        try:
            with pytest.raises(EvaluatorError) as caught:
                open_namespaces(cast(WorkerProcess, process))
        finally:
            process.kill()
    assert caught.value.rule_id == "ranks.no_private_network"
