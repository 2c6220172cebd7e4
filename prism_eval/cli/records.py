"""Supervisor: the auditor's commands — verify, export, report, leaderboard, schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from prism_eval.cli._base import default_data_dir, emit, handles_errors, main, write_out
from prism_eval.cli._options import inputs_options, trust_options
from prism_eval.errors import VerificationFailed
from prism_eval.supervisor import TrustedKeys


def _trust(pubkeys: tuple[Path, ...], keyrings: tuple[Path, ...], any_signer: bool) -> TrustedKeys:
    return TrustedKeys.from_files(pubkeys, keyrings, any_signer)


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
    "--tolerance",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="With --reproduce: relative tolerance on loss figures (0: bit-identical).",
)
@inputs_options(when="with --reproduce: ")
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
    from prism_eval.supervisor import verify_record

    trust = _trust(pubkeys, keyrings, any_signer)
    verified = verify_record(record.read_bytes(), trust, stream_path)
    if reproduce:
        from prism_eval.supervisor import reproduce_record

        if bundle is None:
            raise click.UsageError("--reproduce needs --bundle")
        reproduce_record(
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
    emit(
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
    from prism_eval.supervisor import export_envelope

    emit(export_envelope(record.read_bytes()))


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
    from prism_eval.supervisor import render_report, verify_record

    trust = _trust(pubkeys, keyrings, any_signer)
    write_out(out_path, render_report(verify_record(record.read_bytes(), trust)).encode())
    emit({"report": str(out_path)})


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
    from prism_eval.supervisor import WeightScheme, build_leaderboard

    weighing: WeightScheme = "proportional" if scheme == "proportional" else "winner"
    trust = _trust(pubkeys, keyrings, any_signer)
    if not trust.keys and not trust.any_signer:
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
    emit(document)


@main.command()
def schema() -> None:
    """Print the JSON Schema of the printed record document.

    \b
    Example:
      prism-eval schema > record.schema.json
    """
    from prism_eval.supervisor import SignedRecord

    emit(SignedRecord.model_json_schema(by_alias=True))
