"""Scorer (trusted): process entry point, `python -m prism_eval.scorer --fd N`.

Receives its job, sets torch's threads and deterministic flags, reports ready, then serves
the supervisor until the channel closes. No sandbox: it runs no code but its own.
"""

from __future__ import annotations

import argparse
import contextlib
import sys

from prism_eval.protocol import Channel, ChannelClosed, Ready, ScorerJob


def main() -> int:
    """Serve one evaluation stage; 0 when the supervisor closed the channel."""
    parser = argparse.ArgumentParser(prog="prism_eval.scorer")
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    channel = Channel(args.fd)
    job, _ = channel.receive()
    if not isinstance(job, ScorerJob):
        return 2

    import torch

    from prism_eval.scorer.service import Scorer

    if job.threads > 0:
        torch.set_num_threads(job.threads)
    torch.use_deterministic_algorithms(True)
    channel.send(
        Ready(
            torch_version=torch.__version__,
            cuda_version=torch.version.cuda,
            device_name=torch.cuda.get_device_name(0) if job.device == "cuda" else "cpu",
            determinism={"torch_threads": str(torch.get_num_threads())},
            isolation=[],
        )
    )
    with contextlib.suppress(ChannelClosed):  # the supervisor is done with this stage
        Scorer(channel, job.device, job.threads).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
