"""Supervisor: setting a validator up — signing keys, and locked data directories."""

from __future__ import annotations

from pathlib import Path

import click

from prism_eval.cli._base import emit, handles_errors, main


@main.command()
@click.option("--out", "prefix", required=True, type=click.Path(path_type=Path),
              help="Writes PREFIX.key (0600) and PREFIX.pub.")  # fmt: skip
@handles_errors
def keygen(prefix: Path) -> None:
    """Create an Ed25519 signing key pair for records.

    \b
    Example:
      prism-eval keygen --out validator     # validator.key, validator.pub
    """
    from prism_eval.supervisor import generate_keypair

    key_path, pub_path = generate_keypair(prefix)
    emit({"key": str(key_path), "pubkey": str(pub_path)})


@main.group()
def data() -> None:
    """Build and check locked data directories (MANIFEST.json + JSONL shards).

    \b
    Examples:
      prism-eval data prepare fineweb/*.parquet --out data/
      prism-eval data verify data/
      prism-eval run bundle.zip --data data/
    """


@data.command("prepare")
@click.argument("sources", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(path_type=Path))
@handles_errors
def data_prepare(sources: tuple[Path, ...], out_dir: Path) -> None:
    """Build a locked data dir from JSONL, Parquet (a `text` column) or text files.

    Documents are split by sha256(id) mod 1000: train 0-949, val 950-974, test 975-999.

    \b
    Example:
      prism-eval data prepare fineweb/*.parquet --out data/
    """
    from prism_eval.supervisor import prepare_data

    manifest = prepare_data(list(sources), out_dir)
    emit(manifest.model_dump(mode="json", by_alias=True))


@data.command("verify")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@handles_errors
def data_verify(data_dir: Path) -> None:
    """Check every shard of DATA_DIR against its MANIFEST.json (sha256 and size).

    \b
    Example:
      prism-eval data verify examples/data
    """
    from prism_eval.supervisor import manifest_sha256, verify_data_dir

    manifest = verify_data_dir(data_dir)
    emit({"verified": True, "manifest_sha256": manifest_sha256(data_dir),
           "digest": manifest.digest})  # fmt: skip


@data.command("lock")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@handles_errors
def data_lock(data_dir: Path) -> None:
    """Write MANIFEST.json for an existing <split>/*.jsonl layout (the reference layout).

    \b
    Example:
      prism-eval data lock my-data/     # my-data/train/*.jsonl, my-data/test/*.jsonl
    """
    from prism_eval.supervisor import lock_data_dir

    manifest = lock_data_dir(data_dir)
    emit(manifest.model_dump(mode="json", by_alias=True))
