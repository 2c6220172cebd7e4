"""Supervisor: the probe stage — build the model in a worker and check what it reports.

The worker builds the model under the forced seed, counts parameters and floating-point
buffers (weights hidden in buffers count toward the cap), and runs a forward on random
tokens the supervisor chose. The supervisor checks the counts against the cap and the logits'
shape against the batch it sent: (batch, seq, W) with W >= vocab, finite.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass

import numpy as np

from prism_eval.errors import Failed, PrismError, Rejected
from prism_eval.protocol import (
    CausalityCheck,
    Failure,
    JobSpec,
    ProbeInput,
    ProbeReport,
    ProtocolError,
)
from prism_eval.supervisor.config import EvalConfig
from prism_eval.supervisor.sandbox import (
    OnReady,
    WorkerProcess,
    WorkerTimeout,
    await_ready,
    failure_error,
    lost_worker_error,
)

PROBE_BATCH = 2
PROBE_SEQ = 16
CAUSALITY_POSITIONS = 3
WARM_CALLS = 32
# Log-probabilities (nats) before j may move by float noise only: a leak of a future token
# moves them by O(1). Absolute: nothing the model outputs can widen it.
CAUSALITY_TOLERANCE = 1e-4

PROBE_FAILURES: dict[str, tuple[type[PrismError], str, str]] = {
    "import": (Rejected, "probe.import_failed", "importing the architecture script raised"),
    "build_model": (Rejected, "probe.build_failed", "build_model(ctx) raised"),
    "not_a_module": (Rejected, "probe.not_a_module", "build_model(ctx) must return an nn.Module"),
    "probe_forward": (Rejected, "probe.forward_failed", "the model's forward raised"),
}


@dataclass(frozen=True)
class ProbeOutcome:
    """What the probe established about the model."""

    params: int
    float_buffer_elements: int
    logits_width: int


def probe_tokens(seed: int, vocab_size: int, seq_len: int) -> np.ndarray:
    """Probe input and perturbation source, (2, PROBE_BATCH, seq_len) int32, seeded."""
    generator = np.random.default_rng([seed, 0x9E0BE])
    return generator.integers(0, vocab_size, size=(2, PROBE_BATCH, seq_len), dtype=np.int32)


def causality_positions(seq_len: int, count: int) -> list[int]:
    """Positions j in 1..seq_len-1 to perturb from, drawn from an unpredictable source."""
    rng = secrets.SystemRandom()
    candidates = list(range(1, seq_len))
    return sorted(rng.sample(candidates, min(count, len(candidates))))


NONCAUSAL_HINT = (
    "the logits at position t may depend on tokens 0..t of the same row only: mask attention "
    "causally and never mix information across time steps or rows"
)


def check_causality(checks: list[CausalityCheck], where: str) -> None:
    """Reject when log-probabilities before a perturbed position (or of a row whose neighbours
    changed) moved beyond float noise."""
    for check in checks:
        if check.max_abs_diff <= CAUSALITY_TOLERANCE:
            continue
        if check.mode == "other_rows":
            raise Rejected(
                "probe.mixes_rows",
                f"{where}: changing the other rows of the batch moved row 0's "
                f"log-probabilities by {check.max_abs_diff:.3g} nats",
                hint=NONCAUSAL_HINT,
            )
        raise Rejected(
            "probe.noncausal",
            f"{where}: changing the tokens from position {check.position} on moved the "
            f"log-probabilities before it by {check.max_abs_diff:.3g} nats "
            f"({check.mode.replace('_', ' ')})",
            hint=NONCAUSAL_HINT,
        )


def check_probe_report(report: ProbeReport, spec: JobSpec, seq_len: int) -> tuple[int, int, int]:
    """Apply the cap and output-shape rules; return (params, float buffers, logits width)."""
    params = max(report.params, report.params_after_forward)
    buffers = max(report.float_buffer_elements, report.float_buffer_elements_after_forward)
    if params + buffers > spec.max_params:
        raise Rejected(
            "probe.too_many_params",
            f"the model has {params:,} parameters and {buffers:,} floating-point buffer "
            f"elements, {params + buffers:,} in all, over the cap of {spec.max_params:,}",
            hint="buffers count toward the cap; shrink the model",
        )
    shape = report.logits_shape
    expected = f"({PROBE_BATCH}, {seq_len}, >= {spec.vocab_size})"
    if len(shape) != 3 or shape[0] != PROBE_BATCH or shape[1] != seq_len:
        raise Rejected(
            "probe.bad_output_shape",
            f"for input ({PROBE_BATCH}, {seq_len}) the model returned logits of shape "
            f"{tuple(shape)}; expected {expected}",
            hint="return logits for every position, (batch, seq, vocab), also when forward is "
            "called without targets (nanoGPT's forward returns only the last position then)"
            if len(shape) == 3 and tuple(shape[:2]) == (PROBE_BATCH, 1)
            else "return logits for every position: (batch, seq, vocab)",
        )
    if shape[2] < spec.vocab_size:
        raise Rejected(
            "probe.narrow_logits",
            f"the logits are {shape[2]} wide, narrower than the vocabulary ({spec.vocab_size})",
            hint="use ctx.vocab_size for the output layer",
        )
    if not report.logits_finite:
        raise Rejected("probe.nonfinite_logits", "the probe forward produced NaN or inf logits")
    check_causality(report.causality, "probe")
    if not report.deterministic:
        raise Rejected(
            "probe.nondeterministic",
            "the same input gave different logits on two eval-mode forwards",
            hint="avoid randomness in eval mode (dropout is fine; it is off in eval)",
        )
    return params, buffers, shape[2]


def probe_request(spec: JobSpec) -> tuple[ProbeInput, bytes]:
    """The probe's input: random tokens from the seed, secret causality positions."""
    seq_len = probe_seq_len(spec)
    tokens = probe_tokens(spec.seed, spec.vocab_size, seq_len)
    positions = causality_positions(seq_len, CAUSALITY_POSITIONS)
    message = ProbeInput(
        batch_size=PROBE_BATCH, seq_len=seq_len, positions=positions, warm_calls=WARM_CALLS
    )
    return message, tokens.tobytes()


def probe_seq_len(spec: JobSpec) -> int:
    """The probe rows' length."""
    return min(PROBE_SEQ, spec.max_seq_len - 1)


def run_probe_stage(
    worker: WorkerProcess, spec: JobSpec, config: EvalConfig, on_ready: OnReady | None = None
) -> ProbeOutcome:
    """Await the launched probe worker's report and check it (raises Rejected or Failed). The
    worker lives on as the predictor; the caller kills it when the run ends."""
    deadline = time.monotonic() + config.probe_timeout_s
    await_ready(worker, spec, config, on_ready)
    try:
        message = worker.receive(config.idle_timeout_s, deadline)
    except (WorkerTimeout, ProtocolError) as exc:
        raise lost_worker_error("probe", worker, exc) from exc
    if isinstance(message, Failure):
        raise failure_error(message, PROBE_FAILURES, spec.bundle_dir, "probe")
    if not isinstance(message, ProbeReport):
        raise Failed("probe.protocol", f"expected a probe report, got {message.type}")
    params, buffers, width = check_probe_report(message, spec, probe_seq_len(spec))
    return ProbeOutcome(params, buffers, width)
