"""Worker (sandboxed): the probe — build the model under the forced seed, count it, try it.

Counts parameters and floating-point buffers before and after a forward (lazy modules grow on
their first one), checks the output's shape, finiteness and determinism, and runs the
causality and batch-independence checks of `causality.py`. The supervisor judges the report.
Then the same process goes on as the scored run's predictor (predictor.py): it has seen
nothing but the probe's random tokens, and its start-up is already paid.
"""

from __future__ import annotations

import torch

from prism_eval.protocol import Channel, JobSpec, ProbeInput, ProbeReport
from prism_eval.worker.causality import probe_causality
from prism_eval.worker.jobs import build_scored_models, reporting
from prism_eval.worker.outputs import logits_of
from prism_eval.worker.predictor import serve_predictions


def _count(model: torch.nn.Module) -> tuple[int, int]:
    """(parameters, floating-point buffer elements); uninitialized lazy parameters count 0."""
    params = sum(
        p.numel()
        for p in model.parameters()
        if not isinstance(p, torch.nn.parameter.UninitializedParameter)
    )
    buffers = sum(
        b.numel()
        for b in model.buffers()
        if not isinstance(b, torch.nn.parameter.UninitializedBuffer) and b.is_floating_point()
    )
    return params, buffers


def run_probe(channel: Channel, spec: JobSpec) -> None:
    """Build the model, count it, and run the probe forwards and checks."""
    (model,) = build_scored_models(channel, spec)
    params, buffers = _count(model)
    message, body = channel.receive()
    assert isinstance(message, ProbeInput)
    arrays = channel.receive_tokens(2 * message.batch_size, message.seq_len, body)
    both = torch.from_numpy(arrays.astype("int64")).to(spec.device)  # (2 * batch, seq)
    inputs, source = both[: message.batch_size], both[message.batch_size :]
    with reporting(channel, "probe_forward"):
        model.eval()
        with torch.no_grad():
            first = logits_of(model(inputs))
            second = logits_of(model(inputs))
        shape_ok = first.dim() == 3 and tuple(first.shape[:2]) == tuple(inputs.shape)
        causality = (
            probe_causality(model, inputs, source, message.positions, message.warm_calls, spec.seed)
            if shape_ok
            else []
        )
    params_after, buffers_after = _count(model)
    channel.send(
        ProbeReport(
            params=params,
            float_buffer_elements=buffers,
            params_after_forward=params_after,
            float_buffer_elements_after_forward=buffers_after,
            logits_shape=list(first.shape)[:8],
            logits_finite=bool(torch.isfinite(first).all()),
            deterministic=first.shape == second.shape and bool(torch.equal(first, second)),
            causality=causality,
        )
    )
    serve_predictions(channel, spec, {"committed": model})  # the probe goes on as the predictor
