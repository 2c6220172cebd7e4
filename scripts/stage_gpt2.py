"""Supervisor: stage the GPT-2 BPE ranks file so the `gpt2` tokenizer works fully offline.

The ranks (`gpt2.tiktoken`, identical to tiktoken's `r50k_base`) ship inside the openai-whisper
source distribution on PyPI, so the only registry needed is PyPI. The file is written to
`<prefix>/share/prism-eval/tokenizers/gpt2.tiktoken`, where
`prism_eval.supervisor.data.tokenizers` looks by default, and its sha256 is checked before it
is written.

    python scripts/stage_gpt2.py --prefix .venv
    python scripts/stage_gpt2.py --from-sdist openai_whisper-20250625.tar.gz
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

GPT2_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
WHISPER_REQUIREMENT = "openai-whisper==20250625"
MEMBER_SUFFIX = "/whisper/assets/gpt2.tiktoken"
MAX_MEMBER_BYTES = 8 * 2**20


class StageError(Exception):
    """Staging failed; the message says why."""


def log(message: str) -> None:
    """Print one progress line to stderr."""
    print(f"stage_gpt2: {message}", file=sys.stderr, flush=True)


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    with path.open("rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def download_sdist(directory: Path) -> Path:
    """Download the pinned openai-whisper sdist from PyPI into `directory` and return its path."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--quiet",
        "--no-deps",
        "--no-binary",
        ":all:",
        WHISPER_REQUIREMENT,
        "-d",
        str(directory),
    ]
    log(f"downloading {WHISPER_REQUIREMENT} sdist with pip")
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise StageError(f"pip download failed (exit {result.returncode}): {' '.join(command)}")
    archives = sorted(directory.glob("*.tar.gz"))
    if len(archives) != 1:
        raise StageError(f"expected one sdist in {directory}, found {[a.name for a in archives]}")
    return archives[0]


def extract_ranks(sdist: Path) -> bytes:
    """Read `whisper/assets/gpt2.tiktoken` out of the sdist without extracting anything else."""
    log(f"reading gpt2.tiktoken from {sdist}")
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            for member in archive:
                if member.name.endswith(MEMBER_SUFFIX) and member.isfile():
                    if member.size > MAX_MEMBER_BYTES:
                        raise StageError(f"{member.name} is {member.size} bytes: too large")
                    handle = archive.extractfile(member)
                    if handle is None:
                        raise StageError(f"cannot read {member.name} in {sdist}")
                    return handle.read()
    except (OSError, tarfile.TarError) as exc:
        raise StageError(f"cannot read {sdist}: {exc}") from exc
    raise StageError(f"{sdist} has no member ending in {MEMBER_SUFFIX}")


def write_atomically(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file in the same directory and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def stage(prefix: Path, from_sdist: Path | None) -> Path:
    """Make sure `<prefix>/share/prism-eval/tokenizers/gpt2.tiktoken` holds the verified ranks."""
    target = prefix / "share" / "prism-eval" / "tokenizers" / "gpt2.tiktoken"
    if target.is_file() and sha256_file(target) == GPT2_SHA256:
        log(f"{target} already staged (sha256 ok)")
        return target
    if from_sdist is not None:
        data = extract_ranks(from_sdist)
    else:
        with tempfile.TemporaryDirectory(prefix="stage-gpt2-") as tmp:
            data = extract_ranks(download_sdist(Path(tmp)))
    actual = hashlib.sha256(data).hexdigest()
    if actual != GPT2_SHA256:
        raise StageError(f"gpt2.tiktoken sha256 is {actual}, expected {GPT2_SHA256}")
    write_atomically(target, data)
    log(f"wrote {target} ({len(data)} bytes, sha256 ok)")
    return target


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, stage the file, and return the process exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prefix", type=Path, default=Path(sys.prefix), help="install prefix")
    parser.add_argument(
        "--from-sdist", type=Path, default=None, help="use this openai-whisper sdist (no download)"
    )
    args = parser.parse_args(argv)
    try:
        stage(args.prefix, args.from_sdist)
    except StageError as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
