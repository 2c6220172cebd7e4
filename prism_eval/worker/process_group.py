"""Worker (sandboxed): a one-rank process group for loops that always set one up.

The reference launches every run with torchrun, so its loops may call
`torch.distributed.init_process_group()` even at world size 1. The scored run here is one rank
without torchrun's variables (a loop that checks `RANK` or `ctx.world_size` stays on its
single-process path, as it should), so a bare call would find no rendezvous. In the scored
trainer such a call gets one: rank 0 of a world of 1 on the loopback of the trainer's own
network namespace, where nothing else lives; the real backend (gloo, nccl) then runs as usual.
"""

from __future__ import annotations

import os
from typing import Any

import torch.distributed as dist

RENDEZVOUS_PORT = 29500  # torchrun's default; the namespace is the worker's own


def one_rank_rendezvous() -> None:
    """Give `init_process_group` calls without a rendezvous rank 0 of a world of 1."""
    original = dist.init_process_group

    def init_process_group(*args: Any, **kwargs: Any) -> Any:
        chosen = len(args) > 1 or any(  # init_method is the second positional argument
            kwargs.get(name) is not None for name in ("init_method", "store")
        )
        if not chosen and "MASTER_ADDR" not in os.environ:
            kwargs["init_method"] = f"tcp://127.0.0.1:{RENDEZVOUS_PORT}"
            for name, value in (("rank", 0), ("world_size", 1)):
                if kwargs.get(name, -1) == -1:  # -1: torch's "from the environment"
                    kwargs[name] = value
        return original(*args, **kwargs)

    init_process_group.__doc__ = original.__doc__
    dist.init_process_group = init_process_group
    # gloo and nccl pick the namespace's one interface instead of resolving the hostname.
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    os.environ.setdefault("NCCL_SOCKET_IFNAME", "lo")
