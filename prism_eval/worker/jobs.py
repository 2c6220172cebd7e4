"""Worker (sandboxed): the probe and train jobs, each a few steps around miner calls.

Every miner call runs inside `reporting(where)`: whatever it raises becomes one `Failure`
message, and the supervisor decides what that means. Nothing here is trusted by the
supervisor; it checks every figure it receives.
"""

from __future__ import annotations

import contextlib
import os
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch

from prism_eval.protocol import Failure, JobSpec, ProbeInput, ProbeReport, TrainDone
from prism_eval.worker.capture import ScoredStream
from prism_eval.worker.causality import probe_causality
from prism_eval.worker.channel import Channel
from prism_eval.worker.context import PrismContext
from prism_eval.worker.loader import load_build_model, load_script

Where = Literal[
    "import",
    "build_model",
    "not_a_module",
    "probe_forward",
    "train",
    "save",
    "load_weights",
    "audit_forward",
]


RENDEZVOUS_PORT = 29500  # torchrun's default


class JobAborted(Exception):
    """A Failure was sent; the job stops here."""


@contextlib.contextmanager
def reporting(channel: Channel, where: Where) -> Iterator[None]:
    """Turn any exception from miner code into one Failure message."""
    try:
        yield
    except JobAborted:
        raise
    except BaseException as exc:  # miner code may raise anything, SystemExit included
        trace = "".join(traceback.format_exception(exc))
        channel.send(
            Failure(
                where=where,
                exc_type=type(exc).__name__[:256],
                message=str(exc)[:4096],
                traceback=trace[-16384:],
            )
        )
        raise JobAborted from exc


def make_context(spec: JobSpec, build: object, stream: ScoredStream | None) -> PrismContext:
    """The context for this job."""
    return PrismContext(
        vocab_size=spec.vocab_size,
        max_seq_len=spec.max_seq_len,
        max_params=spec.max_params,
        seed=spec.seed,
        device=spec.device,
        byte_budget=spec.byte_budget,
        token_budget=spec.byte_budget,
        artifacts_dir=spec.artifacts_dir,
        data_dir=spec.data_dir,
        tokenizer=spec.tokenizer,
        bos_token_id=spec.bos_id,
        max_batch_size=spec.max_batch_size,
        rank=spec.rank,
        local_rank=spec.rank,
        world_size=spec.world_size,
        _build=build,  # type: ignore[arg-type]
        _stream=stream,
    )


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
    """Build the model under the forced seed, count it, and run the probe forward twice."""
    bundle = Path(spec.bundle_dir)
    with reporting(channel, "import"):
        build = load_build_model(bundle, spec.architecture_file, spec.build_symbol, spec.seed)
    ctx = make_context(spec, build, None)
    with reporting(channel, "build_model"):
        model = build(ctx)
    with reporting(channel, "not_a_module"):
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"build_model returned {type(model).__name__}, not a torch.nn.Module")
        model = model.to(spec.device)
    params, buffers = _count(model)
    message, body = channel.receive()
    assert isinstance(message, ProbeInput)
    arrays = channel.receive_tokens(2 * message.batch_size, message.seq_len, body)
    both = torch.from_numpy(arrays.astype("int64")).to(spec.device)  # (2 * batch, seq)
    inputs, source = both[: message.batch_size], both[message.batch_size :]
    with reporting(channel, "probe_forward"):
        model.eval()
        with torch.no_grad():
            first = model(inputs)
            second = model(inputs)
        if not isinstance(first, torch.Tensor) or not isinstance(second, torch.Tensor):
            raise TypeError(
                f"the model returned {type(first).__name__}; it must return a logits tensor "
                "(batch, seq, vocab)"
            )
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


def set_rendezvous(spec: JobSpec) -> None:
    """The variables torchrun would set, so `init_process_group(backend)` works unchanged.

    The port is fixed: the ranks share a network namespace of their own, where nothing else
    can hold it.
    """
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(RENDEZVOUS_PORT),
        RANK=str(spec.rank),
        LOCAL_RANK=str(spec.rank),
        GROUP_RANK="0",
        WORLD_SIZE=str(spec.world_size),
        LOCAL_WORLD_SIZE=str(spec.world_size),
        GLOO_SOCKET_IFNAME="lo",  # the namespace's one interface; no hostname lookup
    )


def run_train(channel: Channel, spec: JobSpec) -> None:
    """Run the miner's train(ctx) over the scored stream (or this rank's shard of the ranks
    check's stream), then save the model it trained."""
    if spec.world_size > 1:
        set_rendezvous(spec)
    bundle = Path(spec.bundle_dir)
    stream = ScoredStream(channel, spec.device, spec.vocab_size)
    with reporting(channel, "import"):
        build = load_build_model(bundle, spec.architecture_file, spec.build_symbol, spec.seed)
        train = getattr(load_script(bundle, spec.training_file), spec.train_symbol)
    ctx = make_context(spec, build, stream)
    with reporting(channel, "train"):
        train(ctx)
    if stream.model is not None:
        with reporting(channel, "save"):
            save_weights(stream.model, Path(spec.final_weights_path))
    channel.send(TrainDone(batches_consumed=stream.consumed))


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """Save the scored model's state as safetensors (never pickle), replacing what is there."""
    from safetensors.torch import save_model

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # a miner-made file or link at this path is discarded, never followed
    save_model(model, str(path))
