"""Supervisor: the LLM review verdict — its models, its signature, and its verification.

docs/design.md §7. The review needs the network and the scored run must not have one, so they
are two commands: `prism-eval review` (client.py) asks the model once and writes a signed
verdict; `prism-eval run --review-verdict` verifies it here, offline. This module never opens a
socket and never imports the client, so the run path cannot reach the network through it.

A verdict is signed like a record: RFC 8785 canonical bytes of the verdict, Ed25519 over DSSE's
PAE with the verdict's own payload type, so a record signature can never pass as a verdict
signature or the reverse. Verification checks the signature over the bytes received before
trusting anything the verdict says.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from prism_eval.errors import EXIT_CODES, EvaluatorError, PrismError, Rejected
from prism_eval.supervisor.attest import (
    Signature,
    SigningIdentity,
    key_id,
    load_public_key,
    parse_strict_json,
    sign,
    verify_signature,
)

VERDICT_SCHEMA: Final = "prism-eval.review-verdict/v1"
VERDICT_PAYLOAD_TYPE: Final = "application/vnd.prism-eval.review-verdict+json"
MAX_VERDICT_BYTES = 1024 * 1024
_SHA256 = r"^[0-9a-f]{64}$"

Decision = Literal["allow", "reject", "held"]
# `prism-eval review` exits like `run` would: 0 go, 3 rejected, 5 no verdict (retryable).
DECISION_EXIT_CODES: Final[dict[Decision, int]] = {
    "allow": EXIT_CODES["scored"],
    "reject": EXIT_CODES["rejected"],
    "held": EXIT_CODES["error"],
}

# The findings the reviewer may cite (the prompt explains each); `review.prompt_too_large` is the
# evaluator's own, for bundles it refuses to send.
ReviewRule = Literal[
    "review.incoherent", "review.noop_training", "review.smuggled_weights", "review.hidden_io",
    "review.metric_gaming", "review.non_causal", "review.obfuscation", "review.prompt_injection",
    "review.other",
]  # fmt: skip
REVIEW_RULES: Final[tuple[str, ...]] = get_args(ReviewRule)


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Evidence(_Model):
    """One finding, pinned to a place in the bundle."""

    file: str = Field(description="Bundle path the finding is in.")
    line: int = Field(ge=0, description="1-based line number; 0 means the file as a whole.")
    note: str = Field(description="What that line does, for a person to check.")


class ReviewAnswer(_Model):
    """What the model must answer: exactly ANSWER_SCHEMA (sent as response_format)."""

    decision: Literal["allow", "reject"] = Field(description="The model's decision.")
    reasons: list[str] = Field(description="Short sentences a person can check.")
    cited_rules: list[ReviewRule] = Field(
        description="Review rule ids that apply; empty when allowing."
    )
    evidence: list[Evidence] = Field(description="Where each finding is.")


_STRING: Final = {"type": "string"}
ANSWER_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["decision", "reasons", "cited_rules", "evidence"],
    "properties": {
        "decision": {"type": "string", "enum": ["allow", "reject"]},
        "reasons": {"type": "array", "items": _STRING},
        "cited_rules": {"type": "array", "items": {"type": "string", "enum": list(REVIEW_RULES)}},
        "evidence": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["file", "line", "note"],
                "properties": {"file": _STRING, "line": {"type": "integer"}, "note": _STRING},
            },
        },
    },
}


class Verdict(_Model):
    """The signed outcome of one review: what was decided, about which bundle, by which model."""

    schema_: Literal["prism-eval.review-verdict/v1"] = Field(VERDICT_SCHEMA, alias="schema")
    decision: Decision = Field(description="allow, reject, or held (no answer could be had).")
    reasons: list[str] = Field(description="Why; for held, what went wrong.")
    cited_rules: list[str] = Field(description="Review rule ids the decision rests on.")
    evidence: list[Evidence] = Field(description="Files and lines behind the reasons.")
    bundle_sha256: str = Field(pattern=_SHA256, description="The reviewed bundle's digest.")
    model: str | None = Field(description="The model id as the API reported it; null if none.")
    requested_model: str = Field(description="The model id the request asked for.")
    endpoint: str = Field(description="The chat-completions URL the prompt was sent to.")
    prompt_version: str = Field(description="Version of the prompt template.")
    prompt_sha256: str = Field(
        pattern=_SHA256, description="sha256 of RFC 8785 JSON of the exact messages."
    )
    prompt_bytes: int = Field(ge=0, description="Length of those canonical bytes.")
    reviewed_at: str = Field(description="UTC time the verdict was made (ISO 8601).")
    attempts: int = Field(ge=0, description="HTTP requests made; 0 when none was sent.")
    error: str | None = Field(description="For held: why no verdict could be had; else null.")

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    @model_validator(mode="after")
    def _consistent(self) -> Verdict:
        if (self.decision == "held") != (self.error is not None):
            raise ValueError("a held verdict, and only a held verdict, carries an error")
        if self.decision == "allow" and (self.model is None or self.attempts < 1):
            raise ValueError("an allow verdict must come from a model that answered")
        return self


class SignedVerdict(_Model):
    """What `prism-eval review` writes: the verdict and DSSE signatures over its canonical bytes."""

    payloadType: Literal["application/vnd.prism-eval.review-verdict+json"] = VERDICT_PAYLOAD_TYPE
    verdict: Verdict
    signatures: list[Signature] = Field(min_length=1)


@dataclass(frozen=True)
class VerifiedVerdict:
    """A verdict whose signature and bundle digest checked out; its decision is not yet judged."""

    verdict: Verdict
    sha256: str  # sha256 of the signed payload (the verdict's canonical bytes)
    keyid: str  # the trusted reviewer key that signed it


def verdict_payload(verdict_json: dict[str, Any]) -> bytes:
    """RFC 8785 canonical bytes of a verdict: what is signed and digested."""
    return bytes(rfc8785.dumps(verdict_json))


def sign_verdict(verdict: Verdict, identity: SigningIdentity) -> SignedVerdict:
    """Sign the verdict's canonical bytes under PAE(VERDICT_PAYLOAD_TYPE, ·)."""
    payload = verdict_payload(verdict.model_dump(mode="json", by_alias=True))
    return SignedVerdict(
        verdict=verdict, signatures=[sign(VERDICT_PAYLOAD_TYPE, payload, identity.key)]
    )


def signed_verdict_bytes(signed: SignedVerdict) -> bytes:
    """The verdict document as written: canonical JSON, one line."""
    return bytes(rfc8785.dumps(signed.model_dump(mode="json", by_alias=True)))


def _malformed(message: str) -> Rejected:
    return Rejected(
        "review.malformed_verdict",
        message,
        hint="pass the file `prism-eval review --out FILE` wrote, unchanged",
    )


def open_verdict(
    raw: bytes, bundle_sha256: str, trusted_keys: Sequence[Ed25519PublicKey]
) -> VerifiedVerdict:
    """Check a verdict document: strict JSON, schema, a trusted reviewer's signature, the bundle.

    Raises `Rejected` (review.malformed_verdict, review.untrusted_reviewer, review.bad_signature,
    review.wrong_bundle); the decision itself is judged by `require_allow`.
    """
    if len(raw) > MAX_VERDICT_BYTES:
        raise _malformed(f"the verdict file is {len(raw):,} bytes, more than any verdict")
    try:
        data = parse_strict_json(raw)
    except PrismError as exc:
        raise _malformed(f"the verdict file is not JSON: {exc.message}") from exc
    try:
        signed = SignedVerdict.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:3]
        )
        raise _malformed(f"not a prism-eval review verdict ({problems})") from exc
    if signed.verdict.model_dump(mode="json", by_alias=True) != data["verdict"]:
        raise _malformed("the verdict holds values outside its schema")
    trusted = {key_id(key): key for key in trusted_keys}
    ours = [s for s in signed.signatures if s.keyid in trusted]
    if not ours:
        signers = ", ".join(s.keyid[:16] + "…" for s in signed.signatures)
        raise Rejected(
            "review.untrusted_reviewer",
            f"the verdict is signed by {signers}, which is not a trusted reviewer key",
            hint="pass the reviewer's public key with --reviewer-key PUB",
            evidence=[f"signed by keyid {s.keyid}" for s in signed.signatures],
        )
    payload = verdict_payload(data["verdict"])
    try:
        verify_signature(VERDICT_PAYLOAD_TYPE, payload, ours[0], trusted[ours[0].keyid])
    except PrismError as exc:
        raise Rejected(
            "review.bad_signature",
            "the verdict's signature does not match its content: it was altered after signing",
            hint="ask the reviewer for the original verdict file",
        ) from exc
    verdict = signed.verdict
    if verdict.bundle_sha256 != bundle_sha256:
        raise Rejected(
            "review.wrong_bundle",
            f"the verdict is for bundle {verdict.bundle_sha256[:16]}…, not for this bundle "
            f"({bundle_sha256[:16]}…)",
            hint="review this exact bundle with `prism-eval review BUNDLE`",
            evidence=[f"verdict bundle_sha256 {verdict.bundle_sha256}", f"bundle {bundle_sha256}"],
        )
    return VerifiedVerdict(verdict, hashlib.sha256(payload).hexdigest(), ours[0].keyid)


def _findings(verdict: Verdict) -> list[str]:
    reasons = [f"reason: {reason}" for reason in verdict.reasons]
    places = [
        f"{e.file}:{e.line}: {e.note}" if e.line else f"{e.file}: {e.note}"
        for e in verdict.evidence
    ]
    cited = [f"cited rule: {rule}" for rule in verdict.cited_rules]
    return reasons + places + cited


def require_allow(verified: VerifiedVerdict) -> None:
    """Raise `Rejected` unless the verified verdict allows the bundle (review.held,
    review.rejected_by_reviewer), with the verdict's reasons in the message and evidence."""
    verdict = verified.verdict
    if verdict.decision == "allow":
        return
    model = verdict.model or verdict.requested_model
    if verdict.decision == "held":
        raise Rejected(
            "review.held",
            f"the review reached no verdict (held): {verdict.error}",
            hint="run `prism-eval review BUNDLE` again once the reviewing API answers",
            evidence=_findings(verdict),
        )
    summary = "; ".join(verdict.reasons) or "no reason given"
    if len(summary) > 1000:
        summary = summary[:1000] + "… (cut here; every reason is in the evidence)"
    raise Rejected(
        "review.rejected_by_reviewer",
        f"the LLM reviewer ({model}) rejected the bundle: {summary}",
        hint="fix what the reasons and evidence name, then have the bundle reviewed again",
        evidence=_findings(verdict),
    )


def verify_verdict(
    raw: bytes, bundle_sha256: str, trusted_keys: Sequence[Ed25519PublicKey]
) -> Verdict:
    """Verify a verdict document and require that it allows the bundle; return the verdict."""
    verified = open_verdict(raw, bundle_sha256, trusted_keys)
    require_allow(verified)
    return verified.verdict


def load_verdict(
    verdict_path: Path, bundle_sha256: str, reviewer_key_paths: Sequence[Path]
) -> VerifiedVerdict:
    """Read the verdict file and the trusted reviewer keys, then `open_verdict`.

    Missing keys and unreadable files are the operator's to fix: EvaluatorError (status error).
    """
    if not reviewer_key_paths:
        raise EvaluatorError(
            "review.no_reviewer_key",
            "a review verdict was given but no trusted reviewer key to check it with",
            hint="pass --reviewer-key PUB (the reviewer's public key; repeatable)",
        )
    keys = []
    for path in reviewer_key_paths:
        try:
            keys.append(load_public_key(path))
        except PrismError as exc:
            raise EvaluatorError("review.bad_reviewer_key", exc.message) from exc
    try:
        with verdict_path.open("rb") as handle:
            raw = handle.read(MAX_VERDICT_BYTES + 1)
    except OSError as exc:
        raise EvaluatorError(
            "review.unreadable_verdict", f"cannot read the review verdict {verdict_path}: {exc}"
        ) from exc
    return open_verdict(raw, bundle_sha256, keys)
