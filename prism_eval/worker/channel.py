"""Worker (sandboxed): the worker's end of the framed channel to the supervisor."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

from pydantic import BaseModel

from prism_eval.protocol import (
    MAX_BODY_BYTES,
    MAX_SUPERVISOR_HEADER_BYTES,
    ProtocolError,
    SupervisorMessage,
    encode_frame,
    parse_supervisor_message,
    read_frame,
)

if TYPE_CHECKING:  # numpy starts threads on import: it must load after the isolation layers
    import numpy as np


class Channel:
    """Send worker messages; receive supervisor messages and their token bodies."""

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)

    def send(self, message: BaseModel) -> None:
        """Send one message."""
        self._sock.sendall(encode_frame(message))

    def receive(self) -> tuple[SupervisorMessage, bytes]:
        """Receive one message and its body."""
        header, body = read_frame(self._sock, MAX_SUPERVISOR_HEADER_BYTES, MAX_BODY_BYTES)
        return parse_supervisor_message(header), body

    def receive_tokens(self, rows: int, cols: int, body: bytes) -> np.ndarray:
        """View a body as the int32 token array (rows, cols) it must be."""
        import numpy as np

        if len(body) != rows * cols * 4:
            raise ProtocolError(f"body of {len(body)} bytes for a ({rows}, {cols}) int32 array")
        return np.frombuffer(body, dtype=np.int32).reshape(rows, cols)
