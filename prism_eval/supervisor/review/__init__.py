"""Supervisor: the LLM review gate — a signed verdict, and the client that asks for one.

`verdict` holds the verdict's models, signs it and verifies it offline (what `run` uses);
`client` is the only networked code of prism-eval (`prism-eval review`): it is deliberately
not re-exported here, so importing this package never loads it; `_prompt` builds the prompt.

May import: `attest` (signing), `intake` (the bundle), the supervisor's `config` and `progress`.
Offers: the names in `__all__` (verification only).
"""

from prism_eval.supervisor.review.verdict import (
    DECISION_EXIT_CODES,
    VerifiedVerdict,
    load_verdict,
    require_allow,
    signed_verdict_bytes,
)

__all__ = [
    "DECISION_EXIT_CODES",
    "VerifiedVerdict",
    "load_verdict",
    "require_allow",
    "signed_verdict_bytes",
]
