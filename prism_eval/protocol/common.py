"""Shared: messages every child uses — the job it is given, readiness, failures.

A child is a sandboxed worker (probe, trainer, predictor, ranks) or the trusted scorer. Each
gets one job message first; each answers with `Ready` once it is set up, and with `Failure`
when code it ran raised (the supervisor, never the child, decides what that means).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

PROTOCOL_VERSION = 3


class Message(BaseModel):
    """Base of every message: frozen, no unknown fields."""

    model_config = ConfigDict(frozen=True, extra="forbid")


def finite(value: float) -> float:
    """A validator: the value must be a finite float."""
    if not math.isfinite(value):
        raise ValueError("must be finite")
    return value


class SandboxSpec(Message):
    """The isolation layers a worker applies to itself before any miner code (docs/design.md §3)."""

    network_namespace: bool = Field(description="unshare a network namespace with only lo.")
    join_user_namespace_fd: int | None = Field(
        None, description="Inherited fd of rank 0's user namespace, joined first (non-root runs)."
    )
    join_network_namespace_fd: int | None = Field(
        None, description="Inherited fd of rank 0's network namespace, joined instead of a new one."
    )
    private_shm_mib: int | None = Field(
        None,
        description="Mount a fresh tmpfs of this size on /dev/shm, in a mount namespace "
        "of its own; None leaves the host's /dev/shm.",
    )
    no_new_privs: bool
    drop_to_uid: int | None = Field(description="Switch to this uid/gid; None keeps the uid.")
    drop_capabilities: bool = Field(description="Clear every capability, bounding set included.")
    landlock: bool
    read_paths: list[str] = Field(description="Readable (and executable) under Landlock.")
    write_paths: list[str] = Field(description="Writable under Landlock.")
    device_paths: list[str] = Field(description="Device nodes: read, write, ioctl.")
    seccomp: bool
    allow_inet: bool = Field(
        description="Let AF_INET sockets through seccomp and leave TCP out of Landlock, inside a "
        "private network namespace only (the ranks check)."
    )
    rlimits: dict[str, int] = Field(description="RLIMIT name (without prefix) → soft = hard.")


class LayerReport(Message):
    """How one isolation layer went, reported before miner code is imported."""

    name: str = Field(max_length=64)
    state: Literal["active", "unavailable", "not_requested"]
    detail: str = Field("", max_length=1024)

    @classmethod
    def active(cls, name: str, detail: str) -> LayerReport:
        return cls(name=name, state="active", detail=detail[:1024])

    @classmethod
    def unavailable(cls, name: str, detail: str) -> LayerReport:
        return cls(name=name, state="unavailable", detail=detail[:1024])


Role = Literal["probe", "trainer", "predictor", "auditor", "referee", "ranks", "selftest"]


class JobSpec(Message):
    """What a sandboxed worker is asked to do, and everything its `PrismContext` exposes."""

    type: Literal["job"] = "job"
    protocol: int = PROTOCOL_VERSION
    job: Role = Field(
        description="trainer runs train(ctx); predictor, auditor and referee run the scored "
        "forward with architecture.py only; ranks is train(ctx) as one rank of the ranks check; "
        "selftest applies the isolation, reports Ready and exits (doctor, bench)."
    )
    rank: int = Field(0, ge=0, description="This worker's rank (ranks check only).")
    world_size: int = Field(1, ge=1, description="Ranks in the job; 1 but for ranks.")
    bundle_dir: str
    architecture_file: str = Field(description="Path inside the bundle, e.g. architecture.py.")
    training_file: str
    build_symbol: str
    train_symbol: str
    seed: int
    device: Literal["cpu", "cuda"]
    threads: int = Field(description="torch intra-op threads; 0 leaves torch's default.")
    capture_dtype: Literal["float32", "bfloat16"] = Field(
        "float32", description="The precision of the scored forward (predictor roles)."
    )
    tokenizer: str
    vocab_size: int
    bos_id: int
    max_seq_len: int
    max_batch_size: int
    max_params: int
    byte_budget: int
    artifacts_dir: str
    data_dir: str | None = Field(description="Train split, only when data_access is readable.")
    reference_tokenizer_dir: str | None = Field(
        None, description="The staged tokenizer files (read-only), for ctx.reference_tokenizer."
    )
    final_weights_path: str
    gated: bool = Field(
        False, description="Wait for Go after Ready before importing any bundle file."
    )
    sandbox: SandboxSpec


class Go(Message):
    """A gated worker may start its job (the probe passed)."""

    type: Literal["go"] = "go"


class ScorerJob(Message):
    """The scorer's job: trusted code, no sandbox, no bundle."""

    type: Literal["scorer_job"] = "scorer_job"
    protocol: int = PROTOCOL_VERSION
    device: Literal["cpu", "cuda"]
    threads: int = Field(description="torch intra-op threads; 0 leaves torch's default.")


class Ready(Message):
    """The child is set up (seeds, determinism, isolation) and about to start its work."""

    type: Literal["ready"] = "ready"
    torch_version: str = Field(max_length=64)
    cuda_version: str | None = Field(max_length=64)
    device_name: str = Field(max_length=256)
    determinism: dict[str, str] = Field(max_length=32)
    isolation: list[LayerReport] = Field(max_length=32)
    cudnn_version: int | None = None


Where = Literal[
    "import",
    "build_model",
    "not_a_module",
    "probe_forward",
    "train",
    "layout",
    "commit",
    "save",
    "load_weights",
    "forward",
    "output",
]


class Failure(Message):
    """Code the child ran raised. `where` says in which step; the supervisor picks the rule id."""

    type: Literal["failure"] = "failure"
    where: Where
    exc_type: str = Field(max_length=256)
    message: str = Field(max_length=4096)
    traceback: str = Field(max_length=16384)
