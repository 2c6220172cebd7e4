"""Supervisor: Ed25519 over DSSE's pre-authentication encoding; the only module touching a key.

DSSE v1 (github.com/secure-systems-lab/dsse, protocol.md): the signature covers
`PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, where LEN is the
ASCII decimal byte length. Binding the payload type stops a signature over one kind of
document from being replayed as another.
"""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from prism_eval.errors import EvaluatorError, VerificationFailed

ALG = "ed25519"
KEY_ENV = "PRISM_EVAL_SIGNING_KEY"


class Signature(BaseModel):
    """One DSSE signature: who (key id), how (algorithm) and the signature bytes (base64)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    keyid: str = Field(description="sha256 of the raw 32-byte public key, hex.")
    alg: str = Field(ALG, description="Always ed25519.")
    sig: str = Field(description="Standard base64 of the 64-byte signature.")


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding of (payload_type, payload)."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(payload), payload)


def public_key_raw(key: Ed25519PublicKey) -> bytes:
    """The 32 raw bytes of a public key."""
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A public key's id: sha256 of its raw bytes, hex."""
    return hashlib.sha256(public_key_raw(key)).hexdigest()


def generate_keypair(prefix: Path) -> tuple[Path, Path]:
    """Write PREFIX.key (PKCS#8 PEM, mode 0600) and PREFIX.pub (SubjectPublicKeyInfo PEM)."""
    key = Ed25519PrivateKey.generate()
    key_path = prefix.with_name(prefix.name + ".key")
    pub_path = prefix.with_name(prefix.name + ".pub")
    for path in (key_path, pub_path):
        if path.exists():
            raise EvaluatorError(
                "keygen.exists", f"{path} exists", hint="choose another prefix or remove it"
            )
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # O_EXCL + 0600 at creation: the key is never readable by others, not even briefly.
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    pub_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return key_path, pub_path


def load_signing_key(path: Path) -> Ed25519PrivateKey:
    """Load a PKCS#8 PEM Ed25519 private key, refusing anything else."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise EvaluatorError(
            "signing.bad_key",
            f"cannot load signing key {path}: {exc}",
            hint="create one with `prism-eval keygen --out PREFIX`",
        ) from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise EvaluatorError("signing.bad_key", f"{path} is not an Ed25519 private key")
    return key


def load_public_key(path: Path) -> Ed25519PublicKey:
    """Load a SubjectPublicKeyInfo PEM Ed25519 public key."""
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise VerificationFailed(
            "verify.bad_pubkey", f"cannot load public key {path}: {exc}"
        ) from exc
    if not isinstance(key, Ed25519PublicKey):
        raise VerificationFailed("verify.bad_pubkey", f"{path} is not an Ed25519 public key")
    return key


def load_keyring(path: Path) -> list[Ed25519PublicKey]:
    """Every Ed25519 public key in a keyring file: PEM blocks one after another (validators
    append the next key when they rotate); text outside the blocks is ignored."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise VerificationFailed("verify.bad_pubkey", f"cannot read keyring {path}: {exc}") from exc
    begin, end = "-----BEGIN PUBLIC KEY-----", "-----END PUBLIC KEY-----"
    keys = []
    for block in text.split(begin)[1:]:
        if end not in block:
            raise VerificationFailed("verify.bad_pubkey", f"{path}: a key block is not closed")
        pem = f"{begin}{block.split(end, 1)[0]}{end}\n".encode()
        try:
            key = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise VerificationFailed("verify.bad_pubkey", f"{path}: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise VerificationFailed("verify.bad_pubkey", f"{path} holds a key that is not Ed25519")
        keys.append(key)
    if not keys:
        raise VerificationFailed("verify.bad_pubkey", f"{path} holds no public key")
    return keys


def public_key_from_raw_b64(text: str) -> Ed25519PublicKey:
    """Rebuild a public key from the base64 raw form records carry."""
    try:
        return Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except ValueError as exc:
        raise VerificationFailed("verify.bad_pubkey", f"malformed public key: {exc}") from exc


def sign(payload_type: str, payload: bytes, key: Ed25519PrivateKey) -> Signature:
    """Sign PAE(payload_type, payload); Ed25519 is deterministic, so equal input, equal output."""
    sig = key.sign(pae(payload_type, payload))
    return Signature(keyid=key_id(key.public_key()), sig=base64.b64encode(sig).decode("ascii"))


def verify_signature(
    payload_type: str, payload: bytes, signature: Signature, key: Ed25519PublicKey
) -> None:
    """Raise VerificationFailed unless `signature` is `key`'s over PAE(payload_type, payload)."""
    if signature.alg != ALG:
        raise VerificationFailed("verify.bad_alg", f"unsupported algorithm {signature.alg!r}")
    if signature.keyid != key_id(key):
        raise VerificationFailed(
            "verify.wrong_key",
            f"signed by key {signature.keyid[:16]}…, not by the given key {key_id(key)[:16]}…",
        )
    try:
        raw = base64.b64decode(signature.sig, validate=True)
        key.verify(raw, pae(payload_type, payload))
    except (ValueError, InvalidSignature) as exc:
        raise VerificationFailed(
            "verify.bad_signature",
            "the signature does not match the record: it was altered after signing",
        ) from exc
