"""Supervisor: a progress line on stderr for long work (never on stdout)."""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO


class TrainProgress:
    """Prints bytes scored, running bpb, rate and ETA at most once per `interval_s`."""

    def __init__(self, budget_bytes: int, stream: TextIO | None = None, interval_s: float = 2.0):
        self.budget_bytes = budget_bytes
        self.stream = stream or sys.stderr
        self.interval_s = interval_s
        self._last = 0.0

    def __call__(self, scored_bytes: int, nats: float, seconds: float) -> None:
        """Report progress; prints only when the interval passed or the budget is reached."""
        now = time.monotonic()
        done = scored_bytes >= self.budget_bytes
        if not done and now - self._last < self.interval_s:
            return
        self._last = now
        rate = scored_bytes / seconds if seconds > 0 else 0.0
        left = max(0, self.budget_bytes - scored_bytes)
        eta = f"{left / rate:.0f}s" if rate > 0 else "?"
        bpb = nats / (math.log(2) * scored_bytes) if scored_bytes else float("nan")
        percent = min(100.0, 100.0 * scored_bytes / self.budget_bytes)
        self.stream.write(
            f"train {percent:5.1f}% · {scored_bytes:,}/{self.budget_bytes:,} bytes · "
            f"bpb {bpb:.3f} · {rate / 1000:.1f} kB/s · ETA {eta}\n"
        )
        self.stream.flush()


def say(message: str) -> None:
    """One log line to stderr."""
    sys.stderr.write(f"prism-eval: {message}\n")
    sys.stderr.flush()
