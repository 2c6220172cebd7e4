"""Shared: a child's end of its channel to the supervisor (workers and the scorer).

numpy is imported lazily: in a worker it starts threads on import, and must load only after the
isolation layers are in place.
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING

from pydantic import BaseModel

from prism_eval.protocol.frames import (
    MAX_BODY_BYTES,
    MAX_SUPERVISOR_HEADER_BYTES,
    ProtocolError,
    encode_frame,
    read_frame,
)
from prism_eval.protocol.messages import SupervisorMessage, parse_supervisor_message

if TYPE_CHECKING:
    import numpy as np


class Channel:
    """Send messages; receive the supervisor's messages, their bodies and descriptors."""

    def __init__(self, fd: int) -> None:
        self._sock = socket.socket(fileno=fd)
        self._fds: list[int] = []

    def fileno(self) -> int:
        """The channel's descriptor (for select)."""
        return self._sock.fileno()

    def detach(self) -> None:
        """Forget the descriptor without closing it (a forked child closes it itself)."""
        self._sock.detach()

    def send(self, message: BaseModel) -> None:
        """Send one message."""
        self._sock.sendall(encode_frame(message))

    def receive(self) -> tuple[SupervisorMessage, bytes]:
        """Receive one message and its body (descriptors that came with it are kept)."""
        header, body = read_frame(
            self._sock, MAX_SUPERVISOR_HEADER_BYTES, MAX_BODY_BYTES, self._fds
        )
        return parse_supervisor_message(header), body

    def take_fds(self, count: int) -> list[int]:
        """The `count` descriptors that came with the last message, oldest first."""
        if len(self._fds) != count:
            for fd in self._fds:
                os.close(fd)
            raise ProtocolError(f"expected {count} descriptors, got {len(self._fds)}")
        taken, self._fds = self._fds, []
        return taken

    def receive_tokens(self, rows: int, cols: int, body: bytes) -> np.ndarray:
        """View a body as the int32 token array (rows, cols) it must be."""
        import numpy as np

        if len(body) != rows * cols * 4:
            raise ProtocolError(f"body of {len(body)} bytes for a ({rows}, {cols}) int32 array")
        return np.frombuffer(body, dtype=np.int32).reshape(rows, cols)
