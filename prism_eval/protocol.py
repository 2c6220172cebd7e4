"""Shared: the frames and messages that cross the supervisor/worker boundary. Pure, no policy.

A frame is `u32 header_len | u32 body_len | header | body` (big-endian lengths). The header is
one JSON message (a pydantic model below, tagged by `type`); the body is raw bytes, used only
for token arrays the supervisor sends. Both sides read with hard caps: a worker is hostile, so
whatever it sends is `untrusted` until `parse_worker_message` has turned it into a model.
"""

from __future__ import annotations

import math
import socket
import struct
from typing import Annotated, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

PROTOCOL_VERSION = 1
_LENGTHS = struct.Struct(">II")
# Worker messages are small; a larger header is an attack or a bug.
MAX_WORKER_HEADER_BYTES = 64 * 1024
MAX_SUPERVISOR_HEADER_BYTES = 1024 * 1024
MAX_BODY_BYTES = 512 * 1024 * 1024


class ProtocolError(Exception):
    """A frame or message broke the protocol (size, framing, schema, values)."""


class ChannelClosed(ProtocolError):
    """The other side closed the channel."""


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# ---- supervisor → worker ------------------------------------------------------------------


class SandboxSpec(_Message):
    """The isolation layers the worker applies to itself before any miner import (DESIGN §3)."""

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


class LayerReport(_Message):
    """How one isolation layer went, reported before miner code is imported."""

    name: str = Field(max_length=64)
    state: Literal["active", "unavailable", "not_requested"]
    detail: str = Field("", max_length=1024)


class JobSpec(_Message):
    """What a worker is asked to do, and everything its `PrismContext` exposes."""

    type: Literal["job"] = "job"
    protocol: int = PROTOCOL_VERSION
    job: Literal["probe", "train", "audit", "ranks", "selftest"] = Field(
        description="ranks is train(ctx) as one rank of the ranks check; selftest applies the "
        "isolation, reports Ready and exits (doctor, bench)."
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
    tokenizer: str
    vocab_size: int
    bos_id: int
    max_seq_len: int
    max_batch_size: int
    max_params: int
    byte_budget: int
    artifacts_dir: str
    data_dir: str | None = Field(description="Train split, only when data_access is readable.")
    final_weights_path: str
    sandbox: SandboxSpec


class ProbeInput(_Message):
    """Probe tokens; body: int32 (2, batch, seq) — the input, then the perturbation source.

    For each causality position j the worker replaces tokens from j on by the perturbation's
    and compares the logits before j, in eval/no_grad, in train/grad, and again after
    `warm_calls` more forwards.
    """

    type: Literal["probe_input"] = "probe_input"
    batch_size: int
    seq_len: int
    positions: list[int]
    warm_calls: int


class AuditBatch(_Message):
    """Rows for the referee (body: int32 (rows, cols)); `role` says which model scores them.

    replay: the forced-init twin (step-0 replay); recent: the saved weights (final
    consistency); heldout: both.
    """

    type: Literal["audit_batch"] = "audit_batch"
    role: Literal["replay", "recent", "heldout"]
    index: int
    rows: int
    cols: int


class AuditEnd(_Message):
    """No more audit batches."""

    type: Literal["audit_end"] = "audit_end"


class StreamAccepted(_Message):
    """The supervisor accepts the geometry the miner asked for."""

    type: Literal["stream_accepted"] = "stream_accepted"
    batch_size: int
    seq_len: int


class StreamRefused(_Message):
    """The supervisor refuses the stream request; the run is over."""

    type: Literal["stream_refused"] = "stream_refused"
    rule_id: str
    message: str


class Batch(_Message):
    """One batch of rows (body: int32, shape (rows, cols)); rows overlap by one token.

    With `spot_check_position` j the body holds a second (rows, cols) array: after scoring,
    the capture feeds the rows with tokens from j on taken from it and reports how much the
    logits before j moved (a causality spot check on the live model).
    """

    type: Literal["batch"] = "batch"
    index: int
    rows: int
    cols: int
    spot_check_position: int | None = None


class StreamEnd(_Message):
    """No more batches: the byte budget is spent or the data ran out."""

    type: Literal["stream_end"] = "stream_end"
    reason: Literal["budget", "data_exhausted"]


SupervisorMessage = Annotated[
    JobSpec
    | ProbeInput
    | StreamAccepted
    | StreamRefused
    | Batch
    | StreamEnd
    | AuditBatch
    | AuditEnd,
    Field(discriminator="type"),
]

# ---- worker → supervisor (untrusted) ------------------------------------------------------


def _finite(value: float) -> float:
    if not math.isfinite(value):
        raise ValueError("must be finite")
    return value


def _nats(value: float) -> float:
    # A summed negative log-likelihood is finite and never negative.
    if not math.isfinite(value) or value < 0:
        raise ValueError("must be finite and >= 0")
    return value


class Ready(_Message):
    """The worker is set up (seeds, determinism) and about to import miner code."""

    type: Literal["ready"] = "ready"
    torch_version: str = Field(max_length=64)
    cuda_version: str | None = Field(max_length=64)
    device_name: str = Field(max_length=256)
    determinism: dict[str, str] = Field(max_length=32)
    isolation: list[LayerReport] = Field(max_length=32)
    cudnn_version: int | None = None


class CausalityCheck(_Message):
    """How far the log-probabilities before `position` moved when the tokens from it on
    changed (nats)."""

    mode: Literal["eval_no_grad", "train_grad", "after_warm_calls"]
    position: int
    max_abs_diff: float = Field(ge=0)

    @field_validator("max_abs_diff")
    @classmethod
    def _values_finite(cls, value: float) -> float:
        return _finite(value)


class ProbeReport(_Message):
    """What the probe saw: counts and the logits' shape."""

    type: Literal["probe_report"] = "probe_report"
    params: int = Field(ge=0)
    float_buffer_elements: int = Field(ge=0)
    params_after_forward: int = Field(ge=0)
    float_buffer_elements_after_forward: int = Field(ge=0)
    logits_shape: list[int] = Field(max_length=8)
    logits_finite: bool
    deterministic: bool
    causality: list[CausalityCheck] = Field(max_length=64)


class StreamOpen(_Message):
    """The miner's first `iter_train_batches` call: the geometry it asks for."""

    type: Literal["stream_open"] = "stream_open"
    batch_size: int
    seq_len: int
    tokenizer: str = Field(max_length=64)


class BatchLoss(_Message):
    """Summed nats over a batch's predicted tokens, taken before the miner trains on it."""

    type: Literal["batch_loss"] = "batch_loss"
    index: int = Field(ge=0)
    nats: float
    tokens: int = Field(ge=0)
    spot_check: CausalityCheck | None = None

    @field_validator("nats")
    @classmethod
    def _nats_finite(cls, value: float) -> float:
        return _nats(value)


class AuditLoss(_Message):
    """The referee's summed nats for one audit batch, per model that scored it."""

    type: Literal["audit_loss"] = "audit_loss"
    role: Literal["replay", "recent", "heldout"]
    index: int = Field(ge=0)
    twin_nats: float | None
    trained_nats: float | None

    @field_validator("twin_nats", "trained_nats")
    @classmethod
    def _nats_finite(cls, value: float | None) -> float | None:
        return None if value is None else _nats(value)


class AuditDone(_Message):
    """Every audit batch was scored."""

    type: Literal["audit_done"] = "audit_done"


class TrainDone(_Message):
    """`train(ctx)` returned and the scored model was saved."""

    type: Literal["train_done"] = "train_done"
    batches_consumed: int = Field(ge=0)


class Failure(_Message):
    """Miner code raised. `where` says in which step; the supervisor picks the rule id."""

    type: Literal["failure"] = "failure"
    where: Literal[
        "import",
        "build_model",
        "not_a_module",
        "probe_forward",
        "train",
        "capture",
        "save",
        "load_weights",
        "audit_forward",
    ]
    exc_type: str = Field(max_length=256)
    message: str = Field(max_length=4096)
    traceback: str = Field(max_length=16384)


class NonFiniteLoss(_Message):
    """The capture's loss for a batch was NaN or infinite (sent instead of BatchLoss)."""

    type: Literal["nonfinite_loss"] = "nonfinite_loss"
    index: int = Field(ge=0)


WorkerMessage = Annotated[
    Ready
    | ProbeReport
    | StreamOpen
    | BatchLoss
    | TrainDone
    | Failure
    | NonFiniteLoss
    | AuditLoss
    | AuditDone,
    Field(discriminator="type"),
]

_WORKER_ADAPTER: TypeAdapter[WorkerMessage] = TypeAdapter(WorkerMessage)
_SUPERVISOR_ADAPTER: TypeAdapter[SupervisorMessage] = TypeAdapter(SupervisorMessage)


def encode_frame(message: BaseModel, body: bytes = b"") -> bytes:
    """Encode one message (and an optional body) as a frame."""
    header = orjson.dumps(message.model_dump(mode="json"))
    return _LENGTHS.pack(len(header), len(body)) + header + body


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:], size - got)
        if n == 0:
            raise ChannelClosed("channel closed mid-frame" if got else "channel closed")
        got += n
    return bytes(buffer)


def read_frame(sock: socket.socket, max_header: int, max_body: int) -> tuple[bytes, bytes]:
    """Read one frame, refusing any length over its cap before reading a byte of it."""
    header_len, body_len = _LENGTHS.unpack(_recv_exact(sock, _LENGTHS.size))
    if header_len == 0 or header_len > max_header:
        raise ProtocolError(f"header of {header_len} bytes (cap {max_header})")
    if body_len > max_body:
        raise ProtocolError(f"body of {body_len} bytes (cap {max_body})")
    header = _recv_exact(sock, header_len)
    body = _recv_exact(sock, body_len) if body_len else b""
    return header, body


def parse_worker_message(untrusted_header: bytes, untrusted_body: bytes) -> WorkerMessage:
    """Parse a worker's frame into a message model, or raise ProtocolError."""
    if untrusted_body:
        raise ProtocolError("workers may not send frame bodies")
    try:
        return _WORKER_ADAPTER.validate_json(untrusted_header)
    except ValidationError as exc:
        raise ProtocolError(f"malformed worker message: {exc.errors()[:3]}") from exc


def parse_supervisor_message(header: bytes) -> SupervisorMessage:
    """Parse a supervisor's frame header (the worker side)."""
    try:
        return _SUPERVISOR_ADAPTER.validate_json(header)
    except ValidationError as exc:
        raise ProtocolError(f"malformed supervisor message: {exc.errors()[:3]}") from exc
