"""Worker (sandboxed): process entry point, `python -m prism_eval.worker --fd N`.

Order matters: receive the job, set seeds and deterministic flags, report ready, and only
then import miner code. The isolation layers (issue 3) are applied here, before that import.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

from prism_eval.protocol import JobSpec, Ready
from prism_eval.worker.channel import Channel
from prism_eval.worker.context import install_reference_alias
from prism_eval.worker.jobs import JobAborted, run_probe, run_train
from prism_eval.worker.loader import apply_determinism


def main() -> int:
    """Run one job and exit: 0 when it finished, 1 when it was aborted by a failure."""
    parser = argparse.ArgumentParser(prog="prism_eval.worker")
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    channel = Channel(args.fd)
    spec, _ = channel.receive()
    if not isinstance(spec, JobSpec):
        return 2
    os.makedirs(os.environ.get("TMPDIR", "/tmp"), exist_ok=True)
    flags = apply_determinism(spec.seed, spec.device, spec.threads)
    channel.send(
        Ready(
            torch_version=torch.__version__,
            cuda_version=torch.version.cuda,
            device_name=(torch.cuda.get_device_name(0) if spec.device == "cuda" else "cpu"),
            determinism=flags,
        )
    )
    install_reference_alias()
    try:
        if spec.job == "probe":
            run_probe(channel, spec)
        else:
            run_train(channel, spec)
    except JobAborted:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
