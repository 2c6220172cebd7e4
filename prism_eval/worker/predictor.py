"""Worker (sandboxed): the scored forward — `architecture.py` only, never `training.py`.

One code path for three roles, each its own process (protocol/predictor.py): the predictor
(the committed weights of each scored step), the auditor (the same weights, rows cut after a
secret position) and the referee (the forced-init twin and the saved final weights). The
process gets inputs and writes logits into a buffer the scorer reads; it never receives a
target. The forward runs in eval mode, without gradients, in the evaluator's precision
(`capture_dtype`), whatever the miner's loop had entered elsewhere.
"""

from __future__ import annotations

import numpy as np
import torch

from prism_eval.protocol import Channel, JobSpec, ModelLayout, Predict, Predicted, PredictorSetup
from prism_eval.worker.jobs import build_scored_models, reporting
from prism_eval.worker.outputs import OutputError, logits_of
from prism_eval.worker.weights import BoundWeights, describe, map_buffer

_LOGITS_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class Predictor:
    """The models of one role and the buffer its logits go to."""

    def __init__(self, spec: JobSpec, models: dict[str, torch.nn.Module]) -> None:
        self.spec = spec
        self.models = models
        self.device = torch.device(spec.device)
        self.bound: BoundWeights | None = None
        self.logits = torch.empty(0, dtype=torch.uint8)
        self.setup: PredictorSetup | None = None

    def attach(self, setup: PredictorSetup, fds: list[int]) -> None:
        """Give the committed model tensors of its own, refreshed from the scorer's snapshot
        (mapped read-only) before each forward; map the logits buffer."""
        if setup.weights_bytes:
            snapshot = map_buffer(fds[0], writable=False)
            self.bound = BoundWeights(self.models["committed"], setup.tensors, snapshot)
        self.logits = map_buffer(fds[-1])
        self.setup = setup

    def forward(self, request: Predict, tokens: np.ndarray) -> object:
        """Run the forward on the inputs; whatever the model returned."""
        model = self.models[request.model]
        if request.model == "committed" and self.bound is not None:
            self.bound.load()
        inputs = torch.from_numpy(tokens.astype(np.int64)).to(self.device)  # (rows, cols)
        bfloat16 = self.spec.capture_dtype == "bfloat16"
        model.eval()
        with (
            torch.no_grad(),
            torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bfloat16),
        ):
            return model(inputs)

    def write(self, request: Predict, output: object) -> None:
        """Check the output's logits and copy them (rows, cols, width) into the buffer."""
        assert self.setup is not None
        logits = logits_of(output)
        expected = (request.rows, request.cols, self.setup.width)
        if tuple(logits.shape) != expected:
            raise OutputError(
                f"for input {(request.rows, request.cols)} the model returned logits of shape "
                f"{tuple(logits.shape)}; the probe saw width {self.setup.width}, so {expected} "
                "was expected"
            )
        dtype = _LOGITS_DTYPES[self.setup.logits_dtype]
        size = logits.numel() * (torch.finfo(dtype).bits // 8)
        self.logits[:size].view(dtype).view(expected).copy_(logits)


def run_predictor(channel: Channel, spec: JobSpec) -> None:
    """Build the role's models, then serve predictions until the channel closes."""
    referee = spec.job == "referee"
    built = build_scored_models(channel, spec, 2 if referee else 1)
    if not referee:
        serve_predictions(channel, spec, {"committed": built[0]})
        return
    from safetensors.torch import load_model

    with reporting(channel, "load_weights"):
        load_model(built[1], spec.final_weights_path, strict=True, device=spec.device)
    serve_predictions(channel, spec, {"twin": built[0], "trained": built[1]})


def serve_predictions(channel: Channel, spec: JobSpec, models: dict[str, torch.nn.Module]) -> None:
    """Report the first model's layout, take the buffers, then predict until the channel
    closes."""
    with reporting(channel, "layout"):
        tensors = describe(next(iter(models.values())))
    channel.send(ModelLayout(tensors=tensors))
    predictor = Predictor(spec, models)
    message, _ = channel.receive()
    assert isinstance(message, PredictorSetup)
    fds = channel.take_fds(2 if message.weights_bytes else 1)
    with reporting(channel, "layout"):
        predictor.attach(message, fds)
    while True:
        message, body = channel.receive()
        assert isinstance(message, Predict)
        tokens = channel.receive_tokens(message.rows, message.cols, body)
        with reporting(channel, "forward"):
            output = predictor.forward(message, tokens)
        with reporting(channel, "output"):
            predictor.write(message, output)
        del output
        channel.send(Predicted(index=message.index))
