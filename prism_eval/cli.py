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
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from prism_eval import __version__
from prism_eval.errors import EXIT_CODES, EvaluatorError, PrismError
from prism_eval.supervisor.config import MAX_RANKS

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
            for line in exc.evidence:
                click.echo(f"  {line}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def trust_options(function: F) -> F:
    """--pubkey, --keyring and --any-signer: whose signatures a command accepts. Without a
    trusted key the command refuses (verify.no_trusted_key) unless --any-signer is given."""
    options = [
        click.option("--pubkey", "pubkeys", multiple=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="A trusted signer's public key (repeatable)."),
        click.option("--keyring", "keyrings", multiple=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="A file of trusted public keys, PEM blocks one after another "
                     "(repeatable)."),
        click.option("--any-signer", is_flag=True,
                     help="Accept the key the record names: integrity only, not identity "
                     "(the output says identity: unverified)."),
    ]  # fmt: skip
    for option in reversed(options):
        function = option(function)
    return function


def _trust(pubkeys: tuple[Path, ...], keyrings: tuple[Path, ...], any_signer: bool) -> Any:
    from prism_eval.supervisor.attest.verify import TrustedKeys

    return TrustedKeys.from_files(pubkeys, keyrings, any_signer)


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


def _utc_iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_nproc(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_RANKS:
        raise click.BadParameter(
            f"{value} ranks: prism-eval runs 1 to {MAX_RANKS} ranks, on this node only "
            "(several nodes are not supported)"
        )
    return value


def _write_out(path: Path, data: bytes) -> None:
    """Write an output file; one that cannot be written is the operator's error (exit 5)."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise EvaluatorError(
            "output.unwritable", f"cannot write {path}: {exc.strerror or exc}"
        ) from exc


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
@click.option("--nproc", type=int, callback=_check_nproc,
              help="Also run train(ctx) as N ranks (1-8, this node only; gloo on CPU) after "
              "the audit; the score stays single-rank.")  # fmt: skip
@click.option("--review-verdict", "review_verdict", type=click.Path(path_type=Path),
              help="Signed verdict from `prism-eval review`.")  # fmt: skip
@click.option("--reviewer-key", "reviewer_keys", multiple=True, type=click.Path(path_type=Path),
              help="Trusted reviewer public key (repeatable).")  # fmt: skip
@click.option("--submitter", help="Who submitted the bundle (kept in the record; leaderboard).")
@click.option(
    "--submitted-at",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
    help="When it was submitted (ISO 8601; UTC if no zone).",
)
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
    nproc: int | None,
    review_verdict: Path | None,
    reviewer_keys: tuple[Path, ...],
    submitter: str | None,
    submitted_at: datetime | None,
) -> None:
    """Evaluate BUNDLE (a .zip or a directory) and print the signed score record.

    BUNDLE may be `-`: a zip read from standard input (`prism-eval run - < bundle.zip`).

    The record is printed for every outcome; the exit code mirrors its status: 0 scored,
    3 rejected, 4 failed, 5 error. Without --key (or $PRISM_EVAL_SIGNING_KEY) an ephemeral
    key signs and the record says so. A --review-verdict is verified offline against the
    --reviewer-key keys under every review policy; never any network access.

    With --nproc N (2 to 8), train(ctx) also runs as N ranks on this node after the audit:
    ctx.rank and ctx.world_size are set, torchrun's variables too, so
    `torch.distributed.init_process_group("gloo")` works; every rank must end with the same
    weights and only rank 0 may write to ctx.artifacts_dir.

    \b
    Example:
      prism-eval run examples/bundles/ok_tiny_transformer --byte-budget 65536 --out out/
      prism-eval run - < bundle.zip
      prism-eval run examples/bundles/ok_tiny_transformer --nproc 2
      prism-eval run bundle.zip --profile official --review-verdict verdict.json \\
          --reviewer-key reviewer.pub
    """
    from prism_eval.supervisor.attest.issuing import signed_record_bytes
    from prism_eval.supervisor.evaluation import evaluate
    from prism_eval.supervisor.interrupts import sigterm_interrupts
    from prism_eval.supervisor.pipeline import RunRequest, load_request_config

    config, config_error = load_request_config(
        profile,
        config_file,
        {
            "byte_budget": byte_budget,
            "seed": seed,
            "train_timeout_s": timeout_s,
            "threads": threads,
            "nproc": nproc,
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
        review_verdict=review_verdict,
        reviewer_keys=reviewer_keys,
        submitter=submitter,
        submitted_at=_utc_iso(submitted_at),
    )
    with sigterm_interrupts():  # a SIGTERM ends the run in a record too (run.interrupted)
        signed = evaluate(request, dict(os.environ))
    sys.stdout.buffer.write(signed_record_bytes(signed) + b"\n")
    sys.stdout.flush()
    sys.exit(EXIT_CODES[signed.record.status])


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@click.option("--model", help="Model id to ask (default: the config's review_model).")
@click.option("--endpoint", help="OpenAI-compatible chat-completions URL.")
@click.option("--key", "key_path", type=click.Path(path_type=Path), help="Reviewer signing key.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the verdict here instead of stdout.")  # fmt: skip
@click.option("--api-key-file", type=click.Path(dir_okay=False, path_type=Path),
              help="File holding the API key (else $PRISM_EVAL_REVIEW_API_KEY).")  # fmt: skip
@click.option("--profile", default="cpu", show_default=True, help="cpu or official.")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML overlay.")
@handles_errors
def review(
    bundle: Path,
    model: str | None,
    endpoint: str | None,
    key_path: Path | None,
    out_path: Path | None,
    api_key_file: Path | None,
    profile: str,
    config_file: Path | None,
) -> None:
    """Have an LLM review BUNDLE once (needs network) and write a signed verdict for `run`.

    Sends every bundle file, whole, to an OpenAI-compatible chat API (OpenRouter by default,
    temperature 0, a JSON verdict schema). The API key comes from --api-key-file,
    $PRISM_EVAL_REVIEW_API_KEY, $OPENROUTER_API_KEY or /run/secrets/prism_eval_review_api_key,
    never from the command line. Any error, timeout or unusable answer gives `held`, never
    `allow`. Exit 0 allow, 3 reject, 5 held or error. With --out, stdout gets a summary.

    \b
    Example:
      prism-eval keygen --out reviewer
      prism-eval review bundle.zip --key reviewer.key --out verdict.json
      prism-eval run bundle.zip --review-verdict verdict.json --reviewer-key reviewer.pub
    """
    from prism_eval.supervisor.config import load_config
    from prism_eval.supervisor.review.client import review_bundle
    from prism_eval.supervisor.review.verdict import DECISION_EXIT_CODES, signed_verdict_bytes

    config = load_config(profile, config_file, {"review_model": model, "review_endpoint": endpoint})
    signed = review_bundle(
        bundle, config, key_path=key_path, api_key_file=api_key_file, environ=dict(os.environ)
    )
    document = signed_verdict_bytes(signed) + b"\n"
    verdict = signed.verdict
    if out_path is None:
        sys.stdout.buffer.write(document)
        sys.stdout.flush()
    else:
        _write_out(out_path, document)
        _emit({"decision": verdict.decision, "out": str(out_path), "model": verdict.model,
               "bundle_sha256": verdict.bundle_sha256, "reasons": verdict.reasons})  # fmt: skip
    sys.exit(DECISION_EXIT_CODES[verdict.decision])


@main.command()
@click.argument("record", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@trust_options
@click.option(
    "--stream",
    "stream_path",
    type=click.Path(exists=True, path_type=Path),
    help="stream.json from `run --out`, to recheck the stream digest.",
)
@click.option("--reproduce", is_flag=True, help="Evaluate again and compare the core.")
@click.option(
    "--bundle",
    type=click.Path(exists=True, path_type=Path),
    help="With --reproduce: the bundle the record is about.",
)
@click.option(
    "--data",
    "data_dir",
    type=click.Path(path_type=Path),
    help="With --reproduce: the locked data (default: the embedded data).",
)
@click.option(
    "--heldout",
    "heldout_dir",
    type=click.Path(path_type=Path),
    help="With --reproduce: the held-out data, if the record used some.",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="With --reproduce: relative tolerance on loss figures (0: bit-identical).",
)
@click.option(
    "--review-verdict",
    type=click.Path(exists=True, path_type=Path),
    help="With --reproduce: the verdict the recorded run was given.",
)
@click.option(
    "--reviewer-key",
    "reviewer_keys",
    multiple=True,
    type=click.Path(exists=True, path_type=Path),
    help="With --reproduce: trusted reviewer public key (repeatable).",
)
@handles_errors
def verify(
    record: Path,
    pubkeys: tuple[Path, ...],
    keyrings: tuple[Path, ...],
    any_signer: bool,
    stream_path: Path | None,
    reproduce: bool,
    bundle: Path | None,
    data_dir: Path | None,
    heldout_dir: Path | None,
    tolerance: float,
    review_verdict: Path | None,
    reviewer_keys: tuple[Path, ...],
) -> None:
    """Verify RECORD: signature by a trusted key, schema, and that its score recomputes from its
    figures.

    The signer must be one of the --pubkey / --keyring keys; without any, verify refuses (exit
    1, verify.no_trusted_key) unless --any-signer asks for integrity only, checked against the
    key the record names (the output then says "identity": "unverified").

    With --reproduce the evaluation runs again under the record's config and seed, and the
    reproducible core (subject, inputs, run, stream, audit, score) must match: bit for bit on
    the same stack (tolerance 0), or within --tolerance across hardware (1e-3 is a reasonable
    bound there: kernels differ in the last bits and training amplifies it). A mismatch lists
    each field with both values and, with --stream, the first diverging batch. Exit 0 when it
    verifies (and reproduces), 1 when it does not.

    \b
    Examples:
      prism-eval verify out/record.json --pubkey validator.pub --stream out/stream.json
      prism-eval verify record.json --keyring validators.pem --reproduce --bundle bundle.zip
      prism-eval verify record.json --any-signer      # integrity only
    """  # fmt: skip
    from prism_eval.supervisor.attest.verify import verify_record

    trust = _trust(pubkeys, keyrings, any_signer)
    verified = verify_record(record.read_bytes(), trust, stream_path)
    if reproduce:
        from prism_eval.supervisor.reproduce import reproduce as run_again

        if bundle is None:
            raise click.UsageError("--reproduce needs --bundle")
        run_again(
            verified.record,
            bundle=bundle,
            data_dir=data_dir or default_data_dir(),
            heldout_dir=heldout_dir,
            tolerance=tolerance,
            recorded_stream=stream_path,
            review_verdict=review_verdict,
            reviewer_keys=reviewer_keys,
        )
    if not verified.pinned:
        click.echo("prism-eval: integrity only: signed by the key the record names, which no "
                   "trusted key vouches for", err=True)  # fmt: skip
    score = verified.record.score
    _emit(
        {
            "verified": True,
            "identity": verified.identity,
            "status": verified.record.status,
            "bundle_sha256": verified.record.subject.bundle_sha256,
            "bpb": score.bpb if score else None,
            "final_score": score.final_score if score else None,
            "keyid": verified.record.signer.keyid,
            "reproduced": reproduce,
        }
    )


@main.command()
@click.argument("record", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--dsse", is_flag=True, required=True, help="Export as a DSSE envelope.")
@handles_errors
def export(record: Path, dsse: bool) -> None:
    """Re-encode RECORD as a DSSE envelope (in-toto Statement v1), without the private key.

    The record's signature already covers the statement, so attestation tooling verifies
    the envelope with the signer's public key.

    \b
    Example:
      prism-eval export --dsse out/record.json > record.dsse.json
    """
    from prism_eval.supervisor.attest.dsse import export_envelope

    _emit(export_envelope(record.read_bytes()))


@main.command()
@click.argument("record", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--out", "out_path", type=click.Path(path_type=Path), default="report.html",
              show_default=True, help="Where to write the page.")  # fmt: skip
@trust_options
@handles_errors
def report(
    record: Path,
    out_path: Path,
    pubkeys: tuple[Path, ...],
    keyrings: tuple[Path, ...],
    any_signer: bool,
) -> None:
    """Write a self-contained HTML page for RECORD: status, stages, learning curve, audit.

    The record is verified first; the page says whether the signer's key was pinned.

    \b
    Example:
      prism-eval report out/record.json --out report.html --pubkey validator.pub
    """
    from prism_eval.supervisor.attest.verify import verify_record
    from prism_eval.supervisor.present.report import render_report

    trust = _trust(pubkeys, keyrings, any_signer)
    _write_out(out_path, render_report(verify_record(record.read_bytes(), trust)).encode())
    _emit({"report": str(out_path)})


@main.command()
@click.argument("records", nargs=-1, required=True,
                type=click.Path(exists=True, dir_okay=False, path_type=Path))  # fmt: skip
@trust_options
@click.option("--weights", "scheme", flag_value="winner", default=None,
              help="Print dry-run weights: everything to the winner.")  # fmt: skip
@click.option("--proportional-weights", "scheme", flag_value="proportional",
              help="Print dry-run weights proportional to final scores.")  # fmt: skip
@handles_errors
def leaderboard(
    records: tuple[Path, ...],
    pubkeys: tuple[Path, ...],
    keyrings: tuple[Path, ...],
    any_signer: bool,
    scheme: str | None,
) -> None:
    """Rank RECORDS: verify each, keep each submitter's best, order by final score.

    Only records signed by a --pubkey / --keyring key rank; without any trusted key it refuses
    (exit 1, verify.no_trusted_key) unless --any-signer ranks every intact record (the output
    then says "identity": "unverified").

    Ties within 1e-9 go to the earliest submission, then the lower bundle digest (the
    reference challenge's tie-break). Records that fail verification or were not scored are
    listed under "excluded" with the reason.

    \b
    Example:
      prism-eval leaderboard records/*.json --pubkey validator.pub --weights
    """
    from prism_eval.supervisor.present.leaderboard import WeightScheme, build_leaderboard

    weighing: WeightScheme = "proportional" if scheme == "proportional" else "winner"
    trust = _trust(pubkeys, keyrings, any_signer)
    if not trust.keys and not trust.any_signer:
        from prism_eval.errors import VerificationFailed

        raise VerificationFailed(
            "verify.no_trusted_key",
            "no trusted key to check who signed the records",
            hint="pass the validators' --pubkey (or a --keyring); --any-signer ranks every "
            "intact record, whoever signed it",
        )
    board = build_leaderboard(list(records), trust, weighing)
    document: dict[str, Any] = {
        "identity": "pinned" if trust.keys else "unverified",
        "ranking": [
            {
                "rank": rank,
                "submitter": entry.submitter,
                "final_score": entry.final_score,
                "bpb": entry.record.score.bpb if entry.record.score else None,
                "architecture_name": entry.record.subject.architecture_name,
                "compressed_bytes": entry.record.subject.compressed_bytes,
                "bundle_sha256": entry.record.subject.bundle_sha256,
                "submitted_at": entry.record.subject.submitted_at,
                "record": entry.path,
            }
            for rank, entry in enumerate(board.ranking, start=1)
        ],
        "excluded": [{"record": path, "reason": why} for path, why in board.excluded],
    }
    if scheme is not None:
        document["weights"] = board.weights
    _emit(document)


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
    from prism_eval.supervisor.attest.signing import generate_keypair

    key_path, pub_path = generate_keypair(prefix)
    _emit({"key": str(key_path), "pubkey": str(pub_path)})


@main.command()
def schema() -> None:
    """Print the JSON Schema of the printed record document."""
    from prism_eval.supervisor.attest.record import SignedRecord

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
    from prism_eval.supervisor.config import load_config
    from prism_eval.supervisor.doctor import diagnose, render

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
    from prism_eval.supervisor.data.prepare import prepare_data

    manifest = prepare_data(list(sources), out_dir)
    _emit(manifest.model_dump(mode="json", by_alias=True))


@data.command("verify")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@handles_errors
def data_verify(data_dir: Path) -> None:
    """Check every shard of DATA_DIR against its MANIFEST.json (sha256 and size)."""
    from prism_eval.supervisor.data.locked import manifest_sha256, verify_data_dir

    manifest = verify_data_dir(data_dir)
    _emit({"verified": True, "manifest_sha256": manifest_sha256(data_dir),
           "digest": manifest.digest})  # fmt: skip


@data.command("lock")
@click.argument("data_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@handles_errors
def data_lock(data_dir: Path) -> None:
    """Write MANIFEST.json for an existing <split>/*.jsonl layout (the reference layout)."""
    from prism_eval.supervisor.data.prepare import lock_data_dir

    manifest = lock_data_dir(data_dir)
    _emit(manifest.model_dump(mode="json", by_alias=True))
