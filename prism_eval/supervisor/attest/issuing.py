"""Supervisor: turn a finished evaluation into the signed record, and write `--out` files.

The record is serialized once into canonical bytes (RFC 8785), wrapped as an in-toto
statement and signed under DSSE's PAE; the printed document is canonical JSON too.
"""

from __future__ import annotations

import base64
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import rfc8785
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from prism_eval.errors import EvaluatorError
from prism_eval.supervisor.attest.record import (
    PAYLOAD_TYPE,
    Record,
    SignedRecord,
    Signer,
    record_to_json,
    statement_bytes,
)
from prism_eval.supervisor.attest.signing import (
    KEY_ENV,
    key_id,
    load_signing_key,
    public_key_raw,
    sign,
)
from prism_eval.supervisor.formula import BatchFigures

SECRET_KEY_PATH = Path("/run/secrets/prism_eval_signing_key")
STREAM_SCHEMA = "prism-eval.stream/v1"


@dataclass(frozen=True)
class SigningIdentity:
    """The key that signs, and whether it was supplied or made for this run."""

    key: Ed25519PrivateKey
    mode: Literal["key", "ephemeral"]

    def signer(self) -> Signer:
        """The record's description of this key."""
        public = self.key.public_key()
        return Signer(
            mode=self.mode,
            keyid=key_id(public),
            public_key=base64.b64encode(public_key_raw(public)).decode("ascii"),
        )


def resolve_signing_key(key_path: Path | None, environ: dict[str, str]) -> SigningIdentity:
    """--key FILE, else $PRISM_EVAL_SIGNING_KEY (a path), else the container secret, else an
    ephemeral key (the record then says so: it proves integrity, not who signed)."""
    if key_path is None and environ.get(KEY_ENV):
        key_path = Path(environ[KEY_ENV])
    if key_path is None and SECRET_KEY_PATH.is_file():
        key_path = SECRET_KEY_PATH
    if key_path is None:
        return SigningIdentity(Ed25519PrivateKey.generate(), "ephemeral")
    return SigningIdentity(load_signing_key(key_path), "key")


def sign_record(record: Record, identity: SigningIdentity) -> SignedRecord:
    """Sign the record's statement and wrap record + signature."""
    payload = statement_bytes(record_to_json(record))
    return SignedRecord(record=record, signatures=[sign(PAYLOAD_TYPE, payload, identity.key)])


def signed_record_json(signed: SignedRecord) -> dict[str, Any]:
    """The printed document as JSON data."""
    return signed.model_dump(mode="json", by_alias=True)


def signed_record_bytes(signed: SignedRecord) -> bytes:
    """The printed document: canonical JSON, one line."""
    return bytes(rfc8785.dumps(signed_record_json(signed)))


def write_outputs(
    out_dir: Path,
    signed: SignedRecord,
    figures: list[BatchFigures],
    final_weights: Path | None,
) -> None:
    """Write record.json, stream.json and (when there is one) final.safetensors to out_dir."""
    stream = {
        "schema": STREAM_SCHEMA,
        "bundle_sha256": signed.record.subject.bundle_sha256,
        "batches": [[f.nats, f.tokens, f.bytes] for f in figures],
    }
    try:
        prepare_out_dir(out_dir)
        (out_dir / "record.json").write_bytes(signed_record_bytes(signed) + b"\n")
        (out_dir / "stream.json").write_bytes(bytes(rfc8785.dumps(stream)) + b"\n")
        if final_weights is not None and final_weights.is_file() and not final_weights.is_symlink():
            shutil.copyfile(final_weights, out_dir / "final.safetensors")
    except OSError as exc:
        raise _unwritable(out_dir, exc) from exc


UNWRITABLE_OUTPUT = "output.unwritable"


def _unwritable(out_dir: Path, exc: OSError) -> EvaluatorError:
    return EvaluatorError(
        UNWRITABLE_OUTPUT,
        f"cannot write the outputs to {out_dir}: {exc.strerror or exc}",
        hint="pass --out a directory you can write (it is created when missing)",
    )


def prepare_out_dir(out_dir: Path) -> None:
    """Create --out and check it is writable, before an evaluation spends any time."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unwritable(out_dir, exc) from exc
    if not os.access(out_dir, os.W_OK | os.X_OK):
        raise _unwritable(out_dir, PermissionError(13, "not writable"))
