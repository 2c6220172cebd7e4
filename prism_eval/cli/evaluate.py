"""Supervisor: the validator's commands — run (evaluate a bundle), review, doctor."""

from __future__ import annotations

import os
import sys
from datetime import datetime
from pathlib import Path

import click

from prism_eval.cli._base import default_data_dir, emit, handles_errors, main, utc_iso, write_out
from prism_eval.cli._options import config_options, inputs_options, profile_option
from prism_eval.errors import EXIT_CODES
from prism_eval.supervisor import MAX_RANKS


def _check_nproc(ctx: click.Context, param: click.Parameter, value: int | None) -> int | None:
    if value is not None and not 1 <= value <= MAX_RANKS:
        raise click.BadParameter(
            f"{value} ranks: prism-eval runs 1 to {MAX_RANKS} ranks, on this node only "
            "(several nodes are not supported)"
        )
    return value


@main.command()
@click.argument("bundle", type=click.Path(path_type=Path))
@inputs_options()
@click.option("--key", "key_path", type=click.Path(path_type=Path), help="Ed25519 signing key.")
@click.option("--out", "out_dir", type=click.Path(path_type=Path), help="Also write files here.")
@config_options
@click.option("--byte-budget", type=click.IntRange(min=1), help="Bytes of text to score.")
@click.option("--seed", type=click.IntRange(min=0), help="The forced seed.")
@click.option("--timeout", "timeout_s", type=click.FloatRange(min=1), help="Train wall cap (s).")
@click.option("--threads", type=click.IntRange(min=0), help="torch threads in workers.")
@click.option("--nproc", type=int, callback=_check_nproc,
              help="Also run train(ctx) as N ranks (1-8, this node only; gloo on CPU) after "
              "the audit; the score stays single-rank.")  # fmt: skip
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
    from prism_eval.supervisor import (
        RunRequest,
        evaluate,
        load_request_config,
        signed_record_bytes,
        sigterm_interrupts,
    )

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
        submitted_at=utc_iso(submitted_at),
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
@config_options
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
    from prism_eval.supervisor import DECISION_EXIT_CODES, load_config, signed_verdict_bytes
    from prism_eval.supervisor.review.client import review_bundle

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
        write_out(out_path, document)
        emit({"decision": verdict.decision, "out": str(out_path), "model": verdict.model,
               "bundle_sha256": verdict.bundle_sha256, "reasons": verdict.reasons})  # fmt: skip
    sys.exit(DECISION_EXIT_CODES[verdict.decision])


@main.command()
@profile_option
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
    from prism_eval.supervisor import diagnose, load_config, render_diagnosis

    report = diagnose(load_config(profile), default_data_dir())
    if as_json:
        emit(report.model_dump(mode="json"))
    else:
        click.echo(render_diagnosis(report), nl=False)
    if not all(check.ok or check.optional for check in report.checks):
        sys.exit(5)
