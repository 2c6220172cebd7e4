"""Tests for prism_eval.scorer.service: the scorer's message loop, served in a thread over a real
socket pair and real sealed memfds, as the supervisor drives it (no sandbox: the scorer runs
none)."""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from prism_eval.protocol import (
    BuffersMapped,
    Channel,
    ChannelClosed,
    ScoreBatch,
    Scored,
    ScorerSetup,
    parse_child_message,
)
from prism_eval.protocol.frames import MAX_CHILD_HEADER_BYTES, encode_frame, read_frame
from prism_eval.scorer import nats
from prism_eval.scorer.service import Scorer

ROWS, COLS, WIDTH = 3, 6, 11


class Driver:
    """The supervisor's end: sends frames (with descriptors), reads the scorer's answers."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        sock.settimeout(10)  # a scorer that died answers nothing: fail, never hang

    def ask(self, message: object, body: bytes = b"", fds: tuple[int, ...] = ()) -> object:
        frame = encode_frame(message, body)  # type: ignore[arg-type]
        sent = socket.send_fds(self.sock, [frame], list(fds)) if fds else 0
        self.sock.sendall(frame[sent:])
        header, _ = read_frame(self.sock, MAX_CHILD_HEADER_BYTES, 0)
        return parse_child_message(header, b"")


@pytest.fixture
def scorer() -> Iterator[tuple[Driver, torch.Tensor]]:
    """A scorer serving in a thread, set up with one predictor logits buffer, which the test
    writes through its own mapping (as the predictor does)."""
    ours, theirs = socket.socketpair()

    def serve() -> None:
        with contextlib.suppress(ChannelClosed):  # the test is done with it
            Scorer(Channel(theirs.detach()), "cpu", threads=1).serve()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    size = ROWS * COLS * WIDTH * 4
    fd = os.memfd_create("test-logits")
    os.ftruncate(fd, size)
    logits = torch.frombuffer(mmap.mmap(fd, size), dtype=torch.float32).view(ROWS, COLS, WIDTH)
    driver = Driver(ours)
    setup = ScorerSetup(
        buffers=["predictor_logits"], weights_bytes=0, rows=ROWS, cols=COLS, width=WIDTH,
        logits_dtype="float32",
    )  # fmt: skip
    assert isinstance(driver.ask(setup, fds=(fd,)), BuffersMapped)
    os.close(fd)
    yield driver, logits
    ours.close()
    thread.join(timeout=5)


def score(driver: Driver, targets: np.ndarray) -> Scored:
    message = ScoreBatch(index=0, source="predictor", rows=ROWS, cols=COLS)
    answer = driver.ask(message, targets.astype(np.int32).tobytes())
    assert isinstance(answer, Scored)
    return answer


def test_the_scorer_sums_each_rows_nats_from_the_logits_buffer(
    scorer: tuple[Driver, torch.Tensor],
) -> None:
    driver, logits = scorer
    generator = torch.Generator().manual_seed(0)
    logits.copy_(torch.randn(ROWS, COLS, WIDTH, generator=generator))
    targets = torch.randint(0, WIDTH, (ROWS, COLS - 1), generator=generator)
    scored = score(driver, targets.numpy())
    assert scored.finite
    assert scored.row_nats == nats.row_sums(nats.position_nats(logits.clone(), targets))


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_one_nonfinite_position_makes_the_batch_nonfinite(
    scorer: tuple[Driver, torch.Tensor], bad: float
) -> None:
    driver, logits = scorer
    logits.zero_()
    targets = np.zeros((ROWS, COLS - 1), dtype=np.int64)
    logits[1, 2, 0 if bad != math.inf else 3] = bad  # NaN or +inf nats at row 1, position 2
    scored = score(driver, targets)
    assert not scored.finite and scored.row_nats == []
    logits[1, 2].zero_()
    assert score(driver, targets).finite
