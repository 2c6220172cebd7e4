"""Supervisor: the scored stream — documents packed into B parallel streams, in blocks.

docs/design.md §5. Each document is `BOS + tokens(document)`; documents are concatenated. The
stream is cut into **blocks**; a block of D batches (`block_batches`) is `batch_size` consecutive
**segments** of `D·(T-1) + 1` tokens each. Row r of batch k is tokens `k·(T-1) .. k·(T-1)+T-1` of
segment r, so row r of batch k+1 continues row r of batch k and they share one token, which
batch k already scored. Why this layout:

- A batch's inputs hold none of its own targets: its rows come from different segments, so a
  model that mixes across the batch dimension reads nothing it is asked to predict.
- No input is a later batch's target: a segment's first token is context only (never
  predicted), and a row's shared token was a target of the batch before.
- Only one block is tokenized at a time, never the whole budget.

Every token but the segment starts is predicted exactly once; each predicted token carries the
UTF-8 bytes it stands for (BOS carries 0). Batches are cut until the byte budget is spent; a
`BatchProducer` runs this in a thread of the supervisor (batches are never sent ahead to a
sandboxed process).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from prism_eval.supervisor.data.locked import Document
from prism_eval.supervisor.data.tokenizers import Tokenizer


@dataclass(frozen=True)
class PackedBatch:
    """One batch as the supervisor knows it: the rows it sends and the figures it owns."""

    index: int
    rows: np.ndarray  # (batch, seq_len) int32
    predicted_tokens: int  # batch * (seq_len - 1)
    bytes: int  # UTF-8 bytes of the predicted tokens (positions 1.. of every row)


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


def block_tokens(batch_size: int, seq_len: int, batches: int) -> int:
    """Tokens one block of `batches` batches takes from the stream."""
    return batch_size * (batches * (seq_len - 1) + 1)


def cut_block(
    ids: np.ndarray, counts: np.ndarray, batch_size: int, seq_len: int, batches: int
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield (rows, bytes) for each batch of one block made of the first
    `block_tokens(batch_size, seq_len, batches)` tokens of `ids` (counts: their UTF-8 bytes)."""
    length = batches * (seq_len - 1) + 1
    used = batch_size * length
    segments = ids[:used].reshape(batch_size, length)  # (batch, segment)
    segment_bytes = counts[:used].reshape(batch_size, length)
    for k in range(batches):
        start = k * (seq_len - 1)
        rows = np.ascontiguousarray(segments[:, start : start + seq_len])  # (batch, seq_len)
        yield rows, int(segment_bytes[:, start + 1 : start + seq_len].sum())


def _last_cut(remaining: int, batch_size: int, seq_len: int) -> tuple[int, int]:
    """(rows, batches) of the block that fits the stream's tail: fewer batches of full width,
    else one batch of fewer rows (each its own segment), else nothing."""
    batches = (remaining // batch_size - 1) // (seq_len - 1)
    if batches >= 1:
        return batch_size, batches
    return min(batch_size, remaining // seq_len), 1


def pack_batches(
    documents: Iterable[Document],
    tokenizer: Tokenizer,
    *,
    batch_size: int,
    seq_len: int,
    byte_budget: int,
    tally: StreamTally,
    block_batches: int = 64,
) -> Generator[PackedBatch, None, None]:
    """Cut the document stream into batches of `batch_size` rows until `byte_budget` is spent.

    Blocks of `block_batches` batches are cut as soon as the tokenized documents cover one; when
    the data runs out, the tail becomes a last, shorter block (or one batch of fewer rows) and
    what is left is dropped.
    """
    if seq_len < 2 or batch_size < 1 or block_batches < 1:
        raise ValueError("seq_len must be >= 2, batch_size and block_batches >= 1")
    need = block_tokens(batch_size, seq_len, block_batches)
    id_chunks: list[np.ndarray] = []
    byte_chunks: list[np.ndarray] = []
    pending = spent = index = 0

    def emit(rows: int, batches: int) -> Iterator[PackedBatch]:
        nonlocal id_chunks, byte_chunks, pending, spent, index
        flat_ids, flat_bytes = np.concatenate(id_chunks), np.concatenate(byte_chunks)
        used = block_tokens(rows, seq_len, batches)
        id_chunks, byte_chunks, pending = [flat_ids[used:]], [flat_bytes[used:]], pending - used
        for block_rows, block_bytes in cut_block(flat_ids, flat_bytes, rows, seq_len, batches):
            yield PackedBatch(index, block_rows, rows * (seq_len - 1), block_bytes)
            index += 1
            spent += block_bytes
            if spent >= byte_budget:
                tally.stopped_by = "budget"
                return

    for ids, counts in _tokenized(documents, tokenizer, tally):
        id_chunks.append(ids)
        byte_chunks.append(counts)
        pending += len(ids)
        while pending >= need:
            yield from emit(batch_size, block_batches)
            if tally.stopped_by == "budget":
                return
    tally.stopped_by = "data_exhausted"
    rows, batches = _last_cut(pending, batch_size, seq_len)
    if rows >= 1:
        yield from emit(rows, batches)


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
