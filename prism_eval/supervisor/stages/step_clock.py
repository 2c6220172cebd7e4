"""Supervisor: where the scored run's time goes — seconds per phase of a step, measured here.

Timings are never part of a record's reproducible core: they describe the host, not the bundle.
They tell an operator (and `make bench`) how far a run is from its floor, the loop's own step
plus one forward.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Iterator

# The phases of one scored step, in the order they happen (docs/scoring.md §4.1).
PHASES = ("trainer", "snapshot", "predict", "score", "prefix_audit", "spot_check", "supervisor")


class StepClock:
    """Seconds spent in each phase, summed over the run; `supervisor` is the rest."""

    def __init__(self) -> None:
        self.seconds: collections.defaultdict[str, float] = collections.defaultdict(float)
        self._started = time.perf_counter()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        """Count the time inside the block towards phase `name`."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - started

    def per_step_ms(self, steps: int) -> dict[str, float]:
        """Milliseconds per step for each phase; `supervisor` is what no phase covered."""
        total = time.perf_counter() - self._started
        measured = {name: self.seconds[name] for name in PHASES if name != "supervisor"}
        measured["supervisor"] = max(0.0, total - sum(measured.values()))
        return {name: round(1000 * value / max(1, steps), 3) for name, value in measured.items()}


def describe_step(step_ms: dict[str, float]) -> str:
    """One log line: a step's milliseconds and where they went, largest first."""
    parts = sorted(step_ms.items(), key=lambda item: -item[1])
    spent = " · ".join(f"{name.replace('_', ' ')} {ms:.1f}" for name, ms in parts)
    return f"a scored step took {sum(step_ms.values()):.1f} ms: {spent}"
