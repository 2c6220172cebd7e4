"""Worker (sandboxed): the trainer — the miner's `train(ctx)` over the scored stream.

Also one rank of the ranks check (`ranks`), where the batches are not scored. After train(ctx)
returns, the model handed to `iter_train_batches` is saved as safetensors (never pickle) to the
path the supervisor chose.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from prism_eval.protocol import Channel, JobSpec, TrainDone
from prism_eval.worker.jobs import make_context, reporting
from prism_eval.worker.loader import load_build_model, load_script
from prism_eval.worker.process_group import RENDEZVOUS_PORT, one_rank_rendezvous
from prism_eval.worker.stream import ScoredStream


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
    """Run the miner's train(ctx) over the stream, then save the model it handed over."""
    if spec.world_size > 1:
        set_rendezvous(spec)
    else:  # before the scripts load: they may import init_process_group by name
        one_rank_rendezvous()
    bundle = Path(spec.bundle_dir)
    stream = ScoredStream(channel, spec.device, commits=spec.job == "trainer")
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
