"""Supervisor: the `prism-eval` command line. Click only: parse, call the library, render.

stdout carries exactly one JSON document per command that has a result; logs and progress go
to stderr. Exit codes: 0 scored/ok, 1 verification failed, 2 usage, 3 rejected, 4 failed,
5 error.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from prism_eval import __version__
from prism_eval.errors import EXIT_CODES, PrismError

F = TypeVar("F", bound=Callable[..., Any])


def _emit(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=None, sort_keys=True) + "\n")
    sys.stdout.flush()


def handles_errors(function: F) -> F:
    """Turn a PrismError into its hint on stderr and its exit code; --debug shows tracebacks."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except PrismError as exc:
            if os.environ.get("PRISM_EVAL_DEBUG"):
                traceback.print_exc()
            click.echo(f"prism-eval: {exc}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="prism-eval")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def main(debug: bool) -> None:
    """prism-eval: score a PRISM bundle into a signed, reproducible record.

    \b
    Typical use:
      prism-eval run bundle.zip > record.json        # evaluate (embedded data by default)
      prism-eval verify record.json --pubkey v.pub   # check a record
      prism-eval doctor                              # what this host can do
    """
    if debug:
        os.environ["PRISM_EVAL_DEBUG"] = "1"


def default_data_dir() -> Path:
    """$PRISM_EVAL_DATA, else the checkout's examples/data, else the installed copy."""
    if os.environ.get("PRISM_EVAL_DATA"):
        return Path(os.environ["PRISM_EVAL_DATA"])
    checkout = Path(__file__).resolve().parents[1] / "examples" / "data"
    if (checkout / "MANIFEST.json").is_file():
        return checkout
    return Path(sys.prefix) / "share" / "prism-eval" / "data"


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--data", "data_dir", type=click.Path(path_type=Path), help="Locked data dir.")
@click.option("--heldout", "heldout_dir", type=click.Path(path_type=Path), help="Held-out dir.")
@click.option("--key", "key_path", type=click.Path(path_type=Path), help="Ed25519 signing key.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Also write files here.")
@click.option("--profile", default="cpu", show_default=True, help="cpu or official.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML overlay.")
@click.option("--byte-budget", type=click.IntRange(min=1), help="Bytes of text to score.")
@click.option("--seed", type=click.IntRange(min=0), help="The forced seed.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), help="Train wall cap (s).")
@click.option("--threads", type=click.IntRange(min=0), help="torch threads in workers.")
@handles_errors
def run(
    bundle: Path,
    data_dir: Path | None,
    heldout_dir: Path | None,
    key_path: Path | None,
    out_dir: Path | None,
    profile: str,
    config_file: Path | None,
    byte_budget: int | None,
    seed: int | None,
    timeout_s: float | None,
    threads: int | None,
) -> None:
    """Evaluate BUNDLE (a .zip or a directory) and print the signed score record.

    The record is printed for every outcome; the exit code mirrors its status: 0 scored,
    3 rejected, 4 failed, 5 error. Without --key (or $PRISM_EVAL_SIGNING_KEY) an ephemeral
    key signs and the record says so.

    \b
    Example:
      prism-eval run examples/bundles/ok_tiny_transformer --byte-budget 65536 --out out/
    """
    from prism_eval.attest import signed_record_bytes
    from prism_eval.evaluation import evaluate
    from prism_eval.pipeline import RunRequest, load_request_config

    config, config_error = load_request_config(
        profile,
        config_file,
        {
            "byte_budget": byte_budget,
            "seed": seed,
            "train_timeout_s": timeout_s,
            "threads": threads,
        },
    )
    request = RunRequest(
        bundle=bundle,
        data_dir=data_dir or default_data_dir(),
        config=config,
        config_error=config_error,
        heldout_dir=heldout_dir,
        key_path=key_path,
        out_dir=out_dir,
    )
    signed = evaluate(request, dict(os.environ))
    sys.stdout.buffer.write(signed_record_bytes(signed) + b"\n")
    sys.stdout.flush()
    sys.exit(EXIT_CODES[signed.record.status])


@main.command()
@click.argument("record", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--pubkey", type=click.Path(exists=True, path_type=Path), help="Signer's key.")
@click.option("--stream", "stream_path", type=click.Path(exists=True, path_type=Path),
              help="stream.json from `run --out`, to recheck the stream digest.")  # fmt: skip
@handles_errors
def verify(record: Path, pubkey: Path | None, stream_path: Path | None) -> None:
    """Verify RECORD: schema, signature, and that its score recomputes from its figures.

    Without --pubkey the signature is checked against the key the record names, which shows
    integrity but not who signed. Exit 0 when it verifies, 1 when it does not.

    \b
    Example:
      prism-eval verify out/record.json --pubkey validator.pub --stream out/stream.json
    """
    from prism_eval.verify import verify_record

    verified = verify_record(record.read_bytes(), pubkey, stream_path)
    if not verified.pinned:
        click.echo("prism-eval: signature checked against the record's own key; pass --pubkey "
                   "to check who signed", err=True)  # fmt: skip
    score = verified.record.score
    _emit(
        {
            "verified": True,
            "pinned_key": verified.pinned,
            "status": verified.record.status,
            "bundle_sha256": verified.record.subject.bundle_sha256,
            "bpb": score.bpb if score else None,
            "final_score": score.final_score if score else None,
            "keyid": verified.record.signer.keyid,
        }
    )


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
    from prism_eval.signing import generate_keypair

    key_path, pub_path = generate_keypair(prefix)
    _emit({"key": str(key_path), "pubkey": str(pub_path)})


@main.command()
def schema() -> None:
    """Print the JSON Schema of the printed record document."""
    from prism_eval.record import SignedRecord

    _emit(SignedRecord.model_json_schema(by_alias=True))


@main.command()
@click.option("--profile", default="cpu", show_default=True, help="cpu or official.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@handles_errors
def doctor(profile: str, as_json: bool) -> None:
    """Check this host: tokenizers, default data, GPU, and every isolation layer.

    Exits 5 when something an evaluation needs is missing ("NO"); "--" marks optional
    things this host lacks (a GPU, the llama tokenizer).

    The isolation table comes from a real worker that applies each layer as an evaluation
    would, so it shows what a record produced here will say.

    \b
    Example:
      prism-eval doctor --profile official
    """
    from prism_eval.config import load_config
    from prism_eval.doctor import diagnose, render

    report = diagnose(load_config(profile), default_data_dir())
    if as_json:
        _emit(report.model_dump(mode="json"))
    else:
        click.echo(render(report), nl=False)
    if not all(check.ok or check.optional for check in report.checks):
        sys.exit(5)


@main.group()
def data() -> None:
    """Build and check locked data directories (MANIFEST.json + JSONL shards)."""


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
    from prism_eval.data_prepare import prepare_data

    manifest = prepare_data(list(sources), out_dir)
    _emit(manifest.model_dump(mode="json", by_alias=True))


@data.command("verify")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@handles_errors
def data_verify(data_dir: Path) -> None:
    """Check every shard of DATA_DIR against its MANIFEST.json (sha256 and size)."""
    from prism_eval.data import manifest_sha256, verify_data_dir

    manifest = verify_data_dir(data_dir)
    _emit({"verified": True, "manifest_sha256": manifest_sha256(data_dir),
           "digest": manifest.digest})  # fmt: skip


@data.command("lock")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@handles_errors
def data_lock(data_dir: Path) -> None:
    """Write MANIFEST.json for an existing <split>/*.jsonl layout (the reference layout)."""
    from prism_eval.data_prepare import lock_data_dir

    manifest = lock_data_dir(data_dir)
    _emit(manifest.model_dump(mode="json", by_alias=True))
