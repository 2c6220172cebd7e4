"""Supervisor: the scored stream — packing documents into overlapping rows, batches, budgets.

DESIGN §5: each document is `BOS + tokens(document)`; documents are concatenated; rows of
`seq_len` tokens overlap by one token, so every stream token after the first is predicted
exactly once (row r predicts its positions 1..seq_len-1). Every predicted token carries the
exact UTF-8 bytes it stands for (BOS carries 0). Batches are cut until the byte budget is
spent; a `BatchProducer` does this in a thread, ahead of the worker.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from prism_eval.data import Document
from prism_eval.tokenizers import Tokenizer


@dataclass(frozen=True)
class PackedBatch:
    """One batch as the supervisor knows it: the rows it sends and the figures it owns."""

    index: int
    rows: np.ndarray  # (batch, seq_len) int32
    predicted_tokens: int  # batch * (seq_len - 1)
    bytes: int  # UTF-8 bytes of the predicted tokens


@dataclass
class StreamTally:
    """Running counts of what the stream consumed."""

    documents: int = 0
    empty_documents: int = 0
    stopped_by: Literal["budget", "data_exhausted"] | None = None


def _tokenized(
    documents: Iterable[Document], tokenizer: Tokenizer, tally: StreamTally
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (ids, byte counts) per document, BOS first; empty texts are skipped and counted."""
    for document in documents:
        if not document.text:
            tally.empty_documents += 1
            continue
        ids, counts = tokenizer.encode_document(document.text)
        tally.documents += 1
        yield (
            np.concatenate([np.array([tokenizer.bos_id], dtype=np.int32), ids.astype(np.int32)]),
            np.concatenate([np.zeros(1, dtype=np.int32), counts.astype(np.int32)]),
        )


def _cut_rows(flat: np.ndarray, rows: int, seq_len: int) -> np.ndarray:
    """Rows of seq_len starting every seq_len-1 tokens: (rows, seq_len), contiguous."""
    need = rows * (seq_len - 1) + 1
    windows = np.lib.stride_tricks.sliding_window_view(flat[:need], seq_len)
    return np.ascontiguousarray(windows[:: seq_len - 1])


def pack_batches(
    documents: Iterable[Document],
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    seq_len: int,
    byte_budget: int,
    tally: StreamTally,
) -> Generator[PackedBatch, None, None]:
    """Cut the document stream into batches of `batch_size` rows until `byte_budget` is spent.

    Position 0 of each batch is the last token of the previous batch (already predicted
    there), so bytes are summed from position 1: nothing is counted twice. When the data runs
    out first, a last batch of fewer full rows is cut and the tail too short for a row is
    dropped.
    """
    if seq_len < 2 or batch_size < 1:
        raise ValueError("seq_len must be >= 2 and batch_size >= 1")
    need = batch_size * (seq_len - 1) + 1
    token_chunks: list[np.ndarray] = []
    byte_chunks: list[np.ndarray] = []
    pending = 0
    spent = 0
    index = 0
    for ids, counts in _tokenized(documents, tokenizer, tally):
        token_chunks.append(ids)
        byte_chunks.append(counts)
        pending += len(ids)
        if pending < need:
            continue
        flat_ids = np.concatenate(token_chunks)
        flat_bytes = np.concatenate(byte_chunks)
        start = 0
        while len(flat_ids) - start >= need:
            batch_bytes = int(flat_bytes[start + 1 : start + need].sum())
            rows = _cut_rows(flat_ids[start:], batch_size, seq_len)
            yield PackedBatch(index, rows, batch_size * (seq_len - 1), batch_bytes)
            index += 1
            spent += batch_bytes
            start += need - 1
            if spent >= byte_budget:
                tally.stopped_by = "budget"
                return
        token_chunks, byte_chunks = [flat_ids[start:]], [flat_bytes[start:]]
        pending = len(flat_ids) - start
    tally.stopped_by = "data_exhausted"
    if pending > 1 and token_chunks:
        flat_ids = np.concatenate(token_chunks)
        flat_bytes = np.concatenate(byte_chunks)
        full_rows = (len(flat_ids) - 1) // (seq_len - 1)
        if full_rows >= 1:
            used = full_rows * (seq_len - 1) + 1
            batch_bytes = int(flat_bytes[1:used].sum())
            rows = _cut_rows(flat_ids, full_rows, seq_len)
            yield PackedBatch(index, rows, used - 1, batch_bytes)


_DONE = object()


class BatchProducer:
    """Runs `pack_batches` in a thread so tokenization stays ahead of the worker."""

    def __init__(self, batches: Iterator[PackedBatch], depth: int = 8) -> None:
        self._batches = batches
        self._queue: queue.Queue[object] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._fill, name="prism-batches", daemon=True)
        self._thread.start()

    def _fill(self) -> None:
        try:
            for batch in self._batches:
                while not self._stop.is_set():
                    try:
                        self._queue.put(batch, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
            item: object = _DONE
        except BaseException as exc:  # handed to the consumer, which raises it
            item = exc
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def next_batch(self) -> PackedBatch | None:
        """The next batch, or None at the end; re-raises the producer's error."""
        item = self._queue.get()
        if item is _DONE:
            self._queue.put(_DONE)  # stay at the end for later calls
            return None
        if isinstance(item, BaseException):
            self._queue.put(item)  # later calls raise it again instead of waiting forever
            raise item
        assert isinstance(item, PackedBatch)
        return item

    def close(self) -> None:
        """Stop the thread (it exits within 0.1 s)."""
        self._stop.set()
        self._thread.join(timeout=5)
