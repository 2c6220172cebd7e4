"""Tests for supervisor.attest.signing: DSSE PAE, Ed25519 sign/verify, golden vector, key files."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from prism_eval.errors import EvaluatorError, VerificationFailed
from prism_eval.supervisor.attest.signing import (
    Signature,
    generate_keypair,
    key_id,
    load_public_key,
    load_signing_key,
    pae,
    public_key_from_raw_b64,
    public_key_raw,
    sign,
    verify_signature,
)
from tests.conftest import ROOT

VECTOR_PATH = ROOT / "tests" / "assets" / "signing_vector.json"
# Computed once with the RFC 8032 TEST 1 key over PAE(payload_type, payload) of the vector file;
# Ed25519 is deterministic, so this must never change.
GOLDEN_SIGNATURE = (
    "2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA=="
)
PAYLOAD_TYPE = "application/vnd.in-toto+json"


@pytest.fixture(scope="module")
def vector() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(VECTOR_PATH.read_text(encoding="utf-8"))
    return data


def vector_key(vector: dict[str, Any]) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(vector["seed_hex"]))


def write_pem_private(path: Path, key: Any) -> Path:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


# ---- PAE ------------------------------------------------------------------------------------


def test_pae_matches_the_dsse_spec_example() -> None:
    assert (
        pae("http://example.com/HelloWorld", b"hello world")
        == b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_utf8_bytes_not_characters() -> None:
    # "é" is 2 bytes in UTF-8; the length prefix is a byte count (DSSE protocol.md).
    assert pae("é", "ü".encode()) == b"DSSEv1 2 \xc3\xa9 2 \xc3\xbc"


def test_pae_of_empty_type_and_body_keeps_all_separators() -> None:
    assert pae("", b"") == b"DSSEv1 0  0 "


def test_pae_binds_the_type_so_a_shifted_boundary_differs() -> None:
    # Without length prefixes ("a b", "c") and ("a", "b c") would encode alike.
    assert pae("a b", b"c") != pae("a", b"b c")


# ---- sign / verify ------------------------------------------------------------------------


def test_sign_then_verify_round_trip_passes() -> None:
    key = Ed25519PrivateKey.generate()
    payload = b'{"record": 1}'
    signature = sign(PAYLOAD_TYPE, payload, key)
    assert signature.alg == "ed25519"
    assert signature.keyid == hashlib.sha256(public_key_raw(key.public_key())).hexdigest()
    assert len(base64.b64decode(signature.sig)) == 64
    verify_signature(PAYLOAD_TYPE, payload, signature, key.public_key())


def test_signature_is_over_pae_not_over_the_bare_payload() -> None:
    key = Ed25519PrivateKey.generate()
    payload = b"payload"
    signature = sign(PAYLOAD_TYPE, payload, key)
    raw = base64.b64decode(signature.sig)
    key.public_key().verify(raw, pae(PAYLOAD_TYPE, payload))  # raises if not over the PAE


@pytest.mark.parametrize("position", [0, 7, -1])
def test_flipped_payload_byte_fails_with_bad_signature(position: int) -> None:
    key = Ed25519PrivateKey.generate()
    payload = bytearray(b'{"score":{"bpb":1.25}}')
    signature = sign(PAYLOAD_TYPE, bytes(payload), key)
    payload[position] ^= 0x01
    with pytest.raises(VerificationFailed) as info:
        verify_signature(PAYLOAD_TYPE, bytes(payload), signature, key.public_key())
    assert info.value.rule_id == "verify.bad_signature"


def test_other_payload_type_fails_with_bad_signature() -> None:
    key = Ed25519PrivateKey.generate()
    signature = sign(PAYLOAD_TYPE, b"{}", key)
    with pytest.raises(VerificationFailed) as info:
        verify_signature("application/json", b"{}", signature, key.public_key())
    assert info.value.rule_id == "verify.bad_signature"


def test_verifying_with_another_key_fails_with_wrong_key() -> None:
    key = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    signature = sign(PAYLOAD_TYPE, b"{}", key)
    with pytest.raises(VerificationFailed) as info:
        verify_signature(PAYLOAD_TYPE, b"{}", signature, other.public_key())
    assert info.value.rule_id == "verify.wrong_key"


def test_signature_relabelled_with_the_other_keyid_still_fails() -> None:
    key = Ed25519PrivateKey.generate()
    other = Ed25519PrivateKey.generate()
    forged = sign(PAYLOAD_TYPE, b"{}", key).model_copy(update={"keyid": key_id(other.public_key())})
    with pytest.raises(VerificationFailed) as info:
        verify_signature(PAYLOAD_TYPE, b"{}", forged, other.public_key())
    assert info.value.rule_id == "verify.bad_signature"


def test_non_base64_signature_fails_with_bad_signature() -> None:
    key = Ed25519PrivateKey.generate()
    signature = Signature(keyid=key_id(key.public_key()), sig="not base64!!")
    with pytest.raises(VerificationFailed) as info:
        verify_signature(PAYLOAD_TYPE, b"{}", signature, key.public_key())
    assert info.value.rule_id == "verify.bad_signature"


def test_unknown_algorithm_is_refused() -> None:
    key = Ed25519PrivateKey.generate()
    signature = sign(PAYLOAD_TYPE, b"{}", key).model_copy(update={"alg": "rsa"})
    with pytest.raises(VerificationFailed) as info:
        verify_signature(PAYLOAD_TYPE, b"{}", signature, key.public_key())
    assert info.value.rule_id == "verify.bad_alg"


# ---- golden vector ------------------------------------------------------------------------


def test_vector_file_and_pinned_literal_agree(vector: dict[str, Any]) -> None:
    assert vector["signature"] == GOLDEN_SIGNATURE


def test_vector_key_is_rfc8032_test_1(vector: dict[str, Any]) -> None:
    key = vector_key(vector)
    assert public_key_raw(key.public_key()).hex() == vector["public_key_hex"]
    assert key.sign(b"").hex() == vector["rfc8032_empty_message_signature_hex"]


def test_fixed_key_signs_fixed_payload_to_the_golden_signature(vector: dict[str, Any]) -> None:
    key = vector_key(vector)
    payload = vector["payload"].encode("utf-8")
    signature = sign(vector["payload_type"], payload, key)
    assert signature.sig == GOLDEN_SIGNATURE
    assert signature.keyid == vector["keyid"]
    assert sign(vector["payload_type"], payload, key) == signature  # deterministic
    verify_signature(vector["payload_type"], payload, signature, key.public_key())


def test_golden_signature_verifies_with_the_public_key_alone(vector: dict[str, Any]) -> None:
    public_b64 = base64.b64encode(bytes.fromhex(vector["public_key_hex"])).decode("ascii")
    public = public_key_from_raw_b64(public_b64)
    signature = Signature(keyid=vector["keyid"], sig=GOLDEN_SIGNATURE)
    verify_signature(vector["payload_type"], vector["payload"].encode(), signature, public)


# ---- key files ----------------------------------------------------------------------------


def test_keygen_writes_private_key_with_mode_0600_and_a_matching_public_key(
    tmp_path: Path,
) -> None:
    key_path, pub_path = generate_keypair(tmp_path / "prism")
    assert key_path == tmp_path / "prism.key"
    assert pub_path == tmp_path / "prism.pub"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    private = load_signing_key(key_path)
    public = load_public_key(pub_path)
    assert public_key_raw(private.public_key()) == public_key_raw(public)
    verify_signature(PAYLOAD_TYPE, b"x", sign(PAYLOAD_TYPE, b"x", private), public)


def test_keygen_refuses_to_overwrite_an_existing_key(tmp_path: Path) -> None:
    key_path, _ = generate_keypair(tmp_path / "prism")
    before = key_path.read_bytes()
    with pytest.raises(EvaluatorError) as info:
        generate_keypair(tmp_path / "prism")
    assert info.value.rule_id == "keygen.exists"
    assert key_path.read_bytes() == before


def test_keygen_twice_with_new_prefixes_gives_different_keys(tmp_path: Path) -> None:
    first, _ = generate_keypair(tmp_path / "a")
    second, _ = generate_keypair(tmp_path / "b")
    assert key_id(load_signing_key(first).public_key()) != key_id(
        load_signing_key(second).public_key()
    )


def test_load_signing_key_refuses_a_non_ed25519_key(tmp_path: Path) -> None:
    path = write_pem_private(tmp_path / "ec.key", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(EvaluatorError) as info:
        load_signing_key(path)
    assert info.value.rule_id == "signing.bad_key"


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage\n", b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"],
    ids=["empty", "garbage", "bad-pem-body"],
)
def test_load_signing_key_refuses_garbage(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.key"
    path.write_bytes(content)
    with pytest.raises(EvaluatorError) as info:
        load_signing_key(path)
    assert info.value.rule_id == "signing.bad_key"


def test_load_signing_key_refuses_an_encrypted_key(tmp_path: Path) -> None:
    path = tmp_path / "enc.key"
    path.write_bytes(
        Ed25519PrivateKey.generate().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(EvaluatorError) as info:
        load_signing_key(path)
    assert info.value.rule_id == "signing.bad_key"


def test_load_signing_key_refuses_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(EvaluatorError) as info:
        load_signing_key(tmp_path / "absent.key")
    assert info.value.rule_id == "signing.bad_key"


def test_load_public_key_refuses_a_private_key_file(tmp_path: Path) -> None:
    path = write_pem_private(tmp_path / "k.key", Ed25519PrivateKey.generate())
    with pytest.raises(VerificationFailed) as info:
        load_public_key(path)
    assert info.value.rule_id == "verify.bad_pubkey"


def test_public_key_from_malformed_base64_is_refused() -> None:
    with pytest.raises(VerificationFailed) as info:
        public_key_from_raw_b64(base64.b64encode(b"short").decode())
    assert info.value.rule_id == "verify.bad_pubkey"
