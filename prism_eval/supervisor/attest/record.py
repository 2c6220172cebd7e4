"""Supervisor: the score record's models, its canonical bytes and the statement that is signed.

What is signed is an in-toto Statement v1 wrapping the record (subject = the bundle digest,
predicate = the record), canonicalized with RFC 8785 (JCS) and signed under DSSE's PAE. The
statement is a pure function of the record, so a record can be re-encoded as a standard DSSE
envelope without the private key.
"""

from __future__ import annotations

import hashlib
from typing import Any, Final, Literal

import rfc8785
from pydantic import BaseModel, ConfigDict, Field

from prism_eval.errors import Status
from prism_eval.supervisor.attest.signing import Signature
from prism_eval.supervisor.formula import CurvePoint
from prism_eval.supervisor.intake import BundleFile

RECORD_SCHEMA: Final = "prism-eval.record/v2"
PAYLOAD_TYPE: Final = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://prism-eval.dev/record/v2"

StageStatus = Literal["passed", "rejected", "failed", "error", "skipped"]
LayerState = Literal["active", "unavailable", "not_requested"]


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Reason(_Model):
    """Why the run ended as it did; for `scored`, rule_id is None."""

    rule_id: str | None = Field(description="Stable id of the rule that decided the status.")
    message: str = Field(description="What happened, for a person.")
    hint: str | None = Field(None, description="How to fix it, when the fix is known.")


class Subject(_Model):
    """The bundle evaluated."""

    bundle_sha256: str | None = Field(description="sha256 over the sorted (path, sha256) list.")
    files: list[BundleFile] = Field(description="Every file that was evaluated.")
    source: str = Field(description="The bundle's file name as given (informational).")
    submitter: str | None = Field(None, description="Who submitted it (given to `run`).")
    submitted_at: str | None = Field(None, description="When it was submitted (ISO 8601, UTC).")
    compressed_bytes: int | None = Field(
        None,
        description="zlib level 9 over the files in path order: a bound on what the bundle can "
        "carry besides code (informational; zlib builds may differ by a few bytes).",
    )
    architecture_name: str | None = Field(
        None, description="ARCHITECTURE_NAME from the architecture script, moderated."
    )
    kind: str | None = Field(None, description="prism.yaml's kind (recorded, evaluated alike).")
    architecture_id: str | None = Field(None, description="prism.yaml's architecture_id.")


class DataRef(_Model):
    """A locked data split, pinned by its manifest (never its content, for held-out data)."""

    manifest_sha256: str = Field(description="sha256 of MANIFEST.json's bytes.")
    digest: str = Field(description="The manifest's own digest over its shard list.")
    split: str
    shard_bytes: int = Field(description="Bytes of the split's shards on disk.")
    documents: int


class TokenizerRef(_Model):
    """The reference tokenizer the stream was built with."""

    name: str
    vocab_size: int
    bos_id: int
    fingerprint: str = Field(description="sha256 of the tokenizer file, or builtin:<name>.")


class Inputs(_Model):
    """Everything besides the bundle that decides the score."""

    data: DataRef | None
    heldout: DataRef | None
    tokenizer: TokenizerRef | None
    seed: int
    config: dict[str, Any] = Field(description="The resolved configuration.")
    config_sha256: str


class Evaluator(_Model):
    """Which evaluator produced the record."""

    version: str
    source_commit: str | None = None
    image_digest: str | None = None


class Environment(_Model):
    """Where the record was produced (informational; not part of the reproducible core)."""

    python: str
    platform: str
    cpu: str
    cpu_count: int
    torch: str | None = Field(description="torch version as the worker reported it.")
    cuda: str | None = None
    device: str | None = None
    determinism: dict[str, str] = Field(default_factory=dict)
    gpus: list[str] = Field(default_factory=list, description="GPU names, through NVML.")
    driver: str | None = Field(None, description="NVIDIA driver version, through NVML.")
    cudnn: str | None = Field(None, description="cuDNN version as the worker reported it.")


class IsolationLayer(_Model):
    """One sandbox layer and whether it held for this run (docs/design.md §3)."""

    name: str
    state: LayerState
    detail: str = ""


class StageResult(_Model):
    """One pipeline stage's outcome."""

    name: str
    status: StageStatus
    rule_id: str | None = None
    message: str | None = None
    evidence: list[str] = Field(default_factory=list)
    seconds: float


class StepTimes(_Model):
    """Where a scored step's time went, in milliseconds per step, measured by the supervisor
    (docs/scoring.md §4.1). Timings describe the host, not the bundle: never reproducible."""

    trainer: float = Field(description="Waiting for train(ctx) to ask for the next batch.")
    snapshot: float = Field(description="The scorer copying the committed weights.")
    predict: float = Field(description="The predictor's scored forward, message to answer.")
    score: float = Field(description="The scorer's nats for the batch.")
    prefix_audit: float = Field(description="Prefix audits, averaged over every step.")
    spot_check: float = Field(description="Spot checks, averaged over every step.")
    supervisor: float = Field(description="The rest: batches, reveals, bookkeeping.")


class RunFigures(_Model):
    """The scored run's geometry and counts, all counted by the supervisor."""

    batch_size: int
    seq_len: int
    batches: int
    tokens: int
    bytes: int
    documents: int = Field(description="Documents the scored stream started.")
    empty_documents: int = Field(description="Empty documents skipped (and counted).")
    stopped_by: Literal["budget", "data_exhausted"]
    model_params: int | None = Field(description="Parameters of the scored model (committed).")
    float_buffer_elements: int | None = Field(
        description="Floating-point buffer elements of the scored model (committed)."
    )
    wall_seconds: float
    first_batch_seconds: float | None = Field(
        None, description="From the train stage's start to the first batch's loss (timing)."
    )
    peak_memory_bytes: int | None = Field(None, description="The trainer's peak (cgroup).")
    spot_checks: int = Field(0, description="Scored steps whose predictor passed a spot check.")
    step_ms: StepTimes | None = Field(None, description="Where a step's time went (timings).")


class PrefixAudit(_Model):
    """The prefix audit of the scored run (docs/scoring.md): steps chosen in secret after their
    loss was final, every row cut after a secret position and scored by a separate auditor."""

    rate: float = Field(
        description="Chance each step was audited: prefix_audit_rate, or more to reach "
        "prefix_audit_min_steps."
    )
    tolerance_nats: float = Field(description="Largest allowed difference at a position.")
    steps: int = Field(description="Steps audited.")
    positions: int = Field(description="Positions compared (one per row of an audited step).")
    max_diff_nats: float = Field(description="Largest difference seen.")
    catch_spread_1pct: float = Field(
        description="Chance the audit catches a predictor that leaks at 1 % of positions "
        "spread over the run: 1 − 0.99^positions."
    )
    catch_steps_1pct: float = Field(
        description="Chance it catches one that leaks in 1 % of the steps (at every row): "
        "1 − (1 − rate)^(steps scored / 100)."
    )


class StreamSummary(_Model):
    """The per-batch figures, fingerprinted, with totals and a thinned curve."""

    sha256: str = Field(description="sha256 of RFC 8785 JSON of [[nats, tokens, bytes], ...].")
    batches: int
    nats: float = Field(description="Exactly rounded sum of the batches' nats.")
    tokens: int
    bytes: int
    curve: list[CurvePoint]


class AuditFigures(_Model):
    """What the referee recomputed from the bundle's architecture and the saved weights."""

    step0_reported_nats: float = Field(description="Batch 0's loss as the stream reported it.")
    step0_replayed_nats: float = Field(description="Batch 0's loss from the forced-init twin.")
    recent_batches: int = Field(description="Last scored batches redone with the saved weights.")
    recent_online_bpb: float = Field(description="Their bpb as reported during training.")
    recent_final_bpb: float = Field(description="Their bpb under the saved weights.")
    heldout_bytes: int | None = None
    heldout_twin_bpb: float | None = None
    heldout_trained_bpb: float | None = None


class Score(_Model):
    """The score, recomputable from `stream` alone (see formula.py)."""

    bpb: float
    final_score: float
    heldout_delta: float | None = None
    gap: float | None = None
    multipliers: dict[str, float] = Field(default_factory=dict)
    scoring_version: str


class Artifacts(_Model):
    """The scored model's weights as the supervisor read them back."""

    final_weights_sha256: str
    final_weights_bytes: int
    tensors: int
    elements: int


class RankFigures(_Model):
    """One rank's shard of the ranks check, counted by the supervisor (nothing is scored)."""

    rank: int
    batches: int
    tokens: int
    bytes: int


class RanksCheck(_Model):
    """The ranks check (nproc > 1): train(ctx) at world size `nproc`; never part of the score."""

    nproc: int = Field(description="Ranks that ran, on one node.")
    backend: Literal["gloo"] = Field(description="The collective backend the ranks rendezvous for.")
    device: Literal["cpu"]
    batch_size: int
    seq_len: int
    ranks: list[RankFigures] = Field(description="Batch i went to rank i mod nproc.")
    final_weights_sha256: str = Field(description="Every rank's saved weights hash to this.")
    isolation: list[IsolationLayer] = Field(
        description="Rank 0's layers: seccomp and Landlock let TCP through, inside the private "
        "network namespace all ranks share."
    )
    wall_seconds: float
    peak_memory_bytes: int | None = Field(None, description="The largest rank's peak (cgroup).")


class ReviewSummary(_Model):
    """What the review stage established (docs/design.md §7): the policy and the verdict checked."""

    policy: Literal["required", "optional", "off"] = Field(
        description="What a missing verdict meant for this run."
    )
    verdict_sha256: str | None = Field(
        description="sha256 of the verified verdict's signed payload (its RFC 8785 bytes); "
        "null when no verdict was given or it did not verify."
    )
    decision: Literal["allow", "reject", "held"] | None = Field(
        description="The verified verdict's decision; null without one."
    )
    reviewer_keyid: str | None = Field(description="Key id of the trusted reviewer that signed.")
    model: str | None = Field(description="The reviewing model's id as its API reported it.")


class Signer(_Model):
    """Who signed: a supplied key, or an ephemeral one (then only integrity is shown)."""

    mode: Literal["key", "ephemeral"]
    keyid: str
    public_key: str = Field(description="Raw Ed25519 public key, standard base64.")


class Record(_Model):
    """The score record (docs/design.md §8). Exported as JSON Schema by `prism-eval schema`."""

    schema_: Literal["prism-eval.record/v2"] = Field(RECORD_SCHEMA, alias="schema")
    status: Status
    reason: Reason
    subject: Subject
    inputs: Inputs | None
    evaluator: Evaluator
    environment: Environment
    isolation: list[IsolationLayer]
    stages: list[StageResult]
    run: RunFigures | None
    prefix_audit: PrefixAudit | None = None
    stream: StreamSummary | None
    score: Score | None
    artifacts: Artifacts | None
    audit: AuditFigures | None = None
    review: ReviewSummary | None = Field(
        None, description="The review gate's policy and verdict; null when the config was bad."
    )
    ranks: RanksCheck | None = Field(
        None, description="The ranks check; null when only the scored run's one rank ran."
    )
    signer: Signer
    started_at: str
    finished_at: str

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class SignedRecord(_Model):
    """What `run` prints: the record and DSSE signatures over its statement."""

    payloadType: Literal["application/vnd.in-toto+json"] = PAYLOAD_TYPE
    record: Record
    signatures: list[Signature] = Field(min_length=1)


def record_to_json(record: Record) -> dict[str, Any]:
    """The record as plain JSON data (field aliases applied)."""
    return record.model_dump(mode="json", by_alias=True)


def statement_for(record_json: dict[str, Any]) -> dict[str, Any]:
    """The in-toto Statement v1 that wraps a record (built from the record alone)."""
    subject = record_json.get("subject") or {}
    digest = subject.get("bundle_sha256") or hashlib.sha256(b"").hexdigest()
    name = "prism-bundle" if subject.get("bundle_sha256") else "prism-bundle-unread"
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": digest}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": record_json,
    }


def statement_bytes(record_json: dict[str, Any]) -> bytes:
    """RFC 8785 canonical bytes of the statement for a record: the DSSE payload."""
    return bytes(rfc8785.dumps(statement_for(record_json)))
