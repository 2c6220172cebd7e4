"""Supervisor: a signal that ends a run still ends it in a record.

SIGTERM (a Kubernetes eviction, a CI timeout) is turned into the same exception as Ctrl-C's
SIGINT, raised in the main thread wherever the run is; the pipeline ends the current stage as
`error`, rule `run.interrupted`, kills every child and prints the record as for any other end.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from types import FrameType


class Interrupted(KeyboardInterrupt):
    """The run was asked to stop by a signal."""

    def __init__(self, signal_name: str) -> None:
        super().__init__(signal_name)
        self.signal_name = signal_name


def interruption_name(exc: KeyboardInterrupt) -> str:
    """Which signal ended the run: SIGTERM, or SIGINT for Ctrl-C."""
    return exc.signal_name if isinstance(exc, Interrupted) else "SIGINT"


@contextlib.contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside, SIGTERM raises Interrupted in the main thread (once: a second one, sent
    while the run cleans up, is ignored)."""
    raised = False

    def interrupt(number: int, frame: FrameType | None) -> None:
        nonlocal raised
        if not raised:
            raised = True
            raise Interrupted(signal.Signals(number).name)

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
