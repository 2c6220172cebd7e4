"""Tests for prism_eval.protocol: framing over a real socket, caps, descriptors passed with a
frame, and parsing what children send."""

from __future__ import annotations

import os
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
    MAX_CHILD_HEADER_BYTES,
    MAX_SUPERVISOR_HEADER_BYTES,
    BatchRequest,
    CausalityCheck,
    ChannelClosed,
    Compared,
    Failure,
    LayerReport,
    ModelLayout,
    Predicted,
    ProbeReport,
    ProtocolError,
    Ready,
    Reveal,
    Scored,
    StreamAccepted,
    StreamEnd,
    StreamOpen,
    TensorEntry,
    TrainDone,
    encode_frame,
    parse_child_message,
    parse_supervisor_message,
    read_frame,
)
from prism_eval.protocol.channel import Channel

# If read_frame ever blocked waiting for bytes the peer never sends, the socket timeout turns
# the hang into TimeoutError, which is not the ProtocolError these tests expect.
SOCKET_TIMEOUT_S = 10.0

CHILD_MESSAGES: list[BaseModel] = [
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
    StreamOpen(
        batch_size=4,
        seq_len=64,
        tokenizer="byte",
        tensors=[TensorEntry(name="head.weight", kind="parameter", dtype="float32", shape=[4, 3])],
    ),
    BatchRequest(index=3),
    TrainDone(batches_consumed=7),
    Failure(where="train", exc_type="RuntimeError", message="boom", traceback="tb"),
    ModelLayout(tensors=[TensorEntry(name="step", kind="buffer", dtype="int64", shape=[])]),
    Predicted(index=2),
    Scored(index=2, finite=True, row_nats=[1.5, 0.0]),
    Compared(index=2, diffs=[0.0, 1e-7]),
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


def test_supervisor_reveal_frame_round_trips_with_its_body(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    rows = np.arange(2 * 5, dtype=np.int32).reshape(2, 5)
    message = Reveal(index=4, rows=2, cols=5)
    sender.sendall(encode_frame(message, rows.tobytes()))
    header, body = read_frame(receiver, MAX_SUPERVISOR_HEADER_BYTES, MAX_BODY_BYTES)
    assert parse_supervisor_message(header) == message
    np.testing.assert_array_equal(np.frombuffer(body, dtype=np.int32).reshape(2, 5), rows)


@pytest.mark.parametrize("message", CHILD_MESSAGES, ids=lambda m: type(m).__name__)
def test_child_message_round_trips_over_a_socket(
    pair: tuple[socket.socket, socket.socket], message: BaseModel
) -> None:
    sender, receiver = pair
    sender.sendall(encode_frame(message))
    header, body = read_frame(receiver, MAX_CHILD_HEADER_BYTES, 0)
    assert body == b""
    assert parse_child_message(header, body) == message


def test_consecutive_frames_are_read_in_order_without_bleeding(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    messages = [StreamAccepted(batch_size=2, seq_len=3), Reveal(index=0, rows=1, cols=3)]
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
    message = Scored(index=1, finite=True, row_nats=[2.5, 9.0])
    # One byte per send costs a socket buffer each: send from a thread while reading.
    feeder = threading.Thread(
        target=lambda: [sender.sendall(bytes([byte])) for byte in encode_frame(message)]
    )
    feeder.start()
    header, body = read_frame(receiver, MAX_CHILD_HEADER_BYTES, 0)
    feeder.join()
    assert parse_child_message(header, body) == message


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
        read_frame(receiver, MAX_CHILD_HEADER_BYTES, 0)
    assert not isinstance(info.value, ChannelClosed)


def test_body_length_over_the_cap_is_refused_before_reading_it(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    header = header_of(TrainDone(batches_consumed=1))
    sender.sendall(struct.pack(">II", len(header), 1) + header)  # the body never comes
    with pytest.raises(ProtocolError, match="body of 1 bytes") as info:
        read_frame(receiver, MAX_CHILD_HEADER_BYTES, 0)
    assert not isinstance(info.value, ChannelClosed)


def test_zero_length_header_is_refused(pair: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = pair
    sender.sendall(struct.pack(">II", 0, 0))
    with pytest.raises(ProtocolError, match="header of 0 bytes"):
        read_frame(receiver, MAX_CHILD_HEADER_BYTES, 0)


def test_header_exactly_at_the_cap_is_accepted(pair: tuple[socket.socket, socket.socket]) -> None:
    sender, receiver = pair
    header = b" " * 100
    sender.sendall(struct.pack(">II", len(header), 0) + header)
    assert read_frame(receiver, len(header), 0) == (header, b"")


def test_peer_closing_mid_header_raises_channel_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    frame = encode_frame(BatchRequest(index=0))
    sender.sendall(frame[:12])  # the prefix and 4 bytes of the header
    sender.close()
    with pytest.raises(ChannelClosed, match="mid-frame"):
        read_frame(receiver, MAX_CHILD_HEADER_BYTES, 0)


def test_peer_closing_mid_prefix_raises_channel_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    sender.sendall(b"\x00\x00\x00")
    sender.close()
    with pytest.raises(ChannelClosed, match="mid-frame"):
        read_frame(receiver, MAX_CHILD_HEADER_BYTES, 0)


def test_peer_closing_mid_body_raises_channel_closed(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    frame = encode_frame(Reveal(index=0, rows=1, cols=4), b"\x01" * 16)
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
    read_frame(receiver, MAX_CHILD_HEADER_BYTES, 0)
    with pytest.raises(ChannelClosed, match=r"^channel closed$"):
        read_frame(receiver, MAX_CHILD_HEADER_BYTES, 0)


# ---- descriptors passed with a frame ------------------------------------------------------


def test_a_child_channel_collects_the_descriptors_sent_with_a_frame(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    buffer = os.memfd_create("test-buffer")
    os.write(buffer, b"shared")
    frame = encode_frame(StreamEnd(reason="budget"))
    sent = socket.send_fds(sender, [frame], [buffer])
    sender.sendall(frame[sent:] + encode_frame(Reveal(index=0, rows=1, cols=2), b"\x00" * 8))
    channel = Channel(os.dup(receiver.fileno()))
    assert channel.receive()[0] == StreamEnd(reason="budget")
    (received,) = channel.take_fds(1)
    assert os.pread(received, 6, 0) == b"shared"  # the same file, under a new number
    assert channel.receive()[0] == Reveal(index=0, rows=1, cols=2)
    with pytest.raises(ProtocolError, match="expected 1 descriptors, got 0"):
        channel.take_fds(1)
    os.close(received)
    os.close(buffer)


def test_descriptors_sent_to_the_supervisor_side_are_dropped(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    sender, receiver = pair
    buffer = os.memfd_create("from-a-child")
    before = set(os.listdir("/proc/self/fd"))
    frame = encode_frame(BatchRequest(index=0))
    socket.send_fds(sender, [frame], [buffer])
    header, _ = read_frame(receiver, MAX_CHILD_HEADER_BYTES, 0)  # no fds list: none accepted
    assert parse_child_message(header, b"") == BatchRequest(index=0)
    assert set(os.listdir("/proc/self/fd")) <= before | {str(buffer)}
    os.close(buffer)


# ---- parsing untrusted child messages -----------------------------------------------------


def test_body_from_a_child_is_refused() -> None:
    header = header_of(BatchRequest(index=0))
    with pytest.raises(ProtocolError, match="bodies"):
        parse_child_message(header, b"\x00")


@pytest.mark.parametrize("nats", ["NaN", "Infinity", "-Infinity", "1e999", "-1.0"])
def test_scored_rows_must_hold_finite_non_negative_nats(nats: str) -> None:
    header = b'{"type":"scored","index":0,"finite":true,"row_nats":[1.0,%s]}' % nats.encode()
    with pytest.raises(ProtocolError):
        parse_child_message(header, b"")


@pytest.mark.parametrize("nats", [float("nan"), float("inf"), -1.0])
def test_scored_model_refuses_bad_nats(nats: float) -> None:
    with pytest.raises(ValidationError):
        Scored(index=0, finite=True, row_nats=[nats])


def test_unknown_message_type_is_refused() -> None:
    with pytest.raises(ProtocolError):
        parse_child_message(b'{"type":"give_me_the_key","index":0}', b"")


def test_supervisor_message_type_from_a_child_is_refused() -> None:
    header = header_of(StreamEnd(reason="budget"))
    with pytest.raises(ProtocolError):
        parse_child_message(header, b"")


def test_missing_type_is_refused() -> None:
    with pytest.raises(ProtocolError):
        parse_child_message(b'{"index":0}', b"")


def test_extra_field_is_refused() -> None:
    header = b'{"type":"batch_request","index":0,"bytes":999}'
    with pytest.raises(ProtocolError):
        parse_child_message(header, b"")


def test_extra_field_in_a_supervisor_message_is_refused() -> None:
    with pytest.raises(ProtocolError):
        parse_supervisor_message(b'{"type":"stream_end","reason":"budget","more":1}')


@pytest.mark.parametrize(
    "header",
    [
        b"",
        b"not json",
        b"[]",
        b'{"type":"batch_request","index":-1}',
        b'{"type":"predicted","index":"1x"}',
        b'{"type":"compared","index":0,"diffs":[-1.0]}',
        b'{"type":"model_layout","tensors":[{"name":"w","kind":"parameter","dtype":"complex64",'
        b'"shape":[2]}]}',
        b'{"type":"model_layout","tensors":[{"name":"w","kind":"parameter","dtype":"float32",'
        b'"shape":[-2]}]}',
        b'{"type":"failure","where":"elsewhere","exc_type":"E","message":"m","traceback":"t"}',
    ],
    ids=[
        "empty", "not-json", "array", "neg-index", "str-index", "neg-diff", "bad-dtype",
        "neg-shape", "bad-where",
    ],
)  # fmt: skip
def test_malformed_child_headers_are_refused(header: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_child_message(header, b"")


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
        parse_child_message(header, b"")
