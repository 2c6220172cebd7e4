"""Supervisor: re-encode a signed record as a standard DSSE envelope, and verify one.

The record's signature already covers DSSE's PAE over the RFC 8785 bytes of the in-toto
Statement v1 that wraps it, and that statement is a pure function of the record. So the
envelope `{payloadType, payload: base64(statement), signatures}` is built without the private
key, and any DSSE/in-toto verifier checks it with the signer's public key.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prism_eval.errors import VerificationFailed
from prism_eval.supervisor.attest.record import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    STATEMENT_TYPE,
    statement_bytes,
)
from prism_eval.supervisor.attest.signing import Signature, verify_signature
from prism_eval.supervisor.attest.verify import ANY_SIGNER, parse_strict_json, verify_record


class EnvelopeSignature(BaseModel):
    """A DSSE signature entry."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keyid: str
    sig: str


class Envelope(BaseModel):
    """A DSSE envelope (github.com/secure-systems-lab/dsse, envelope.md)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    payloadType: str = Field(description="DSSE's own field name.")
    payload: str = Field(description="Standard base64 of the canonical statement.")
    signatures: list[EnvelopeSignature] = Field(min_length=1)


def export_envelope(raw_record: bytes) -> dict[str, Any]:
    """The DSSE envelope of a printed record (which must verify first)."""
    verified = verify_record(raw_record, ANY_SIGNER)  # re-encoding: the signatures as they are
    data = parse_strict_json(raw_record)
    payload = statement_bytes(data["record"])
    signatures = [EnvelopeSignature(keyid=s.keyid, sig=s.sig) for s in verified.signatures]
    envelope = Envelope(
        payloadType=PAYLOAD_TYPE,
        payload=base64.b64encode(payload).decode("ascii"),
        signatures=signatures,
    )
    return envelope.model_dump()


def verify_envelope(raw_envelope: bytes, key: Ed25519PublicKey) -> dict[str, Any]:
    """Check a DSSE envelope's signature with `key`; return the statement it carries."""
    try:
        envelope = Envelope.model_validate(parse_strict_json(raw_envelope))
        payload = base64.b64decode(envelope.payload, validate=True)
    except (ValidationError, binascii.Error) as exc:
        raise VerificationFailed("verify.malformed", f"not a DSSE envelope: {exc}") from exc
    if envelope.payloadType != PAYLOAD_TYPE:
        raise VerificationFailed("verify.bad_payload_type", f"payloadType {envelope.payloadType}")
    first = envelope.signatures[0]
    verify_signature(PAYLOAD_TYPE, payload, Signature(keyid=first.keyid, sig=first.sig), key)
    statement: dict[str, Any] = orjson.loads(payload)
    if statement.get("_type") != STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        raise VerificationFailed("verify.bad_statement", "not a prism-eval in-toto statement")
    return statement
