"""Supervisor: starting workers and the isolation around them — launch, policy, limits, host.

`launch` starts a child and talks to it under deadlines; `spawner` is the zygote's client;
`session` hands a worker its job and awaits Ready; `policy` says what a role may touch;
`host` checks the outer layers the evaluator itself runs under; `_cgroup` caps one worker.

May import: the supervisor's `config`, the protocol.
Offers: the names in `__all__`.
"""

from prism_eval.supervisor.sandbox.host import host_checks, inet_socket_refusal
from prism_eval.supervisor.sandbox.launch import (
    QuotaExceeded,
    Watch,
    WorkerProcess,
    WorkerTimeout,
    worker_environment,
)
from prism_eval.supervisor.sandbox.policy import prepare_worker_dirs, sandbox_spec
from prism_eval.supervisor.sandbox.session import (
    OnReady,
    await_ready,
    await_scorer,
    failure_error,
    launch_job,
    launch_scorer,
    lost_worker_error,
    start_job,
)
from prism_eval.supervisor.sandbox.spawner import Spawner

__all__ = [
    "OnReady",
    "QuotaExceeded",
    "Spawner",
    "Watch",
    "WorkerProcess",
    "WorkerTimeout",
    "await_ready",
    "await_scorer",
    "failure_error",
    "host_checks",
    "inet_socket_refusal",
    "launch_job",
    "launch_scorer",
    "lost_worker_error",
    "prepare_worker_dirs",
    "sandbox_spec",
    "start_job",
    "worker_environment",
]
