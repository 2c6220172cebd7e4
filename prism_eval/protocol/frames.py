"""Shared: frames on the supervisor's channels, read and written with hard caps.

A frame is `u32 header_len | u32 body_len | header | body` (big-endian lengths). The header is
one JSON message (a pydantic model, tagged by `type`); the body is raw bytes, used only for the
token arrays the supervisor sends. A child may be hostile, so whatever it sends is `untrusted`
until the protocol has parsed it into a model. The supervisor may attach descriptors (shared
buffers) to a frame; only a child's `Channel` collects them, the supervisor never accepts any.
"""

from __future__ import annotations

import array
import socket
import struct

import orjson
from pydantic import BaseModel

_LENGTHS = struct.Struct(">II")
# Children's messages are small; a weights layout of many tensors is the largest.
MAX_CHILD_HEADER_BYTES = 1024 * 1024
MAX_SUPERVISOR_HEADER_BYTES = 4 * 1024 * 1024
MAX_BODY_BYTES = 512 * 1024 * 1024
MAX_FDS_PER_FRAME = 8


class ProtocolError(Exception):
    """A frame or message broke the protocol (size, framing, schema, values)."""


class ChannelClosed(ProtocolError):
    """The other side closed the channel."""


def encode_frame(message: BaseModel, body: bytes = b"") -> bytes:
    """Encode one message (and an optional body) as a frame."""
    header = orjson.dumps(message.model_dump(mode="json"))
    return _LENGTHS.pack(len(header), len(body)) + header + body


def _take_fds(ancillary: list[tuple[int, int, bytes]], into: list[int]) -> None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
            into.extend(fds)


def _recv_exact(sock: socket.socket, size: int, fds: list[int] | None) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    space = socket.CMSG_SPACE(MAX_FDS_PER_FRAME * array.array("i").itemsize)
    while got < size:
        if fds is None:
            n = sock.recv_into(view[got:], size - got)
        else:
            n, ancillary, _, _ = sock.recvmsg_into([view[got:]], space)
            _take_fds(ancillary, fds)
        if n == 0:
            raise ChannelClosed("channel closed mid-frame" if got else "channel closed")
        got += n
    return bytes(buffer)


def read_frame(
    sock: socket.socket, max_header: int, max_body: int, fds: list[int] | None = None
) -> tuple[bytes, bytes]:
    """Read one frame, refusing any length over its cap before reading a byte of it.

    With `fds`, descriptors that arrive with the frame are appended to it; without, the
    kernel discards any that were sent.
    """
    header_len, body_len = _LENGTHS.unpack(_recv_exact(sock, _LENGTHS.size, fds))
    if header_len == 0 or header_len > max_header:
        raise ProtocolError(f"header of {header_len} bytes (cap {max_header})")
    if body_len > max_body:
        raise ProtocolError(f"body of {body_len} bytes (cap {max_body})")
    header = _recv_exact(sock, header_len, fds)
    body = _recv_exact(sock, body_len, fds) if body_len else b""
    return header, body
