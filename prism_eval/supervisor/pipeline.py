"""Supervisor: the stages in their fixed order, and the record they produce (docs/design.md §4).

inputs → intake → contract → lint → review → probe → train → audit → ranks → score → record.
The first stage that raises ends the run; the later stages are listed as skipped, and a
signed record is produced for every outcome. Nothing here imports bundle code: the probe and
train stages run it in worker processes.

One idea: the stage order, each stage a short method over the run's state that calls into its
package (intake, data, review, stages, formula); what a stage does lives there, not here.
"""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prism_eval.errors import EvaluatorError, Failed, PrismError, Rejected, Status
from prism_eval.protocol import LayerReport, Ready
from prism_eval.supervisor.attest import (
    Artifacts,
    AuditFigures,
    DataRef,
    RanksCheck,
    Reason,
    Score,
    StageResult,
    StageStatus,
    prepare_out_dir,
)
from prism_eval.supervisor.config import EvalConfig, load_config
from prism_eval.supervisor.data import (
    DataManifest,
    PackedBatch,
    StreamTally,
    Tokenizer,
    iter_documents,
    load_tokenizer,
    manifest_sha256,
    pack_batches,
    verify_data_dir,
)
from prism_eval.supervisor.formula import (
    SCORING_VERSION,
    ScoringRules,
    bits_per_byte,
    heldout_terms,
    rank_score,
    total_nats,
)
from prism_eval.supervisor.intake import (
    STDIN,
    Bundle,
    Contract,
    check_contract,
    lint_bundle,
    load_bundle,
    raise_on_findings,
    save_stream,
)
from prism_eval.supervisor.interrupts import interruption_name
from prism_eval.supervisor.progress import TrainProgress, say
from prism_eval.supervisor.review import VerifiedVerdict, load_verdict, require_allow
from prism_eval.supervisor.sandbox import (
    Spawner,
    host_checks,
    inet_socket_refusal,
    worker_environment,
)
from prism_eval.supervisor.stages import (
    Crew,
    CrewJobs,
    ProbeOutcome,
    TrainOutcome,
    WorkerJobs,
    describe_step,
    final_weights_cap,
    launch_crew,
    probe_request,
    read_final_weights,
    run_audit,
    run_probe_stage,
    run_ranks_check,
    run_train_stage,
)

STAGES = (
    "inputs", "intake", "contract", "lint", "review", "probe", "train", "audit", "ranks", "score",
    "record",
)  # fmt: skip
HELDOUT_SPLIT = "test"


@dataclass(frozen=True)
class Skipped:
    """A stage's way of saying it did not apply, and why."""

    message: str


@dataclass(frozen=True)
class RunRequest:
    """One evaluation: what to score, against what, under which config, signed by whom."""

    bundle: Path
    data_dir: Path
    config: EvalConfig
    config_error: PrismError | None = None
    heldout_dir: Path | None = None
    key_path: Path | None = None
    out_dir: Path | None = None
    review_verdict: Path | None = None
    reviewer_keys: tuple[Path, ...] = ()
    submitter: str | None = None
    submitted_at: str | None = None


def load_request_config(
    profile: str, config_file: Path | None, overrides: dict[str, Any]
) -> tuple[EvalConfig, PrismError | None]:
    """Resolve the run's config; a bad one is kept as an error for the record to report."""
    try:
        return load_config(profile, config_file, overrides), None
    except PrismError as exc:
        return EvalConfig(), exc


def _data_ref(data_dir: Path, manifest: DataManifest, split: str) -> DataRef:
    entry = manifest.splits[split]
    return DataRef(
        manifest_sha256=manifest_sha256(data_dir),
        digest=manifest.digest,
        split=split,
        shard_bytes=entry.bytes,
        documents=entry.documents,
    )


class Evaluation:
    """The state one run accumulates, stage by stage."""

    def __init__(self, request: RunRequest, work_dir: Path) -> None:
        self.request = request
        self.config = request.config
        self.work_dir = work_dir
        self.stages: list[StageResult] = []
        self.manifest: DataManifest | None = None
        self.heldout_manifest: DataManifest | None = None
        self.audit: AuditFigures | None = None
        self.data: DataRef | None = None
        self.heldout: DataRef | None = None
        self.bundle: Bundle | None = None
        self.contract: Contract | None = None
        self.tokenizer: Tokenizer | None = None
        self.probe: ProbeOutcome | None = None
        self.train: TrainOutcome | None = None
        self.artifacts: Artifacts | None = None
        self.score: Score | None = None
        self.isolation: list[LayerReport] = []
        self.ready: Ready | None = None
        # What surrounds the whole evaluator (container flags, a pod's securityContext):
        # checked once, before any worker, and recorded beside the worker's own layers.
        self.host_layers: list[LayerReport] = host_checks()
        self.review: VerifiedVerdict | None = None
        self.crew: Crew | None = None
        self.spawner: Spawner | None = None
        self.ranks: RanksCheck | None = None
        self.worker_jobs: WorkerJobs | None = None  # known once the contract is checked

    # ---- stages -------------------------------------------------------------------------

    def stage_inputs(self) -> str:
        """Verify the locked data (every shard's hash) and pin the held-out split."""
        if self.request.config_error is not None:
            raise self.request.config_error
        if self.request.out_dir is not None:  # known now, not after the evaluation
            prepare_out_dir(self.request.out_dir)
        self.manifest = verify_data_dir(self.request.data_dir, ["train"])
        self.data = _data_ref(self.request.data_dir, self.manifest, "train")
        if self.request.heldout_dir is not None:
            self.heldout_manifest = verify_data_dir(self.request.heldout_dir, [HELDOUT_SPLIT])
            self.heldout = _data_ref(self.request.heldout_dir, self.heldout_manifest, HELDOUT_SPLIT)
        elif self.config.heldout_required:
            raise EvaluatorError(
                "inputs.heldout_required",
                f"the {self.config.profile} profile requires held-out data",
                hint="pass --heldout DIR",
            )
        refusal = inet_socket_refusal() if self.config.nproc > 1 else None
        if refusal is not None:  # known now, not after the scored run
            raise EvaluatorError(
                "sandbox.ranks_need_tcp",
                f"nproc is {self.config.nproc}, but this host refuses AF_INET sockets "
                f"({refusal}); the ranks talk loopback TCP in their own network namespace",
                hint="in a container, use deploy/seccomp-ranks.json instead of "
                "deploy/seccomp.json; or run with --nproc 1",
            )
        return f"train split: {self.data.documents:,} documents, {self.data.shard_bytes:,} bytes"

    def stage_intake(self) -> str:
        """Read the bundle (a zip, a directory, or `-`: a zip on standard input) under the intake
        caps into a directory the supervisor owns."""
        destination = self.work_dir / "bundle"
        destination.mkdir(mode=0o700)
        source = self.request.bundle
        if source == STDIN:
            source = save_stream(sys.stdin.buffer, self.work_dir / "stdin.zip", self.config.intake)
        self.bundle = load_bundle(source, destination, self.config.intake)
        return f"{len(self.bundle.files)} files, digest {self.bundle.sha256[:16]}…"

    def stage_contract(self) -> str:
        """Check prism.yaml, the scripts and symbols; load the declared tokenizer."""
        assert self.bundle is not None
        self.contract = check_contract(self.bundle)
        self.tokenizer = load_tokenizer(self.contract.tokenizer)
        request = self.request
        protected = [request.data_dir, request.heldout_dir, request.key_path]
        self.worker_jobs = WorkerJobs(
            self.work_dir,
            self.config,
            self.bundle,
            self.contract,
            self.tokenizer,
            request.data_dir,
            protected=tuple(path for path in protected if path is not None),
        )
        name = self.contract.architecture_name or "unnamed architecture"
        return (
            f"{name}; tokenizer {self.tokenizer.name} (vocab {self.tokenizer.vocab_size:,}, "
            f"{self.contract.tokenizer_source})"
        )

    def stage_lint(self) -> str | Skipped:
        """The friendly AST lint (not the security boundary)."""
        assert self.bundle is not None and self.contract is not None
        if self.config.unsafe_skip_lint_for_tests:
            return Skipped("unsafe_skip_lint_for_tests: the lint was not run")
        raise_on_findings(lint_bundle(self.bundle, self.contract))
        return "no findings"

    def stage_review(self) -> str | Skipped:
        """Verify the LLM review verdict offline (docs/design.md §7); the policy decides what a
        missing one means. A verdict that is given is verified under every policy, `off` included:
        an operator who passes one expects it checked, and ignoring it would be silent."""
        assert self.bundle is not None
        policy, path = self.config.review_policy, self.request.review_verdict
        if path is None:
            if policy == "required":
                raise Rejected(
                    "review.missing_verdict",
                    "the review policy is `required` and no review verdict was given",
                    hint="`prism-eval review BUNDLE --key reviewer.key --out verdict.json`, then "
                    "`run --review-verdict verdict.json --reviewer-key reviewer.pub`",
                )
            return Skipped(f"review policy is {policy}: no verdict given")
        self.review = load_verdict(path, self.bundle.sha256, self.request.reviewer_keys)
        require_allow(self.review)
        verdict = self.review.verdict
        return (
            f"allowed by {verdict.model} (policy {policy}; verdict {self.review.sha256[:16]}…, "
            f"reviewer key {self.review.keyid[:16]}…)"
        )

    def stage_probe(self) -> str:
        """Build the model in a probe worker: cap, output shape, finiteness, causality,
        determinism. The train stage's children start now too (stages/crew.py), gated."""
        jobs = CrewJobs(
            probe=self.jobs.spec("probe"),
            trainer=self.jobs.spec("trainer"),
            auditor=self.jobs.spec("auditor"),
            scratch=self.jobs.scratch,
        )
        self.crew = launch_crew(jobs, self.config, probe_request(jobs.probe), self._spawner())
        self.probe = run_probe_stage(
            self.crew.predictor, jobs.probe, self.config, self._worker_ready
        )
        return f"{self.probe.params:,} parameters, logits width {self.probe.logits_width:,}"

    def stage_train(self) -> str:
        """The forced-init re-execution of train(ctx) over the scored stream: trainer,
        predictor, auditor and scorer (stages/_capture.py)."""
        assert self.manifest is not None and self.tokenizer is not None
        assert self.probe is not None and self.crew is not None
        say(f"training: byte budget {self.config.byte_budget:,}")
        self.train = TrainOutcome()
        run_train_stage(
            self.train,
            self.crew,
            self.config,
            documents=iter_documents(self.request.data_dir, self.manifest, "train"),
            tokenizer=self.tokenizer,
            logits_width=self.probe.logits_width,
            progress=TrainProgress(self.config.byte_budget),
            on_ready=self._worker_ready,
        )
        say(describe_step(self.train.step_ms))
        scored = sum(f.bytes for f in self.train.figures)
        note = f"{len(self.train.figures)} batches, {scored:,} bytes"
        if self.train.tally.stopped_by == "data_exhausted":
            note += f"; the data ran out before the {self.config.byte_budget:,}-byte budget"
        return note

    def stage_audit(self) -> str:
        """Read back the saved weights, then the referee: step 0, final state, held-out."""
        assert self.probe is not None and self.train is not None
        assert self.train.first is not None and self.tokenizer is not None
        self.artifacts = read_final_weights(
            self.jobs.artifacts_dir() / "final.safetensors",
            final_weights_cap(self.config.max_params),
        )
        if self.artifacts.elements < self.probe.params:
            raise Failed(
                "audit.weights_mismatch",
                f"final.safetensors holds {self.artifacts.elements:,} elements, fewer than the "
                f"model's {self.probe.params:,} parameters",
            )
        heldout: list[PackedBatch] = []
        if self.request.heldout_dir is not None and self.heldout_manifest is not None:
            documents = iter_documents(
                self.request.heldout_dir, self.heldout_manifest, HELDOUT_SPLIT
            )
            heldout = list(
                pack_batches(
                    documents,
                    self.train.tokenizer or self.tokenizer,
                    batch_size=self.train.batch_size,
                    seq_len=self.train.seq_len,
                    byte_budget=self.config.heldout_byte_budget,
                    tally=StreamTally(),
                    block_batches=self.config.stream_block_batches,
                )
            )
        assert self.crew is not None
        self.audit = run_audit(
            self.jobs.spec("referee"),
            self.jobs.scratch,
            self.config,
            self.crew.scorer,
            self._spawner(),
            first=self.train.first,
            recent=list(self.train.recent),
            heldout=heldout,
            logits_width=self.probe.logits_width,
        )
        figures = self.audit
        self.crew.kill()
        note = (
            f"step 0 replayed; last {figures.recent_batches} batches "
            f"{figures.recent_final_bpb:.3f} bpb with the saved weights"
        )
        if figures.heldout_trained_bpb is not None:
            note += f"; held-out {figures.heldout_trained_bpb:.3f} bpb"
        return note

    def stage_ranks(self) -> str | Skipped:
        """With nproc > 1: train(ctx) at world size nproc on CPU (ranks.py). After the audit,
        so nothing the ranks see can help the scored run, which stays single-rank."""
        assert self.manifest is not None and self.tokenizer is not None
        nproc = self.config.nproc
        if nproc == 1:
            return Skipped("nproc is 1: the scored run's one rank was the only one")
        say(f"ranks: train(ctx) at world size {nproc} (gloo, CPU)")
        self.ranks = run_ranks_check(
            [self.jobs.rank(rank, nproc) for rank in range(nproc)],
            self.config,
            self._spawner(),
            documents=iter_documents(self.request.data_dir, self.manifest, "train"),
            tokenizer=self.tokenizer,
        )
        shard = self.ranks.ranks[0]
        return (
            f"{nproc} ranks × {shard.batches} batches; every rank saved the same weights "
            f"({self.ranks.final_weights_sha256[:16]}…), only rank 0 wrote artifacts"
        )

    def stage_score(self) -> str:
        """Prequential bits per byte over the scored stream (formula.py)."""
        assert self.train is not None
        figures = self.train.figures
        scored_bytes = sum(f.bytes for f in figures)
        if scored_bytes == 0:
            raise Failed("score.no_bytes", "the scored batches covered no bytes of text")
        bpb = bits_per_byte(total_nats(figures), scored_bytes)
        delta = gap = None
        if (audit := self.audit) is not None:
            delta, gap = heldout_terms(
                audit.heldout_twin_bpb, audit.heldout_trained_bpb, audit.recent_final_bpb
            )
        rules = ScoringRules.model_validate(self.config.model_dump())
        final, multipliers = rank_score(bpb, delta, gap, rules)
        self.score = Score(
            bpb=bpb,
            final_score=final,
            heldout_delta=delta,
            gap=gap,
            multipliers=multipliers,
            scoring_version=SCORING_VERSION,
        )
        return f"bpb {bpb:.4f} over {scored_bytes:,} bytes; final score {final:.6f}"

    # ---- plumbing -----------------------------------------------------------------------

    @property
    def jobs(self) -> WorkerJobs:
        assert self.worker_jobs is not None, "workers start after the contract stage"
        return self.worker_jobs

    def _spawner(self) -> Spawner | None:
        """The evaluation's zygote, started on first use (spawner.py). None on CUDA runs: CUDA
        cannot be used in a child forked from a process that touched it, so workers there are
        started with exec."""
        if self.config.device == "cuda":
            return None
        if self.spawner is None:
            scratch = self.jobs.scratch("zygote")
            self.spawner = Spawner(scratch, worker_environment(scratch, self.config.threads))
        return self.spawner

    def _worker_ready(self, ready: Ready, layers: list[LayerReport]) -> None:
        """Note how the latest worker was set up: the record reports its isolation."""
        self.ready, self.isolation = ready, layers

    def run_stages(self) -> tuple[Status, Reason]:
        """Run every stage in order until one ends the run; return the status and reason."""
        steps: dict[str, Callable[[], str | Skipped]] = {
            "inputs": self.stage_inputs,
            "intake": self.stage_intake,
            "contract": self.stage_contract,
            "lint": self.stage_lint,
            "review": self.stage_review,
            "probe": self.stage_probe,
            "train": self.stage_train,
            "audit": self.stage_audit,
            "ranks": self.stage_ranks,
            "score": self.stage_score,
        }
        try:
            return self._run(steps)
        finally:  # whatever ended the run, no child outlives it
            if self.crew is not None:
                self.crew.kill()
            if self.spawner is not None:
                self.spawner.close()

    def _run(self, steps: dict[str, Callable[[], str | Skipped]]) -> tuple[Status, Reason]:
        for name, step in steps.items():
            started = time.monotonic()
            try:
                note = step()
            except PrismError as exc:
                self._end_at(name, exc, time.monotonic() - started)
                return exc.status, Reason(rule_id=exc.rule_id, message=exc.message, hint=exc.hint)
            except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM through interrupts.py
                error = EvaluatorError(
                    "run.interrupted",
                    f"the run was interrupted by {interruption_name(exc)} during the {name} stage",
                    hint="nothing is wrong with the bundle: run it again",
                )
                self._end_at(name, error, time.monotonic() - started)
                return error.status, Reason(rule_id=error.rule_id, message=error.message,
                                            hint=error.hint)  # fmt: skip
            except Exception as exc:  # a bug of ours: status error, never the miner's fault
                traceback.print_exc(file=sys.stderr)
                error = EvaluatorError(
                    "internal.bug",
                    f"internal error in stage {name}: {type(exc).__name__}: {exc}",
                    hint="this is a prism-eval bug; report it with the log above",
                )
                self._end_at(name, error, time.monotonic() - started)
                return error.status, Reason(rule_id=error.rule_id, message=error.message)
            seconds = time.monotonic() - started
            status: StageStatus = "skipped" if isinstance(note, Skipped) else "passed"
            message = note.message if isinstance(note, Skipped) else note
            self.stages.append(
                StageResult(name=name, status=status, message=message, seconds=seconds)
            )
            say(f"{name}: {status} ({seconds:.1f}s) {message}")
        assert self.score is not None
        return "scored", Reason(rule_id=None, message=f"scored: bpb {self.score.bpb:.4f}")

    def _end_at(self, name: str, exc: PrismError, seconds: float) -> None:
        say(f"{name}: {exc.status} [{exc.rule_id}] {exc.message}")
        self.stages.append(
            StageResult(
                name=name,
                status=exc.status,
                rule_id=exc.rule_id,
                message=exc.message,
                evidence=exc.evidence[:50],
                seconds=seconds,
            )
        )
        for later in STAGES[STAGES.index(name) + 1 : -1]:
            self.stages.append(
                StageResult(
                    name=later, status="skipped", message=f"not run: {name} ended the run",
                    seconds=0.0,
                )
            )  # fmt: skip
