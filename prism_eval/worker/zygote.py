"""Worker (sandboxed): the zygote — imports torch once, then forks every worker of a run.

`python -m prism_eval.worker.zygote --fd N`. Importing torch costs seconds of CPU per process; a
forked child shares what the zygote loaded. The zygote runs this package's code only — never a
bundle file, never a parallel torch op (a forked child could not use an OpenMP pool started
before the fork) — and holds nothing of an evaluation but the requests it is sent.

A child of a Spawn request starts a session of its own, takes its descriptors at the numbers the
supervisor names and closes every other one, takes exactly the environment and working directory
it was given, and runs the worker's entry point. That entry point applies every isolation layer
in the child, which has one thread (fork copies only the caller), before any miner byte loads:
the same order as a worker started with exec. The zygote reaps its children and reports how each
ended, since they are its children, not the supervisor's.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import select
import signal
import sys
import tempfile
import traceback
from typing import NoReturn

from prism_eval.protocol import Channel, ChannelClosed, Exited, Spawn, Spawned

_HIGH_FD = 512  # received descriptors move above every target before they take their numbers


def _preload() -> None:
    """Everything a worker imports before miner code, so children start with it loaded."""
    import numpy  # noqa: F401
    import safetensors.torch  # noqa: F401
    import torch

    import prism_eval.worker.__main__
    import prism_eval.worker.context
    import prism_eval.worker.isolation
    import prism_eval.worker.loader
    import prism_eval.worker.predictor
    import prism_eval.worker.probe
    import prism_eval.worker.trainer  # noqa: F401

    # Its first call imports some 800 modules (sympy, dynamo: about a second); every worker
    # makes it (loader.apply_determinism), so the zygote makes it once for all of them.
    torch.use_deterministic_algorithms(True)


def _place_descriptors(output: int, received: list[int], targets: list[int]) -> None:
    """stdin from /dev/null, stdout and stderr to `output`, received[i] at targets[i]; every
    other descriptor closed."""
    moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, _HIGH_FD) for fd in [output, *received]]
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(moved[0], 1)
    os.dup2(moved[0], 2)
    for fd, target in zip(moved[1:], targets, strict=True):
        os.dup2(fd, target)
    keep = sorted({0, 1, 2, *targets})
    for low, high in zip(keep, [*keep[1:], _HIGH_FD * 4], strict=True):
        os.closerange(low + 1, high)


def _become_worker(request: Spawn, output: int, received: list[int]) -> None:
    """In the forked child: take the descriptors, environment and directory, run the worker."""
    code = 1
    try:
        os.setsid()
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _place_descriptors(output, received, request.targets)
        os.chdir(request.cwd)
        os.environ.clear()
        os.environ.update(request.env)
        tempfile.tempdir = None  # TMPDIR is the child's own
        sys.argv = ["prism_eval.worker", "--fd", str(request.targets[0])]
        from prism_eval.worker.__main__ import main

        code = main()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _reap(channel: Channel) -> None:
    """Report every child that has ended."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        channel.send(Exited(pid=pid, returncode=os.waitstatus_to_exitcode(status)))


def serve(channel: Channel) -> None:
    """Fork on each Spawn until the supervisor closes the channel."""
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # the wakeup fd is what matters
    while True:
        ready, _, _ = select.select([channel.fileno(), wake_read], [], [])
        if wake_read in ready:
            os.read(wake_read, 4096)
            _reap(channel)
        if channel.fileno() not in ready:
            continue
        request, _ = channel.receive()
        if not isinstance(request, Spawn):
            raise RuntimeError(f"the zygote does not take {request.type}")
        output, *received = channel.take_fds(1 + len(request.targets))
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            channel.detach()  # its number is closed with the rest, never closed twice
            _become_worker(request, output, received)
        for fd in (output, *received):
            os.close(fd)
        channel.send(Spawned(request=request.request, pid=pid))


def main() -> NoReturn:
    """Preload, then serve; exit 0 when the supervisor closed the channel."""
    parser = argparse.ArgumentParser(prog="prism_eval.worker.zygote")
    parser.add_argument("--fd", type=int, required=True)
    args = parser.parse_args()
    channel = Channel(args.fd)
    _preload()
    with contextlib.suppress(ChannelClosed):
        serve(channel)
    # The interpreter's own teardown would unload the ~2,000 modules preloaded (0.8 s at the
    # end of every run, which the supervisor waits for); the zygote has nothing else to release.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    main()
