"""Worker (sandboxed): what every job shares — reporting failures, the context, the model.

Every miner call runs inside `reporting(where)`: whatever it raises becomes one `Failure`
message, and the supervisor decides what that means. Nothing here is trusted by the
supervisor; it checks every figure it receives.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from prism_eval.protocol import Channel, Failure, JobSpec, Where
from prism_eval.worker.context import PrismContext
from prism_eval.worker.loader import load_build_model
from prism_eval.worker.stream import ScoredStream
from prism_eval.worker.weights import unwrap


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


def make_context(
    spec: JobSpec, build: Callable[..., Any] | None, stream: ScoredStream | None
) -> PrismContext:
    """The context for this job."""
    return PrismContext(
        vocab_size=spec.vocab_size,
        sequence_length=spec.max_seq_len,
        max_parameters=spec.max_params,
        seed=spec.seed,
        device=spec.device,
        byte_budget=spec.byte_budget,
        token_budget=spec.byte_budget,
        artifacts_dir=spec.artifacts_dir,
        data_dir=spec.data_dir,
        reference_tokenizer_dir=spec.reference_tokenizer_dir,
        tokenizer=spec.tokenizer,
        bos_token_id=spec.bos_id,
        max_batch_size=spec.max_batch_size,
        rank=spec.rank,
        local_rank=spec.rank,
        world_size=spec.world_size,
        distributed_backend=_backend(spec) if spec.world_size > 1 else None,
        _build=build,
        _stream=stream,
    )


def _backend(spec: JobSpec) -> str:
    """What torch.distributed uses between ranks: nccl on GPUs, gloo on CPUs."""
    return "nccl" if spec.device == "cuda" else "gloo"


def build_scored_models(channel: Channel, spec: JobSpec, count: int = 1) -> list[torch.nn.Module]:
    """Import architecture.py and build `count` models under the forced seed, on the device."""
    with reporting(channel, "import"):
        build = load_build_model(
            Path(spec.bundle_dir), spec.architecture_file, spec.build_symbol, spec.seed
        )
    models = []
    for _ in range(count):
        with reporting(channel, "build_model"):
            model = build(make_context(spec, build, None))
        with reporting(channel, "not_a_module"):
            if not isinstance(model, torch.nn.Module):
                raise TypeError(
                    f"build_model returned {type(model).__name__}, not a torch.nn.Module"
                )
            # The module inside a torch.compile wrapper, as the trainer commits it: the same
            # tensors under the same names, and (eager backend) the same numbers.
            models.append(unwrap(model).to(spec.device))
    return models
