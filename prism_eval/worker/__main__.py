"""Worker (sandboxed): process entry point, `python -m prism_eval.worker --fd N`, or `main()` in a
child the evaluation's zygote forked (zygote.py).

Order is the point of this file: receive the job; apply the isolation layers while the
process still has one thread; only then import torch (which starts threads; in a forked child
the zygote, which runs no miner code, has imported it already) and set seeds and deterministic
flags; install seccomp on every thread; report ready; and only then import miner code.
"""

from __future__ import annotations

import argparse
import os
import sys

from prism_eval.protocol import Channel, ChannelClosed, Go, JobSpec, Ready
from prism_eval.worker.isolation import apply_before_imports, apply_seccomp


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
    isolation = apply_before_imports(spec.sandbox)

    import torch

    from prism_eval.worker.compilation import compile_without_codegen
    from prism_eval.worker.context import install_reference_alias
    from prism_eval.worker.jobs import JobAborted
    from prism_eval.worker.loader import apply_determinism
    from prism_eval.worker.predictor import run_predictor
    from prism_eval.worker.probe import run_probe
    from prism_eval.worker.trainer import run_train

    flags = apply_determinism(spec.seed, spec.device, spec.threads)
    flags.update(compile_without_codegen())  # the sandbox runs no compiler
    # CUDA initializes (driver, ioctls, memfds) before the filter, never under it.
    device_name = torch.cuda.get_device_name(0) if spec.device == "cuda" else "cpu"
    isolation.append(apply_seccomp(spec.sandbox, isolation))
    channel.send(
        Ready(
            torch_version=torch.__version__,
            cuda_version=torch.version.cuda,
            device_name=device_name,
            determinism=flags,
            cudnn_version=(
                torch.backends.cudnn.version()  # type: ignore[no-untyped-call]
                if spec.device == "cuda"
                else None
            ),
            isolation=isolation,
        )
    )
    if spec.job == "selftest":
        return 0
    if spec.gated:  # nothing of the bundle loads before the supervisor says so
        try:
            go, _ = channel.receive()
        except ChannelClosed:
            return 0
        if not isinstance(go, Go):
            return 2
    install_reference_alias()
    jobs = {
        "probe": run_probe,
        "trainer": run_train,
        "ranks": run_train,
        "predictor": run_predictor,
        "auditor": run_predictor,
        "referee": run_predictor,
    }
    try:
        jobs[spec.job](channel, spec)
    except JobAborted:
        return 1
    except ChannelClosed:  # the supervisor is done with this worker
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
