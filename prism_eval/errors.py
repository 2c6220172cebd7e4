"""Shared: the one error hierarchy of prism-eval.

The library raises, never prints or exits. Each error carries a stable rule id, a message a
person understands, an optional hint that says how to fix it, and the status and exit code it
maps to (docs/design.md §4). `prism_eval/cli` catches `PrismError` in one place.
"""

from __future__ import annotations

from typing import ClassVar, Literal

Status = Literal["scored", "rejected", "failed", "error"]

EXIT_CODES: dict[Status, int] = {"scored": 0, "rejected": 3, "failed": 4, "error": 5}
EXIT_USAGE = 2
EXIT_VERIFY_FAILED = 1


class PrismError(Exception):
    """Base error: a rule id, a message, a hint and the run status it stands for."""

    status: ClassVar[Status] = "error"

    def __init__(
        self,
        rule_id: str,
        message: str,
        *,
        hint: str | None = None,
        evidence: list[str] | None = None,
    ) -> None:
        super().__init__(message)
        self.rule_id = rule_id
        self.message = message
        self.hint = hint
        self.evidence = list(evidence or [])

    @property
    def exit_code(self) -> int:
        """The process exit code for this error's status."""
        return EXIT_CODES[self.status]

    def __str__(self) -> str:
        text = f"[{self.rule_id}] {self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class Rejected(PrismError):
    """A gate said no: the bundle breaks a rule (the miner's to fix)."""

    status: ClassVar[Status] = "rejected"


class Failed(PrismError):
    """The miner's code broke at run time: exception, timeout, out of memory, NaN, no batches."""

    status: ClassVar[Status] = "failed"


class EvaluatorError(PrismError):
    """The evaluator or its inputs are at fault (bad data, missing tokenizer, bug): retryable."""

    status: ClassVar[Status] = "error"


class VerificationFailed(PrismError):
    """A record, signature or data directory did not verify (auditor commands, exit 1)."""

    status: ClassVar[Status] = "error"

    @property
    def exit_code(self) -> int:
        """Verification failures exit 1, distinct from a run's statuses."""
        return EXIT_VERIFY_FAILED
