"""Supervisor: one evaluation end to end — run the stages, assemble the record, sign it.

`evaluate` is the library entry point behind `prism-eval run`: it always returns a signed
record, whatever the outcome; the stages themselves live in pipeline.py.
"""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

from prism_eval import __version__
from prism_eval.errors import Status
from prism_eval.supervisor.attest import (
    UNWRITABLE_OUTPUT,
    Inputs,
    PrefixAudit,
    Reason,
    Record,
    ReviewSummary,
    RunFigures,
    SignedRecord,
    Signer,
    StageResult,
    StepTimes,
    StreamSummary,
    Subject,
    TokenizerRef,
    describe_environment,
    evaluator_identity,
    isolation_record,
    resolve_signing_key,
    sign_record,
    write_outputs,
)
from prism_eval.supervisor.formula import (
    catch_probabilities,
    learning_curve,
    stream_sha256,
    total_nats,
)
from prism_eval.supervisor.pipeline import Evaluation, RunRequest


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def review_summary(evaluation: Evaluation) -> ReviewSummary:
    """The record's review block: the policy always; the verdict once it verified."""
    verified = evaluation.review
    return ReviewSummary(
        policy=evaluation.config.review_policy,
        verdict_sha256=verified.sha256 if verified else None,
        decision=verified.verdict.decision if verified else None,
        reviewer_keyid=verified.keyid if verified else None,
        model=verified.verdict.model if verified else None,
    )


def build_record(
    evaluation: Evaluation, status: Status, reason: Reason, started_at: str, signer: Signer
) -> Record:
    """Assemble the record from what the stages established (no I/O)."""
    request, config = evaluation.request, evaluation.config
    bundle, train, contract = evaluation.bundle, evaluation.train, evaluation.contract
    # The stream's tokenizer: the bundle's, or bytes when train(ctx) asked for them.
    tokenizer = (train.tokenizer if train else None) or evaluation.tokenizer
    run = stream = prefix_audit = None
    if train is not None and train.figures:
        figures = train.figures
        run = RunFigures(
            batch_size=train.batch_size,
            seq_len=train.seq_len,
            batches=len(figures),
            tokens=sum(f.tokens for f in figures),
            bytes=sum(f.bytes for f in figures),
            documents=train.tally.documents,
            empty_documents=train.tally.empty_documents,
            stopped_by=train.tally.stopped_by or "data_exhausted",
            model_params=train.model_params,
            float_buffer_elements=train.float_buffer_elements,
            wall_seconds=round(train.wall_seconds, 3),
            first_batch_seconds=(
                None if train.first_batch_seconds is None else round(train.first_batch_seconds, 3)
            ),
            peak_memory_bytes=train.peak_memory_bytes,
            spot_checks=train.checks.spot_checks,
            step_ms=StepTimes(**train.step_ms) if train.step_ms else None,
        )
        checks = train.checks
        rate = checks.rate or config.prefix_audit_rate
        spread, steps = catch_probabilities(checks.audited_positions, rate, len(figures))
        prefix_audit = PrefixAudit(
            rate=rate,
            tolerance_nats=config.prefix_audit_tolerance_nats,
            steps=checks.audited_steps,
            positions=checks.audited_positions,
            max_diff_nats=checks.max_diff_nats,
            catch_spread_1pct=spread,
            catch_steps_1pct=steps,
        )
        stream = StreamSummary(
            sha256=stream_sha256(figures),
            batches=len(figures),
            nats=total_nats(figures),
            tokens=run.tokens,
            bytes=run.bytes,
            curve=learning_curve(figures, config.curve_points),
        )
    return Record(
        status=status,
        reason=reason,
        subject=Subject(
            bundle_sha256=bundle.sha256 if bundle else None,
            files=list(bundle.files) if bundle else [],
            source=request.bundle.name,
            submitter=request.submitter,
            submitted_at=request.submitted_at,
            compressed_bytes=bundle.compressed_bytes if bundle else None,
            architecture_name=contract.architecture_name if contract else None,
            kind=contract.manifest.kind if contract else None,
            architecture_id=contract.manifest.architecture_id if contract else None,
        ),
        inputs=None
        if request.config_error
        else Inputs(
            data=evaluation.data,
            heldout=evaluation.heldout,
            tokenizer=(
                TokenizerRef(
                    name=tokenizer.name,
                    vocab_size=tokenizer.vocab_size,
                    bos_id=tokenizer.bos_id,
                    fingerprint=tokenizer.fingerprint,
                )
                if tokenizer
                else None
            ),
            seed=config.seed,
            config=config.model_dump(mode="json"),
            config_sha256=config.sha256(),
        ),
        evaluator=evaluator_identity(__version__),
        environment=describe_environment(evaluation.ready),
        isolation=isolation_record(evaluation.isolation, evaluation.host_layers),
        stages=evaluation.stages,
        run=run,
        prefix_audit=prefix_audit,
        stream=stream,
        score=evaluation.score if status == "scored" else None,
        artifacts=evaluation.artifacts,
        audit=evaluation.audit,
        review=None if request.config_error else review_summary(evaluation),
        ranks=evaluation.ranks,
        signer=signer,
        started_at=started_at,
        finished_at=_utc_now(),
    )


def evaluate(request: RunRequest, environ: dict[str, str]) -> SignedRecord:
    """Run every stage and return the signed record, for every outcome.

    The signing key is resolved first: a bad key is the operator's error and there would be
    nothing to sign with, so it raises instead of producing a record. An unwritable --out ends
    the run in its inputs stage (the record still goes to stdout).
    """
    identity = resolve_signing_key(request.key_path, environ)
    started_at = _utc_now()
    with tempfile.TemporaryDirectory(prefix="prism-eval-") as work:
        evaluation = Evaluation(request, Path(work))
        status, reason = evaluation.run_stages()
        evaluation.stages.append(
            StageResult(
                name="record",
                status="passed",
                message=f"signed by a{'n ephemeral' if identity.mode == 'ephemeral' else ''} key",
                seconds=0.0,  # the record cannot time its own signing: it is inside what is signed
            )
        )
        record = build_record(evaluation, status, reason, started_at, identity.signer())
        signed = sign_record(record, identity)
        if request.out_dir is not None and reason.rule_id != UNWRITABLE_OUTPUT:
            write_outputs(
                request.out_dir,
                signed,
                evaluation.train.figures if evaluation.train else [],
                Path(work) / "artifacts" / "final.safetensors" if evaluation.artifacts else None,
            )
    return signed
