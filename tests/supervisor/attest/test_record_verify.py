"""Tests for supervisor.attest.record and .verify: a hand-built scored record, signed and
verified, then altered in each way an auditor must catch."""

from __future__ import annotations

import base64
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest
import rfc8785
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prism_eval.errors import VerificationFailed
from prism_eval.supervisor.attest import issuing as attest
from prism_eval.supervisor.attest import record as schema
from prism_eval.supervisor.attest.record import (
    PAYLOAD_TYPE,
    PREDICATE_TYPE,
    RECORD_SCHEMA,
    STATEMENT_TYPE,
    RanksCheck,
    Record,
    Signer,
    StageResult,
    record_to_json,
    statement_bytes,
    statement_for,
)
from prism_eval.supervisor.attest.signing import pae
from prism_eval.supervisor.attest.verify import (
    ANY_SIGNER,
    TrustedKeys,
    check_stream_file,
    parse_strict_json,
    verify_record,
)
from prism_eval.supervisor.formula import (
    SCORING_VERSION,
    BatchFigures,
    bits_per_byte,
    catch_probabilities,
    final_score,
    learning_curve,
    stream_sha256,
    total_nats,
)
from prism_eval.supervisor.intake.bundle import BundleFile

BUNDLE_SHA = "b" * 64
DEFAULT_FIGURES = [
    BatchFigures(nats=1234.5678 + i * 0.1, tokens=252, bytes=1000 + i) for i in range(12)
]


def make_record(
    figures: list[BatchFigures] = DEFAULT_FIGURES,
    signer: Signer | None = None,
    *,
    config: dict[str, Any] | None = None,
    message: str = "scored",
    wall_seconds: float = 12.5,
) -> Record:
    """A consistent scored record: every derived figure computed with formula.py."""
    config = (
        {"profile": "cpu-small", "byte_budget": 100000, "lr": 0.001} if config is None else config
    )
    nats = total_nats(figures)
    tokens = sum(f.tokens for f in figures)
    total_bytes = sum(f.bytes for f in figures)
    bpb = bits_per_byte(nats, total_bytes)
    if signer is None:
        signer = Signer(mode="ephemeral", keyid="0" * 64, public_key="AAAA")
    return Record(
        status="scored",
        reason=schema.Reason(rule_id=None, message=message),
        subject=schema.Subject(
            bundle_sha256=BUNDLE_SHA,
            files=[BundleFile(path="architecture.py", sha256="a" * 64, bytes=321)],
            source="bundle.zip",
            compressed_bytes=1234,
            architecture_name="Tiny <b>transformer</b>",
            kind="full",
        ),
        inputs=schema.Inputs(
            data=schema.DataRef(
                manifest_sha256="c" * 64,
                digest="d" * 64,
                split="train",
                shard_bytes=4096,
                documents=17,
            ),
            heldout=None,
            tokenizer=schema.TokenizerRef(
                name="byte", vocab_size=257, bos_id=256, fingerprint="builtin:byte"
            ),
            seed=1234,
            config=config,
            config_sha256=hashlib.sha256(rfc8785.dumps(config)).hexdigest(),
        ),
        evaluator=schema.Evaluator(version="0.1.0"),
        environment=schema.Environment(
            python="3.11.9", platform="linux", cpu="x86_64", cpu_count=2, torch="2.4.0"
        ),
        isolation=[schema.IsolationLayer(name="seccomp", state="active")],
        stages=[
            StageResult(name="intake", status="passed", seconds=0.01),
            StageResult(name="train", status="passed", seconds=wall_seconds),
        ],
        run=schema.RunFigures(
            batch_size=4,
            seq_len=64,
            batches=len(figures),
            tokens=tokens,
            bytes=total_bytes,
            documents=17,
            empty_documents=1,
            stopped_by="budget",
            model_params=1000,
            float_buffer_elements=0,
            wall_seconds=wall_seconds,
        ),
        prefix_audit=schema.PrefixAudit(
            rate=0.1,
            tolerance_nats=1e-4,
            steps=1,
            positions=4,
            max_diff_nats=0.0,
            catch_spread_1pct=catch_probabilities(4, 0.1, len(figures))[0],
            catch_steps_1pct=catch_probabilities(4, 0.1, len(figures))[1],
        ),
        stream=schema.StreamSummary(
            sha256=stream_sha256(figures),
            batches=len(figures),
            nats=nats,
            tokens=tokens,
            bytes=total_bytes,
            curve=learning_curve(figures, 256),
        ),
        score=schema.Score(bpb=bpb, final_score=final_score(bpb), scoring_version=SCORING_VERSION),
        artifacts=None,
        signer=signer,
        started_at="2024-01-01T00:00:00Z",
        finished_at="2024-01-01T00:00:12Z",
    )


@pytest.fixture(scope="module")
def identity() -> attest.SigningIdentity:
    return attest.SigningIdentity(Ed25519PrivateKey.generate(), "key")


@pytest.fixture
def pubkey_path(tmp_path: Path, identity: attest.SigningIdentity) -> Path:
    return write_public_key(tmp_path / "signer.pub", identity.key)


def write_public_key(path: Path, key: Ed25519PrivateKey) -> Path:
    path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return path


def signed_bytes(record: Record, identity: attest.SigningIdentity) -> bytes:
    return attest.signed_record_bytes(attest.sign_record(record, identity))


def good_record(identity: attest.SigningIdentity, **kwargs: Any) -> Record:
    return make_record(signer=identity.signer(), **kwargs)


def trusting(pubkey: Path | None) -> TrustedKeys:
    """That key, or (None) the key the record names: integrity only."""
    return TrustedKeys.from_files([pubkey]) if pubkey else ANY_SIGNER


def rule_of(raw: bytes, pubkey: Path | None, stream: Path | None = None) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as info:
        verify_record(raw, trusting(pubkey), stream)
    return info.value


# ---- passing ------------------------------------------------------------------------------


def test_signed_record_verifies_with_the_signers_public_key(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    record = good_record(identity)
    verified = verify_record(signed_bytes(record, identity), trusting(pubkey_path))
    assert verified.record == record
    assert verified.pinned is True


def test_signed_record_verifies_with_its_embedded_key_unpinned(
    identity: attest.SigningIdentity,
) -> None:
    record = good_record(identity)
    verified = verify_record(signed_bytes(record, identity), ANY_SIGNER)
    assert verified.record == record
    assert verified.pinned is False


def test_signed_record_bytes_are_canonical_and_deterministic(
    identity: attest.SigningIdentity,
) -> None:
    record = good_record(identity)
    raw = signed_bytes(record, identity)
    assert raw == signed_bytes(record, identity)  # Ed25519 is deterministic
    assert raw == bytes(rfc8785.dumps(json.loads(raw)))


# ---- altered after signing ----------------------------------------------------------------


def test_bpb_moved_by_one_ulp_in_the_json_fails_the_signature(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    data = json.loads(signed_bytes(good_record(identity), identity))
    bpb = data["record"]["score"]["bpb"]
    data["record"]["score"]["bpb"] = math.nextafter(bpb, math.inf)
    assert data["record"]["score"]["bpb"] != bpb
    error = rule_of(bytes(rfc8785.dumps(data)), pubkey_path)
    assert error.rule_id == "verify.bad_signature"


def test_changed_subject_digest_fails_the_signature(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    data = json.loads(signed_bytes(good_record(identity), identity))
    data["record"]["subject"]["bundle_sha256"] = "e" * 64
    assert rule_of(bytes(rfc8785.dumps(data)), pubkey_path).rule_id == "verify.bad_signature"


def test_record_resigned_with_an_inconsistent_score_names_score_bpb(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    record = good_record(identity)
    assert record.score is not None
    wrong = record.score.model_copy(update={"bpb": math.nextafter(record.score.bpb, 0.0)})
    raw = signed_bytes(record.model_copy(update={"score": wrong}), identity)
    error = rule_of(raw, pubkey_path)
    assert error.rule_id == "verify.inconsistent"
    assert "score.bpb" in error.message


def test_record_resigned_with_a_wrong_final_score_is_inconsistent(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    record = good_record(identity)
    assert record.score is not None
    wrong = record.score.model_copy(update={"final_score": record.score.final_score / 2})
    error = rule_of(signed_bytes(record.model_copy(update={"score": wrong}), identity), pubkey_path)
    assert error.rule_id == "verify.inconsistent"
    assert "score.final_score" in error.message


def test_record_resigned_with_a_held_out_delta_its_audit_does_not_give_is_inconsistent(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    record = good_record(identity)  # no audit, so no held-out terms
    assert record.score is not None
    forged = record.score.model_copy(update={"heldout_delta": 0.3, "gap": 0.1})
    error = rule_of(
        signed_bytes(record.model_copy(update={"score": forged}), identity), pubkey_path
    )
    assert error.rule_id == "verify.inconsistent"
    assert "score.heldout_delta" in error.message


def test_record_resigned_with_run_bytes_off_by_one_is_inconsistent(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    record = good_record(identity)
    assert record.run is not None
    run = record.run.model_copy(update={"bytes": record.run.bytes + 1})
    error = rule_of(signed_bytes(record.model_copy(update={"run": run}), identity), pubkey_path)
    assert error.rule_id == "verify.inconsistent"
    assert "run.bytes" in error.message


@pytest.mark.parametrize(
    ("update", "says"),
    [
        ({"catch_spread_1pct": 0.99}, "prefix_audit.catch_*"),
        ({"rate": 0.5}, "prefix_audit.catch_*"),
        ({"max_diff_nats": 0.5}, "differed by 0.5 nats"),
        ({"positions": 400}, "covered 1 steps and 400 positions"),
        (None, "has no prefix audit"),
    ],
)
def test_record_resigned_with_a_prefix_audit_that_does_not_add_up_is_inconsistent(
    identity: attest.SigningIdentity, pubkey_path: Path, update: dict[str, Any] | None, says: str
) -> None:
    record = good_record(identity)
    assert record.prefix_audit is not None
    audit = None if update is None else record.prefix_audit.model_copy(update=update)
    raw = signed_bytes(record.model_copy(update={"prefix_audit": audit}), identity)
    error = rule_of(raw, pubkey_path)
    assert error.rule_id == "verify.inconsistent"
    assert says in error.message


def _ranks_check(nproc: int, batches: list[int]) -> RanksCheck:
    return RanksCheck(
        nproc=nproc, backend="gloo", device="cpu", batch_size=4, seq_len=64,
        ranks=[schema.RankFigures(rank=r, batches=b, tokens=b * 252, bytes=b * 1000)
               for r, b in enumerate(batches)],
        final_weights_sha256="f" * 64, isolation=[], wall_seconds=3.0,
    )  # fmt: skip


def test_a_ranks_record_verifies_when_its_check_matches_nproc(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    record = good_record(identity, config={"nproc": 2}).model_copy(
        update={"ranks": _ranks_check(2, [3, 3])}
    )
    assert (
        verify_record(signed_bytes(record, identity), trusting(pubkey_path)).record.ranks
        is not None
    )


@pytest.mark.parametrize(
    ("nproc", "ranks", "says"),
    [
        (2, None, "no ranks check"),
        (1, _ranks_check(2, [3, 3]), "a ranks check ran"),
        (4, _ranks_check(2, [3, 3]), "ranks.ranks"),
        (2, _ranks_check(2, [3, 2]), "different batch counts"),
    ],
)
def test_a_ranks_check_that_disagrees_with_nproc_is_inconsistent(
    identity: attest.SigningIdentity,
    pubkey_path: Path,
    nproc: int,
    ranks: RanksCheck | None,
    says: str,
) -> None:
    record = good_record(identity, config={"nproc": nproc}).model_copy(update={"ranks": ranks})
    error = rule_of(signed_bytes(record, identity), pubkey_path)
    assert error.rule_id == "verify.inconsistent"
    assert says in error.message


def test_record_resigned_with_a_wrong_config_digest_is_inconsistent(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    record = good_record(identity)
    assert record.inputs is not None
    inputs = record.inputs.model_copy(update={"config_sha256": "f" * 64})
    raw = signed_bytes(record.model_copy(update={"inputs": inputs}), identity)
    error = rule_of(raw, pubkey_path)
    assert error.rule_id == "verify.inconsistent"
    assert "inputs.config_sha256" in error.message


# ---- malformed and off-schema documents ---------------------------------------------------


def test_duplicate_json_key_is_malformed(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    raw = signed_bytes(good_record(identity), identity)
    assert raw.startswith(b"{")
    duplicated = b'{"payloadType":"application/vnd.in-toto+json",' + raw[1:]
    assert rule_of(duplicated, pubkey_path).rule_id == "verify.malformed"


def test_duplicate_key_deep_inside_the_record_is_malformed(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    raw = signed_bytes(good_record(identity), identity)
    duplicated = raw.replace(b'"bpb":', b'"bpb":0.5,"bpb":', 1)
    assert duplicated != raw
    assert rule_of(duplicated, pubkey_path).rule_id == "verify.malformed"


@pytest.mark.parametrize("constant", [float("nan"), float("inf"), float("-inf")])
def test_nan_or_infinity_in_the_record_is_malformed(
    identity: attest.SigningIdentity, pubkey_path: Path, constant: float
) -> None:
    data = json.loads(signed_bytes(good_record(identity), identity))
    data["record"]["score"]["bpb"] = constant
    raw = json.dumps(data).encode()  # Python writes NaN / Infinity, which JSON forbids
    assert b"NaN" in raw or b"Infinity" in raw
    assert rule_of(raw, pubkey_path).rule_id == "verify.malformed"


@pytest.mark.parametrize("raw", [b"", b"not json", b"\xff\xfe", b"[1, 2"])
def test_non_json_is_malformed(raw: bytes, pubkey_path: Path) -> None:
    assert rule_of(raw, pubkey_path).rule_id == "verify.malformed"


def test_extra_unknown_field_in_the_record_fails_the_schema(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    data = json.loads(signed_bytes(good_record(identity), identity))
    data["record"]["score"]["bonus"] = 1.0
    assert rule_of(bytes(rfc8785.dumps(data)), pubkey_path).rule_id == "verify.schema"


def test_extra_unknown_top_level_field_fails_the_schema(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    data = json.loads(signed_bytes(good_record(identity), identity))
    data["note"] = "trust me"
    assert rule_of(bytes(rfc8785.dumps(data)), pubkey_path).rule_id == "verify.schema"


def test_value_pydantic_would_coerce_fails_the_schema(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    # "1234" would validate as the int 1234; the signed bytes must hold exactly the schema's types
    data = json.loads(signed_bytes(good_record(identity), identity))
    data["record"]["inputs"]["seed"] = str(data["record"]["inputs"]["seed"])
    assert rule_of(bytes(rfc8785.dumps(data)), pubkey_path).rule_id == "verify.schema"


def test_record_without_signatures_fails_the_schema(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    data = json.loads(signed_bytes(good_record(identity), identity))
    data["signatures"] = []
    assert rule_of(bytes(rfc8785.dumps(data)), pubkey_path).rule_id == "verify.schema"


@pytest.mark.parametrize("schema", ["prism-eval.record/v1", "prism-eval.record/v3"])
def test_other_schema_name_fails_the_schema(
    identity: attest.SigningIdentity, pubkey_path: Path, schema: str
) -> None:
    data = json.loads(signed_bytes(good_record(identity), identity))
    data["record"]["schema"] = schema
    assert rule_of(bytes(rfc8785.dumps(data)), pubkey_path).rule_id == "verify.schema"


# ---- keys ---------------------------------------------------------------------------------


def test_wrong_pubkey_fails_with_wrong_key(
    identity: attest.SigningIdentity, tmp_path: Path
) -> None:
    other = write_public_key(tmp_path / "other.pub", Ed25519PrivateKey.generate())
    raw = signed_bytes(good_record(identity), identity)
    assert rule_of(raw, other).rule_id == "verify.wrong_key"


def test_record_resigned_by_an_attacker_fails_against_the_pinned_key(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    attacker = attest.SigningIdentity(Ed25519PrivateKey.generate(), "key")
    raw = signed_bytes(make_record(signer=attacker.signer()), attacker)
    verify_record(raw, ANY_SIGNER)  # self-consistent, so it verifies unpinned...
    assert rule_of(raw, pubkey_path).rule_id == "verify.wrong_key"  # ...but not pinned


def test_signature_swapped_in_from_another_signer_fails(
    identity: attest.SigningIdentity,
) -> None:
    attacker = attest.SigningIdentity(Ed25519PrivateKey.generate(), "key")
    data = json.loads(signed_bytes(good_record(identity), identity))
    forged = json.loads(signed_bytes(make_record(signer=attacker.signer()), attacker))
    data["signatures"] = forged["signatures"]
    assert rule_of(bytes(rfc8785.dumps(data)), None).rule_id == "verify.wrong_key"


# ---- the stream file ----------------------------------------------------------------------


def test_check_stream_file_accepts_the_written_stream_and_detects_a_changed_one(
    identity: attest.SigningIdentity, pubkey_path: Path, tmp_path: Path
) -> None:
    record = good_record(identity)
    signed = attest.sign_record(record, identity)
    out = tmp_path / "out"
    attest.write_outputs(out, signed, DEFAULT_FIGURES, None)
    raw = (out / "record.json").read_bytes()
    verify_record(raw, trusting(pubkey_path), out / "stream.json")
    check_stream_file(record, out / "stream.json")

    stream = json.loads((out / "stream.json").read_bytes())
    stream["batches"][5][0] = math.nextafter(stream["batches"][5][0], 0.0)
    (out / "stream.json").write_bytes(rfc8785.dumps(stream))
    with pytest.raises(VerificationFailed) as info:
        check_stream_file(record, out / "stream.json")
    assert info.value.rule_id == "verify.inconsistent"
    assert "stream.sha256" in info.value.message
    assert rule_of(raw, pubkey_path, out / "stream.json").rule_id == "verify.inconsistent"


def test_check_stream_file_recomputes_every_total(
    identity: attest.SigningIdentity, tmp_path: Path
) -> None:
    record = good_record(identity)
    out = tmp_path / "out"
    attest.write_outputs(out, attest.sign_record(record, identity), DEFAULT_FIGURES, None)
    assert record.stream is not None
    inflated = record.stream.model_copy(update={"tokens": record.stream.tokens + 1})
    with pytest.raises(VerificationFailed) as info:
        check_stream_file(record.model_copy(update={"stream": inflated}), out / "stream.json")
    assert "stream.tokens" in info.value.message


def test_check_stream_file_refuses_a_malformed_stream(
    identity: attest.SigningIdentity, tmp_path: Path
) -> None:
    path = tmp_path / "stream.json"
    path.write_bytes(b'{"batches": [[1.0, 0, 5]]}')  # a batch with no tokens
    with pytest.raises(VerificationFailed) as info:
        check_stream_file(good_record(identity), path)
    assert info.value.rule_id == "verify.bad_stream"


# ---- the statement ------------------------------------------------------------------------


def test_statement_wraps_the_record_with_the_bundle_digest_as_subject(
    identity: attest.SigningIdentity,
) -> None:
    record_json = record_to_json(good_record(identity))
    statement = statement_for(record_json)
    assert statement["_type"] == "https://in-toto.io/Statement/v1" == STATEMENT_TYPE
    assert statement["subject"] == [{"name": "prism-bundle", "digest": {"sha256": BUNDLE_SHA}}]
    assert statement["predicateType"] == PREDICATE_TYPE
    assert statement["predicate"] == record_json
    assert record_json["schema"] == RECORD_SCHEMA


def test_statement_for_an_unread_bundle_uses_the_empty_digest(
    identity: attest.SigningIdentity,
) -> None:
    record = good_record(identity)
    unread = record.model_copy(
        update={"subject": record.subject.model_copy(update={"bundle_sha256": None})}
    )
    statement = statement_for(record_to_json(unread))
    assert statement["subject"][0]["digest"]["sha256"] == hashlib.sha256(b"").hexdigest()
    assert statement["subject"][0]["name"] == "prism-bundle-unread"


def test_signature_is_a_dsse_signature_over_the_statement(
    identity: attest.SigningIdentity,
) -> None:
    record = good_record(identity)
    signed = attest.sign_record(record, identity)
    payload = statement_bytes(record_to_json(record))
    assert payload == bytes(rfc8785.dumps(statement_for(record_to_json(record))))
    identity.key.public_key().verify(
        base64.b64decode(signed.signatures[0].sig), pae(PAYLOAD_TYPE, payload)
    )


# ---- round trip ---------------------------------------------------------------------------

FINITE = st.floats(allow_nan=False, allow_infinity=False)
# JSON-safe config values: integers within IEEE-754 exact range, finite floats, text.
CONFIG_VALUES = st.one_of(
    st.integers(min_value=-(2**53) + 1, max_value=2**53 - 1),
    st.floats(allow_nan=False, allow_infinity=False, min_value=-1e15, max_value=1e15),
    st.text(max_size=20),
    st.booleans(),
    st.none(),
)
ROUND_TRIP_FIGURES = st.lists(
    st.builds(
        BatchFigures,
        nats=st.floats(min_value=0, max_value=1e9, allow_nan=False, allow_infinity=False),
        tokens=st.integers(min_value=1, max_value=10**6),
        bytes=st.integers(min_value=1, max_value=10**7),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    figures=ROUND_TRIP_FIGURES,
    config=st.dictionaries(st.text(max_size=10), CONFIG_VALUES, max_size=5),
    message=st.text(max_size=50),
    wall_seconds=st.floats(min_value=0, max_value=1e6, allow_nan=False),
)
def test_record_round_trips_through_canonical_bytes(
    figures: list[BatchFigures], config: dict[str, Any], message: str, wall_seconds: float
) -> None:
    record = make_record(figures, config=config, message=message, wall_seconds=wall_seconds)
    raw = bytes(rfc8785.dumps(record_to_json(record)))
    parsed = Record.model_validate(parse_strict_json(raw))
    assert bytes(rfc8785.dumps(record_to_json(parsed))) == raw
    assert parsed == record


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(figures=ROUND_TRIP_FIGURES, message=st.text(max_size=50))
def test_signed_record_round_trips_and_verifies(figures: list[BatchFigures], message: str) -> None:
    identity = attest.SigningIdentity(Ed25519PrivateKey.generate(), "ephemeral")
    record = make_record(figures, signer=identity.signer(), message=message)
    raw = signed_bytes(record, identity)
    signed = schema.SignedRecord.model_validate(parse_strict_json(raw))
    assert attest.signed_record_bytes(signed) == raw
    assert verify_record(raw, ANY_SIGNER).record == record


# ---- regressions ---------------------------------------------------------------------------


def test_record_with_a_large_integral_float_verifies(
    identity: attest.SigningIdentity, pubkey_path: Path
) -> None:
    record = good_record(identity, config={"byte_budget": 1e16})
    verify_record(signed_bytes(record, identity), trusting(pubkey_path))


@pytest.mark.parametrize(
    ("policy", "decision"), [("optional", "reject"), ("off", "held"), ("required", None)]
)
def test_scored_record_without_an_allow_where_one_was_needed_is_inconsistent(
    identity: attest.SigningIdentity, pubkey_path: Path, policy: str, decision: str | None
) -> None:
    review = schema.ReviewSummary(
        policy=policy,  # type: ignore[arg-type]
        verdict_sha256=None if decision is None else "f" * 64,
        decision=decision,  # type: ignore[arg-type]
        reviewer_keyid=None,
        model=None,
    )
    record = good_record(identity).model_copy(update={"review": review})
    assert rule_of(signed_bytes(record, identity), pubkey_path).rule_id == "verify.inconsistent"


# ---- identity fails closed ----------------------------------------------------------------


def test_without_a_trusted_key_verification_refuses(identity: attest.SigningIdentity) -> None:
    with pytest.raises(VerificationFailed) as info:
        verify_record(signed_bytes(good_record(identity), identity), TrustedKeys())
    assert info.value.rule_id == "verify.no_trusted_key"
    assert "--any-signer" in (info.value.hint or "")


def test_a_keyring_pins_any_of_its_keys(
    identity: attest.SigningIdentity, pubkey_path: Path, tmp_path: Path
) -> None:
    other = write_public_key(tmp_path / "old.pub", Ed25519PrivateKey.generate())
    keyring = tmp_path / "validators.pem"
    keyring.write_text(
        "# rotated 2026-11\n" + other.read_text() + "\n# current\n" + pubkey_path.read_text()
    )
    trust = TrustedKeys.from_files([], [keyring])
    assert len(trust.keys) == 2
    verified = verify_record(signed_bytes(good_record(identity), identity), trust)
    assert verified.identity == "pinned"
    only_old = TrustedKeys.from_files([other])
    with pytest.raises(VerificationFailed) as info:
        verify_record(signed_bytes(good_record(identity), identity), only_old)
    assert info.value.rule_id == "verify.wrong_key"


@pytest.mark.parametrize("text", ["", "no keys here\n", "-----BEGIN PUBLIC KEY-----\nAAAA\n"])
def test_a_keyring_without_a_usable_key_is_refused(text: str, tmp_path: Path) -> None:
    keyring = tmp_path / "ring.pem"
    keyring.write_text(text)
    with pytest.raises(VerificationFailed) as info:
        TrustedKeys.from_files([], [keyring])
    assert info.value.rule_id == "verify.bad_pubkey"
