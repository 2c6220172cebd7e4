"""Supervisor: stage the reference llama tokenizer — one pinned SentencePiece file, checked.

The reference challenge pins the non-gated `hf-internal-testing/llama-tokenizer` repository's
`tokenizer.model` at revision d02ad6cb9dd2c2296a6332199fa2fdca5938fef0. Download that file
(499,723 bytes) on a networked host, then stage it here; its sha256 is checked before it is
written, and prism-eval accepts no other file as `llama`:

    python scripts/stage_llama.py --from tokenizer.model --prefix .venv
    PRISM_EVAL_TOKENIZER_DIR=/srv/tokenizers python scripts/stage_llama.py --from tokenizer.model
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import tempfile
from pathlib import Path

LLAMA_SHA256 = "9e556afd44213b6bd1be2b850ebbbd98f5481437a8021afaf58ee7fb1818d347"
MAX_BYTES = 16 * 2**20


class StageError(Exception):
    """Staging failed; the message says why."""


def log(message: str) -> None:
    """Print one progress line to stderr."""
    print(f"stage_llama: {message}", file=sys.stderr, flush=True)


def target_dir(prefix: Path | None) -> Path:
    """`$PRISM_EVAL_TOKENIZER_DIR`, else `<prefix>/share/prism-eval/tokenizers`."""
    override = os.environ.get("PRISM_EVAL_TOKENIZER_DIR")
    if override:
        return Path(override)
    return (prefix or Path(sys.prefix)) / "share" / "prism-eval" / "tokenizers"


def stage(source: Path, directory: Path, expected_sha256: str = LLAMA_SHA256) -> Path:
    """Copy `source` to `directory/llama.model` if and only if its sha256 is the pinned one."""
    try:
        if source.stat().st_size > MAX_BYTES:
            raise StageError(f"{source} is {source.stat().st_size:,} bytes: not a tokenizer model")
        data = source.read_bytes()
    except OSError as exc:
        raise StageError(f"cannot read {source}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != expected_sha256:
        raise StageError(
            f"{source} has sha256 {actual}, not the reference llama tokenizer's "
            f"{expected_sha256}: download tokenizer.model from hf-internal-testing/llama-tokenizer "
            "at revision d02ad6cb9dd2c2296a6332199fa2fdca5938fef0"
        )
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "llama.model"
    fd, tmp_name = tempfile.mkstemp(prefix=".llama.model.", dir=directory)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, target)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise
    log(f"wrote {target} ({len(data):,} bytes, sha256 ok)")
    return target


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, stage the file, and return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--from", dest="source", type=Path, required=True,
                        help="the downloaded tokenizer.model")  # fmt: skip
    parser.add_argument("--prefix", type=Path, default=None, help="install prefix (.venv)")
    args = parser.parse_args(argv)
    try:
        stage(args.source, target_dir(args.prefix))
    except StageError as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
