"""Tests for prism_eval.protocol: framing over a real socket, caps, and worker-message parsing."""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Iterator

import numpy as np
import orjson
import pytest
from pydantic import BaseModel, ValidationError

from prism_eval.protocol import (
    MAX_BODY_BYTES,
    MAX_SUPERVISOR_HEADER_BYTES,
    MAX_WORKER_HEADER_BYTES,
    Batch,
    BatchLoss,
    CausalityCheck,
    ChannelClosed,
    Failure,
    LayerReport,
    NonFiniteLoss,
    ProbeReport,
    ProtocolError,
    Ready,
    StreamAccepted,
    StreamEnd,
    StreamOpen,
    TrainDone,
    encode_frame,
    parse_supervisor_message,
    parse_worker_message,
    read_frame,
)

# If read_frame ever blocked waiting for bytes the peer never sends, the socket timeout turns
# the hang into TimeoutError, which is not the ProtocolError these tests expect.
SOCKET_TIMEOUT_S = 10.0

WORKER_MESSAGES: list[BaseModel] = [
    Ready(
        torch_version="2.4.0",
        cuda_version=None,
        device_name="cpu",
        determinism={"a": "1"},
        isolation=[LayerReport(name="seccomp", state="active", detail="53 syscalls denied")],
    ),
    ProbeReport(
        params=10,
        float_buffer_elements=0,
        params_after_forward=10,
        float_buffer_elements_after_forward=0,
        logits_shape=[2, 8, 257],
        logits_finite=True,
        deterministic=True,
        causality=[CausalityCheck(mode="eval_no_grad", position=3, max_abs_diff=0.0)],
    ),
    StreamOpen(batch_size=4, seq_len=64, tokenizer="byte"),
    BatchLoss(index=3, nats=123.456, tokens=252),
    TrainDone(batches_consumed=7),
    Failure(where="train", exc_type="RuntimeError", message="boom", traceback="tb"),
    NonFiniteLoss(index=2),
]


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    left, right = socket.socketpair()
    left.settimeout(SOCKET_TIMEOUT_S)
    right.settimeout(SOCKET_TIMEOUT_S)
    try:
        yield left, right
    finally:
        left.close()
        right.close()


def header_of(message: BaseModel) -> bytes:
    return orjson.dumps(message.model_dump(mode="json"))


# ---- frames over a socket -----------------------------------------------------------------


def test_supervisor_batch_frame_round_trips_with_its_body(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    rows = np.arange(2 * 5, dtype=np.int32).reshape(2, 5)
    message = Batch(index=4, rows=2, cols=5)
    sender.sendall(encode_frame(message, rows.tobytes()))
    header, body = read_frame(receiver, MAX_SUPERVISOR_HEADER_BYTES, MAX_BODY_BYTES)
    assert parse_supervisor_message(header) == message
    np.testing.assert_array_equal(np.frombuffer(body, dtype=np.int32).reshape(2, 5), rows)


@pytest.mark.parametrize("message", WORKER_MESSAGES, ids=lambda m: type(m).__name__)
def test_worker_message_round_trips_over_a_socket(
    pair: tuple[socket.socket, socket.socket], message: BaseModel
) -> None:
    sender, receiver = pair
    sender.sendall(encode_frame(message))
    header, body = read_frame(receiver, MAX_WORKER_HEADER_BYTES, 0)
    assert body == b""
    assert parse_worker_message(header, body) == message


def test_consecutive_frames_are_read_in_order_without_bleeding(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    messages = [StreamAccepted(batch_size=2, seq_len=3), Batch(index=0, rows=1, cols=3)]
    bodies = [b"", b"\x00" * 12]
    sender.sendall(b"".join(encode_frame(m, b) for m, b in zip(messages, bodies, strict=True)))
    sender.sendall(encode_frame(StreamEnd(reason="budget")))
    for message, body in zip(messages, bodies, strict=True):
        header, got = read_frame(receiver, MAX_SUPERVISOR_HEADER_BYTES, MAX_BODY_BYTES)
        assert parse_supervisor_message(header) == message
        assert got == body
    header, _ = read_frame(receiver, MAX_SUPERVISOR_HEADER_BYTES, MAX_BODY_BYTES)
    assert parse_supervisor_message(header) == StreamEnd(reason="budget")


def test_frame_split_across_many_small_sends_is_reassembled(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    message = BatchLoss(index=1, nats=2.5, tokens=9)
    # One byte per send costs a socket buffer each: send from a thread while reading.
    feeder = threading.Thread(
        target=lambda: [sender.sendall(bytes([byte])) for byte in encode_frame(message)]
    )
    feeder.start()
    header, body = read_frame(receiver, MAX_WORKER_HEADER_BYTES, 0)
    feeder.join()
    assert parse_worker_message(header, body) == message


def test_encode_frame_lays_out_big_endian_lengths_then_header_then_body() -> None:
    frame = encode_frame(StreamEnd(reason="data_exhausted"), b"xyz")
    header = b'{"type":"stream_end","reason":"data_exhausted"}'
    assert frame == struct.pack(">II", len(header), 3) + header + b"xyz"


# ---- caps and closed channels -------------------------------------------------------------


def test_header_length_over_the_cap_is_refused_before_reading_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    sender.sendall(struct.pack(">II", 10 * 1024 * 1024, 0))  # only the prefix, no header
    with pytest.raises(ProtocolError, match="header of 10485760 bytes") as info:
        read_frame(receiver, MAX_WORKER_HEADER_BYTES, 0)
    assert not isinstance(info.value, ChannelClosed)


def test_body_length_over_the_cap_is_refused_before_reading_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    header = header_of(TrainDone(batches_consumed=1))
    sender.sendall(struct.pack(">II", len(header), 1) + header)  # the body never comes
    with pytest.raises(ProtocolError, match="body of 1 bytes") as info:
        read_frame(receiver, MAX_WORKER_HEADER_BYTES, 0)
    assert not isinstance(info.value, ChannelClosed)


def test_zero_length_header_is_refused(pair: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = pair
    sender.sendall(struct.pack(">II", 0, 0))
    with pytest.raises(ProtocolError, match="header of 0 bytes"):
        read_frame(receiver, MAX_WORKER_HEADER_BYTES, 0)


def test_header_exactly_at_the_cap_is_accepted(pair: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = pair
    header = b" " * 100
    sender.sendall(struct.pack(">II", len(header), 0) + header)
    assert read_frame(receiver, len(header), 0) == (header, b"")


def test_peer_closing_mid_header_raises_channel_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    frame = encode_frame(BatchLoss(index=0, nats=1.0, tokens=1))
    sender.sendall(frame[:12])  # the prefix and 4 bytes of the header
    sender.close()
    with pytest.raises(ChannelClosed, match="mid-frame"):
        read_frame(receiver, MAX_WORKER_HEADER_BYTES, 0)


def test_peer_closing_mid_prefix_raises_channel_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    sender.sendall(b"\x00\x00\x00")
    sender.close()
    with pytest.raises(ChannelClosed, match="mid-frame"):
        read_frame(receiver, MAX_WORKER_HEADER_BYTES, 0)


def test_peer_closing_mid_body_raises_channel_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    frame = encode_frame(Batch(index=0, rows=1, cols=4), b"\x01" * 16)
    sender.sendall(frame[:-5])
    sender.close()
    with pytest.raises(ChannelClosed, match="mid-frame"):
        read_frame(receiver, MAX_SUPERVISOR_HEADER_BYTES, MAX_BODY_BYTES)


def test_peer_closing_between_frames_raises_channel_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    sender.sendall(encode_frame(TrainDone(batches_consumed=0)))
    sender.close()
    read_frame(receiver, MAX_WORKER_HEADER_BYTES, 0)
    with pytest.raises(ChannelClosed, match=r"^channel closed$"):
        read_frame(receiver, MAX_WORKER_HEADER_BYTES, 0)


# ---- parsing untrusted worker messages ----------------------------------------------------


def test_body_from_a_worker_is_refused() -> None:
    header = header_of(BatchLoss(index=0, nats=1.0, tokens=1))
    with pytest.raises(ProtocolError, match="bodies"):
        parse_worker_message(header, b"\x00")


@pytest.mark.parametrize("nats", ["NaN", "Infinity", "-Infinity", "1e999"])
def test_batch_loss_with_non_finite_nats_is_refused(nats: str) -> None:
    header = b'{"type":"batch_loss","index":0,"nats":%s,"tokens":4}' % nats.encode()
    with pytest.raises(ProtocolError):
        parse_worker_message(header, b"")


@pytest.mark.parametrize("nats", [float("nan"), float("inf"), float("-inf")])
def test_batch_loss_model_refuses_non_finite_nats(nats: float) -> None:
    with pytest.raises(ValidationError):
        BatchLoss(index=0, nats=nats, tokens=1)


def test_unknown_message_type_is_refused() -> None:
    with pytest.raises(ProtocolError):
        parse_worker_message(b'{"type":"give_me_the_key","index":0}', b"")


def test_supervisor_message_type_from_a_worker_is_refused() -> None:
    header = header_of(StreamEnd(reason="budget"))
    with pytest.raises(ProtocolError):
        parse_worker_message(header, b"")


def test_missing_type_is_refused() -> None:
    with pytest.raises(ProtocolError):
        parse_worker_message(b'{"index":0,"nats":1.0,"tokens":1}', b"")


def test_extra_field_is_refused() -> None:
    header = b'{"type":"batch_loss","index":0,"nats":1.0,"tokens":1,"bytes":999}'
    with pytest.raises(ProtocolError):
        parse_worker_message(header, b"")


def test_extra_field_in_a_supervisor_message_is_refused() -> None:
    with pytest.raises(ProtocolError):
        parse_supervisor_message(b'{"type":"stream_end","reason":"budget","more":1}')


@pytest.mark.parametrize(
    "header",
    [
        b"",
        b"not json",
        b"[]",
        b'{"type":"batch_loss","index":-1,"nats":1.0,"tokens":1}',
        b'{"type":"batch_loss","index":0,"nats":1.0,"tokens":-5}',
        b'{"type":"batch_loss","index":0,"nats":"1.0x","tokens":1}',
        b'{"type":"failure","where":"elsewhere","exc_type":"E","message":"m","traceback":"t"}',
    ],
    ids=["empty", "not-json", "array", "neg-index", "neg-tokens", "str-nats", "bad-where"],
)
def test_malformed_worker_headers_are_refused(header: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_worker_message(header, b"")


def test_oversized_failure_message_is_refused() -> None:
    header = orjson.dumps(
        {
            "type": "failure",
            "where": "train",
            "exc_type": "E",
            "message": "x" * 4097,
            "traceback": "",
        }
    )
    with pytest.raises(ProtocolError):
        parse_worker_message(header, b"")
