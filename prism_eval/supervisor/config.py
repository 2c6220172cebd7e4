"""Supervisor: evaluation profiles and limits, as validated data (docs/design.md §11).

A profile is a YAML file in `prism_eval/supervisor/profiles/`; `--config FILE` overlays a user
file and CLI flags overlay both. The resolved config and its digest go into every record.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import rfc8785
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from prism_eval.errors import EvaluatorError

PROFILES = ("cpu", "official")
MAX_RANKS = 8  # one node: the ranks check never starts processes anywhere else
ISOLATION_LAYERS = (
    "environment", "watchdog", "cgroup_memory", "cgroup_pids", "rlimits", "network_namespace",
    "private_shm", "no_new_privs", "landlock", "unprivileged_user", "seccomp",
)  # fmt: skip
IsolationLayerName = Literal[
    "environment", "watchdog", "cgroup_memory", "cgroup_pids", "rlimits", "network_namespace",
    "private_shm", "no_new_privs", "landlock", "unprivileged_user", "seccomp",
]  # fmt: skip


class IntakeLimits(BaseModel):
    """Caps applied while reading a bundle, before any byte is trusted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Bundles learn from scratch, and every byte they carry could be knowledge learned elsewhere
    # (a pretrained table in a string): honest code fits with a wide margin (nanoGPT's model and
    # loop are 31 KB, the reference's example under 10 KB), a smuggled model does not.
    max_files: int = Field(64, ge=1, description="Most files a bundle may hold.")
    max_total_bytes: int = Field(256 * 1024, ge=1, description="Uncompressed total.")
    max_file_bytes: int = Field(128 * 1024, ge=1, description="Uncompressed size of one file.")
    max_archive_bytes: int = Field(512 * 1024, ge=1, description="Size of the zip itself.")


class EvalConfig(BaseModel):
    """Everything that decides a score. Two validators with equal configs score alike."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    profile: str = Field("cpu", description="Name of the profile this config started from.")
    seed: int = Field(1337, ge=0, lt=2**63, description="The forced seed for init and probes.")
    byte_budget: int = Field(
        256 * 1024, ge=1, description="UTF-8 bytes of train text scored; the run's length."
    )
    max_seq_len: int = Field(256, ge=2, le=65536, description="Longest row a miner may ask for.")
    max_batch_size: int = Field(512, ge=1, description="Most rows a miner may ask for per batch.")
    max_params: int = Field(150_000_000, ge=1, description="Cap on parameters + float buffers.")
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where miner code runs.")
    threads: int = Field(0, ge=0, description="torch threads in workers; 0 means all cores.")
    data_access: Literal["instrument", "readable"] = Field(
        "instrument", description="Whether train(ctx) may read the train shards itself."
    )
    review_policy: Literal["required", "optional", "off"] = Field(
        "off",
        description="What a missing review verdict means: required rejects the run, optional "
        "and off skip the stage. A verdict that is given is verified under every policy.",
    )
    review_model: str = Field(
        "openai/gpt-4.1", min_length=1, description="Model id `prism-eval review` asks for."
    )
    review_endpoint: str = Field(
        "https://openrouter.ai/api/v1/chat/completions",
        min_length=1,
        description="OpenAI-compatible chat-completions URL (https, or http on loopback).",
    )
    review_timeout_s: float = Field(
        180.0, gt=0, le=3600, description="Limit on one review request, connect to last byte."
    )
    review_max_attempts: int = Field(
        4, ge=1, le=10, description="Requests sent at most (timeouts, 429 and 5xx are retried)."
    )
    review_backoff_s: float = Field(
        2.0, ge=0, le=600, description="Wait before the first retry; doubled after each."
    )
    review_max_retry_after_s: float = Field(
        60.0, ge=0, le=3600, description="Longest server Retry-After the review waits for."
    )
    review_prompt_max_bytes: int = Field(
        400_000, ge=1, description="Largest prompt sent; a larger bundle is rejected unsent."
    )
    review_max_answer_tokens: int = Field(
        4096, ge=64, le=65536, description="max_tokens of the review answer."
    )
    nproc: int = Field(
        1,
        ge=1,
        le=MAX_RANKS,
        description="Ranks of the ranks check, on one node. The score always comes from one "
        "rank; with nproc > 1, train(ctx) also runs at world size nproc (gloo, CPU) after the "
        "audit and must end with identical weights on every rank.",
    )
    ranks_byte_budget: int = Field(
        32 * 1024, ge=1, description="Train bytes the ranks check feeds, across all ranks."
    )
    heldout_required: bool = False
    train_timeout_s: float = Field(600.0, gt=0, description="Wall-clock cap for train(ctx).")
    probe_timeout_s: float = Field(120.0, gt=0, description="Wall-clock cap for the probe.")
    idle_timeout_s: float = Field(
        300.0, gt=0, description="Longest a worker may go without a message before it is killed."
    )
    prefetch_batches: int = Field(
        4,
        ge=1,
        le=64,
        description="Batches the supervisor tokenizes ahead (in its own memory: no sandboxed "
        "process ever gets a batch before its turn).",
    )
    stream_block_batches: int = Field(
        64,
        ge=1,
        le=4096,
        description="Batches per block of the stream layout: a block is batch_size parallel "
        "segments of stream_block_batches × (seq_len − 1) + 1 tokens (docs/scoring.md).",
    )
    capture_dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="Precision of the scored forward (bfloat16: autocast), whatever the miner's "
        "loop uses; the scorer's log-softmax is float32 either way.",
    )
    max_logits_mib: int = Field(
        4096, ge=1, description="Largest logits array of one batch (batch × seq × width)."
    )
    spot_check_rate: float = Field(
        0.05,
        ge=0.02,
        le=1.0,
        description="Share of scored steps whose predictor is asked again with the tokens after "
        "a secret position changed (an early filter; the prefix audit is the guarantee).",
    )
    prefix_audit_rate: float = Field(
        0.1,
        ge=0.01,
        le=1.0,
        description="Share of scored steps, chosen in secret after their loss is final, whose "
        "every row is cut after a secret position and scored again by a separate auditor.",
    )
    prefix_audit_min_steps: int = Field(
        0,
        ge=0,
        description="Steps the prefix audit is expected to cover at least: for geometries with "
        "few steps (large batches) the rate rises to min_steps / expected steps.",
    )
    prefix_audit_tolerance_nats: float = Field(
        1e-4,
        gt=0,
        le=0.1,
        description="Largest difference between a prefix-audited position's nats and the scored "
        "nats at the same position.",
    )
    curve_points: int = Field(256, ge=2, le=4096, description="Points kept in the record's curve.")
    intake: IntakeLimits = Field(default_factory=IntakeLimits)
    audit_recent_batches: int = Field(
        4, ge=1, description="Last scored batches the referee redoes."
    )
    audit_replay_rel_tol: float = Field(
        1e-5, ge=0, description="Step-0 replay: allowed relative difference (same device class)."
    )
    audit_final_rel_tol: float = Field(
        0.05,
        ge=0,
        description="Final weights may score this much worse than the online losses on the "
        "last batches (honest training scores 1–9 % better; docs/scoring.md §3).",
    )
    audit_final_abs_tol_bpb: float = Field(0.05, ge=0, description="…plus this many bpb.")
    heldout_byte_budget: int = Field(
        64 * 1024, ge=1, description="Held-out bytes the referee scores."
    )
    score_tie_epsilon_bpb: float = Field(
        1e-4, ge=0, description="Largest bpb the held-out tie-break can move a score by."
    )
    score_gap_threshold_bpb: float = Field(
        1.0, ge=0, description="Held-out minus train bpb beyond which memorization is penalized."
    )
    score_gap_multiplier: float = Field(0.5, ge=0, le=1, description="The memorization penalty.")
    score_anomaly_heldout_delta_bpb: float = Field(
        -0.5, description="A trained model this much worse than its untrained twin scores zero."
    )
    memory_limit_mib: int = Field(8192, ge=256, description="Worker memory (cgroup; RLIMIT_AS).")
    pids_limit: int = Field(512, ge=16, description="Processes and threads a worker may run.")
    open_files_limit: int = Field(4096, ge=64, description="RLIMIT_NOFILE of a worker.")
    artifacts_quota_mib: int = Field(2048, ge=1, description="Bytes the artifacts dir may hold.")
    artifacts_max_files: int = Field(10000, ge=1, description="Files the artifacts dir may hold.")
    worker_uid: int = Field(65534, ge=1, description="uid/gid workers drop to when run as root.")
    isolation_required: list[IsolationLayerName] = Field(
        default_factory=list, description="Layers that must be active, or the run is an error."
    )
    unsafe_skip_lint_for_tests: bool = Field(
        False, description="Skip the AST lint (escape tests prove the sandbox holds without it)."
    )

    def sha256(self) -> str:
        """Digest of the canonical (RFC 8785) JSON of this config."""
        return hashlib.sha256(rfc8785.dumps(self.model_dump(mode="json"))).hexdigest()


def _read_yaml(text: str, origin: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise EvaluatorError("config.bad_yaml", f"{origin} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise EvaluatorError("config.bad_yaml", f"{origin} must be a mapping of settings")
    return data


def load_config(
    profile: str = "cpu",
    config_file: Path | None = None,
    overrides: dict[str, Any] | None = None,
) -> EvalConfig:
    """Resolve profile → config file → overrides (None values are ignored) into one config."""
    if profile not in PROFILES:
        raise EvaluatorError(
            "config.unknown_profile", f"unknown profile {profile!r}", hint=f"use one of {PROFILES}"
        )
    text = resources.files("prism_eval.supervisor").joinpath(f"profiles/{profile}.yaml").read_text()
    data = _read_yaml(text, f"profile {profile}")
    data["profile"] = profile
    if config_file is not None:
        try:
            user_text = config_file.read_text()
        except OSError as exc:
            raise EvaluatorError("config.unreadable", f"cannot read {config_file}: {exc}") from exc
        data.update(_read_yaml(user_text, str(config_file)))
    data.update({k: v for k, v in (overrides or {}).items() if v is not None})
    try:
        return EvalConfig.model_validate(data)
    except ValidationError as exc:
        allowed = ", ".join(sorted(EvalConfig.model_fields))
        raise EvaluatorError(
            "config.invalid", f"invalid configuration: {exc}", hint=f"allowed keys: {allowed}"
        ) from exc
