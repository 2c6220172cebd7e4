"""Supervisor: verify a signed record — schema, signature, and that its figures agree.

Checks run in this order and the first failure raises `VerificationFailed` with a message
that says which field disagrees and both values. The signature is checked over the statement
rebuilt from the record exactly as received (RFC 8785 is deterministic), before the record's
content is trusted for anything else.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import ValidationError

from prism_eval.errors import VerificationFailed
from prism_eval.supervisor.attest.record import PAYLOAD_TYPE, Record, SignedRecord, statement_bytes
from prism_eval.supervisor.attest.signing import (
    Signature,
    key_id,
    load_keyring,
    load_public_key,
    public_key_from_raw_b64,
    verify_signature,
)
from prism_eval.supervisor.formula import (
    BatchFigures,
    ScoringRules,
    bits_per_byte,
    catch_probabilities,
    heldout_terms,
    rank_score,
    stream_sha256,
    total_nats,
)

MAX_RECORD_BYTES = 64 * 1024 * 1024


Identity = Literal["pinned", "unverified"]


@dataclass(frozen=True)
class Verified:
    """A record that verified, and whether a trusted key signed it (`pinned`) or only the key
    the record names (`unverified`: integrity, not identity)."""

    record: Record
    identity: Identity
    signatures: list[Signature]

    @property
    def pinned(self) -> bool:
        """Whether a trusted key signed the record."""
        return self.identity == "pinned"


@dataclass(frozen=True)
class TrustedKeys:
    """Whose signatures a verification accepts. With no key, it refuses (identity fails
    closed) unless `any_signer` asks for integrity only."""

    keys: tuple[Ed25519PublicKey, ...] = ()
    any_signer: bool = False

    @classmethod
    def from_files(
        cls, pubkeys: Iterable[Path], keyrings: Iterable[Path] = (), any_signer: bool = False
    ) -> TrustedKeys:
        """Keys from PEM files and keyring files."""
        keys = [load_public_key(path) for path in pubkeys]
        keys += [key for path in keyrings for key in load_keyring(path)]
        return cls(tuple(keys), any_signer)


ANY_SIGNER = TrustedKeys(any_signer=True)


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [key for key, _ in pairs]
    if len(keys) != len(set(keys)):
        raise VerificationFailed("verify.malformed", "the record repeats a JSON key")
    return dict(pairs)


def _reject_constant(name: str) -> Any:
    raise VerificationFailed("verify.malformed", f"the record contains {name}, which JSON forbids")


def _parse_int(text: str) -> int | float:
    # RFC 8785 numbers are IEEE doubles: an integral float past 2**53 is printed without a
    # fraction, so it must be read back as the float it was.
    value = int(text)
    return value if abs(value) <= 2**53 else float(value)


def parse_strict_json(raw: bytes) -> Any:
    """JSON as RFC 8785 means it: no duplicate keys, no NaN/Infinity, numbers as doubles."""
    try:
        return json.loads(
            raw,
            object_pairs_hook=_no_duplicates,
            parse_constant=_reject_constant,
            parse_int=_parse_int,
        )
    except (ValueError, UnicodeDecodeError) as exc:
        raise VerificationFailed("verify.malformed", f"not JSON: {exc}") from exc


def _mismatch(field: str, recorded: object, recomputed: object) -> VerificationFailed:
    return VerificationFailed(
        "verify.inconsistent",
        f"{field} is {recorded!r} in the record but recomputes to {recomputed!r}",
    )


def check_consistency(record: Record) -> None:
    """Recompute what the record derives: score from stream totals, counts, config digest."""
    if record.inputs is not None:
        digest = hashlib.sha256(rfc8785.dumps(record.inputs.config)).hexdigest()
        if digest != record.inputs.config_sha256:
            raise _mismatch("inputs.config_sha256", record.inputs.config_sha256, digest)
    ended = [s for s in record.stages if s.status not in ("passed", "skipped")]
    if record.status == "scored":
        if ended or record.reason.rule_id is not None:
            raise VerificationFailed("verify.inconsistent", "a scored record has a failed stage")
        if record.score is None or record.stream is None or record.run is None:
            raise VerificationFailed("verify.inconsistent", "a scored record lacks its figures")
        review = record.review
        if review is not None and review.decision not in (None, "allow"):
            raise VerificationFailed(
                "verify.inconsistent", f"a scored record whose review decided {review.decision}"
            )
        if review is not None and review.policy == "required" and review.decision != "allow":
            raise VerificationFailed(
                "verify.inconsistent", "a scored record under a required review has no allow"
            )
        stream, score, run = record.stream, record.score, record.run
        bpb = bits_per_byte(stream.nats, stream.bytes)
        if bpb != score.bpb:
            raise _mismatch("score.bpb", score.bpb, bpb)
        audit = record.audit
        expected = (
            heldout_terms(audit.heldout_twin_bpb, audit.heldout_trained_bpb, audit.recent_final_bpb)
            if audit is not None
            else (None, None)
        )
        if (score.heldout_delta, score.gap) != expected:
            raise _mismatch("score.heldout_delta, score.gap", (score.heldout_delta, score.gap),
                            expected)  # fmt: skip
        config = record.inputs.config if record.inputs else {}
        rules = ScoringRules.model_validate(config)
        final, multipliers = rank_score(bpb, score.heldout_delta, score.gap, rules)
        if final != score.final_score:
            raise _mismatch("score.final_score", score.final_score, final)
        if multipliers != score.multipliers:
            raise _mismatch("score.multipliers", score.multipliers, multipliers)
        for name in ("batches", "tokens", "bytes"):
            if getattr(run, name) != getattr(stream, name):
                raise _mismatch(f"run.{name}", getattr(run, name), getattr(stream, name))
        last = stream.curve[-1] if stream.curve else None
        if last is None or last.bytes != stream.bytes or last.bpb != bpb:
            raise _mismatch("stream.curve[-1]", last, (stream.bytes, bpb))
        _check_prefix_audit(record)
        _check_ranks(record, config.get("nproc", 1))
    else:
        if record.score is not None:
            raise VerificationFailed("verify.inconsistent", f"a {record.status} record has a score")
        if (
            not ended
            or ended[0].status != record.status
            or ended[0].rule_id != record.reason.rule_id
        ):
            raise VerificationFailed(
                "verify.inconsistent", "the record's status and reason disagree with its stages"
            )


def _check_prefix_audit(record: Record) -> None:
    """A scored record's prefix audit: counts that fit the run, differences within tolerance,
    and the catch probabilities recomputed from its counts (docs/scoring.md §4.4)."""
    audit, run = record.prefix_audit, record.run
    assert run is not None
    if audit is None:
        raise VerificationFailed("verify.inconsistent", "a scored record has no prefix audit")
    if audit.steps > run.batches or audit.positions > audit.steps * run.batch_size:
        raise VerificationFailed(
            "verify.inconsistent",
            f"the prefix audit covered {audit.steps} steps and {audit.positions} positions of a "
            f"run of {run.batches} batches of {run.batch_size} rows",
        )
    if audit.max_diff_nats > audit.tolerance_nats:
        raise VerificationFailed(
            "verify.inconsistent",
            f"a scored record whose prefix audit differed by {audit.max_diff_nats} nats "
            f"(tolerance {audit.tolerance_nats})",
        )
    expected = catch_probabilities(audit.positions, audit.rate, run.batches)
    if (audit.catch_spread_1pct, audit.catch_steps_1pct) != expected:
        raise _mismatch(
            "prefix_audit.catch_*", (audit.catch_spread_1pct, audit.catch_steps_1pct), expected
        )


def _check_ranks(record: Record, nproc: int) -> None:
    """A scored record ran the ranks check exactly when its config asked for several ranks."""
    ranks = record.ranks
    if nproc == 1:
        if ranks is not None:
            raise VerificationFailed("verify.inconsistent", "nproc is 1 but a ranks check ran")
        return
    if ranks is None:
        raise VerificationFailed("verify.inconsistent", f"nproc is {nproc} but no ranks check")
    if ranks.nproc != nproc or [r.rank for r in ranks.ranks] != list(range(nproc)):
        raise _mismatch("ranks.ranks", [r.rank for r in ranks.ranks], list(range(nproc)))
    counts = {r.batches for r in ranks.ranks}
    if len(counts) != 1:
        raise VerificationFailed(
            "verify.inconsistent", f"the ranks consumed different batch counts: {sorted(counts)}"
        )


def check_stream_file(record: Record, stream_path: Path) -> None:
    """Recompute the stream digest and totals from a `stream.json` written by `run --out`."""
    data = parse_strict_json(stream_path.read_bytes())
    try:
        figures = [BatchFigures(nats=n, tokens=t, bytes=b) for n, t, b in data["batches"]]
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        raise VerificationFailed("verify.bad_stream", f"{stream_path} is malformed: {exc}") from exc
    if record.stream is None:
        raise VerificationFailed("verify.bad_stream", "the record has no stream to compare with")
    recomputed = {
        "sha256": stream_sha256(figures),
        "batches": len(figures),
        "nats": total_nats(figures),
        "tokens": sum(f.tokens for f in figures),
        "bytes": sum(f.bytes for f in figures),
    }
    for name, value in recomputed.items():
        if getattr(record.stream, name) != value:
            raise _mismatch(f"stream.{name}", getattr(record.stream, name), value)


def verify_record(raw: bytes, trust: TrustedKeys, stream_path: Path | None = None) -> Verified:
    """Verify a printed record document; raise VerificationFailed on the first problem.

    The record must be signed by one of `trust`'s keys (and name that key as its signer); with
    `trust.any_signer` and no key, by the key it names (integrity only); with neither, it is
    refused (`verify.no_trusted_key`)."""
    if len(raw) > MAX_RECORD_BYTES:
        raise VerificationFailed("verify.malformed", "the record is larger than any record")
    data = parse_strict_json(raw)
    try:
        signed = SignedRecord.model_validate(data)
    except ValidationError as exc:
        raise VerificationFailed(
            "verify.schema", f"not a prism-eval record: {exc.errors()[:3]}"
        ) from exc
    # Fields a record does not carry (one written before an optional field existed) stay
    # unset; everything it does carry must read back unchanged.
    as_parsed = signed.record.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if as_parsed != data["record"]:
        raise VerificationFailed("verify.schema", "the record holds values outside its schema")
    signer = signed.record.signer
    key, identity = _signing_key(signer.keyid, signer.public_key, trust)
    matching = [s for s in signed.signatures if s.keyid == signer.keyid]
    if not matching:
        raise VerificationFailed("verify.wrong_key", "no signature by the record's signer")
    payload = statement_bytes(data["record"])
    verify_signature(PAYLOAD_TYPE, payload, matching[0], key)
    check_consistency(signed.record)
    if stream_path is not None:
        check_stream_file(signed.record, stream_path)
    return Verified(signed.record, identity, signed.signatures)


def _signing_key(
    keyid: str, public_key_b64: str, trust: TrustedKeys
) -> tuple[Ed25519PublicKey, Identity]:
    """The key to check the record's signature with, and what a valid one proves."""
    if trust.keys:
        trusted = {key_id(key): key for key in trust.keys}
        if keyid not in trusted:
            raise VerificationFailed(
                "verify.wrong_key",
                f"the record is signed by key {keyid[:16]}…, which is none of the "
                f"{len(trusted)} trusted key(s)",
            )
        return trusted[keyid], "pinned"
    if trust.any_signer:
        return public_key_from_raw_b64(public_key_b64), "unverified"
    raise VerificationFailed(
        "verify.no_trusted_key",
        "no trusted key to check who signed the record",
        hint="pass the validator's --pubkey (or a --keyring of them); --any-signer checks "
        "integrity only, against the key the record names",
    )
