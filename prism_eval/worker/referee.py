"""Worker (sandboxed): the referee — imports architecture.py only, never training.py.

It builds two models: the twin, under the forced seed (the state training started from), and
a second one into which the saved `final.safetensors` is loaded with strict key matching. It
scores whatever rows the supervisor sends with the same capture math as training (eval mode,
no_grad, float32 log-softmax, float64 sums); the supervisor compares the figures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from prism_eval.protocol import AuditBatch, AuditDone, AuditEnd, AuditLoss, JobSpec
from prism_eval.worker.capture import batch_nats
from prism_eval.worker.channel import Channel
from prism_eval.worker.jobs import make_context, reporting
from prism_eval.worker.loader import load_build_model


def run_audit(channel: Channel, spec: JobSpec) -> None:
    """Build the twin and the trained model, then score every audit batch sent."""
    from safetensors.torch import load_model

    with reporting(channel, "import"):
        build = load_build_model(
            Path(spec.bundle_dir), spec.architecture_file, spec.build_symbol, spec.seed
        )
    ctx = make_context(spec, build, None)
    with reporting(channel, "build_model"):
        twin = build(ctx).to(spec.device)
        trained = build(ctx).to(spec.device)
    with reporting(channel, "load_weights"):
        load_model(trained, spec.final_weights_path, strict=True, device=spec.device)
    while True:
        message, body = channel.receive()
        if isinstance(message, AuditEnd):
            break
        assert isinstance(message, AuditBatch)
        array = channel.receive_tokens(message.rows, message.cols, body)
        rows = torch.from_numpy(array.astype(np.int64)).to(spec.device)  # (batch, seq)
        with reporting(channel, "audit_forward"):
            twin_nats = (
                batch_nats(twin, rows, spec.vocab_size) if message.role != "recent" else None
            )
            trained_nats = (
                batch_nats(trained, rows, spec.vocab_size) if message.role != "replay" else None
            )
        channel.send(
            AuditLoss(
                role=message.role,
                index=message.index,
                twin_nats=twin_nats,
                trained_nats=trained_nats,
            )
        )
    channel.send(AuditDone())
