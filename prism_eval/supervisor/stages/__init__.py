"""Supervisor: the stages that run miner code in workers — probe, train, audit, ranks.

`probe` builds the model in a worker and checks it; `train` is the forced-init re-execution,
scored step by step through `_capture` (one step across trainer, predictor, auditor, scorer),
`_serving` (the trainer's stream) and `_buffers` (the shared memfds); `audit` is the referee;
`ranks` reruns train(ctx) as N ranks; `crew` starts the children; `jobs` writes each worker's
job; `final_weights` reads the saved weights back; `step_clock` times a step.

May import: `sandbox`, `data`, `attest`, `intake`, the supervisor's `config` and `formula`, the
protocol.
Offers: the names in `__all__`.
"""

from prism_eval.supervisor.stages.audit import run_audit
from prism_eval.supervisor.stages.crew import Crew, CrewJobs, launch_crew
from prism_eval.supervisor.stages.final_weights import final_weights_cap, read_final_weights
from prism_eval.supervisor.stages.jobs import WorkerJobs
from prism_eval.supervisor.stages.probe import ProbeOutcome, probe_request, run_probe_stage
from prism_eval.supervisor.stages.ranks import RankJob, run_ranks_check
from prism_eval.supervisor.stages.step_clock import describe_step
from prism_eval.supervisor.stages.train import TrainOutcome, run_train_stage

__all__ = [
    "Crew",
    "CrewJobs",
    "ProbeOutcome",
    "RankJob",
    "TrainOutcome",
    "WorkerJobs",
    "describe_step",
    "final_weights_cap",
    "launch_crew",
    "probe_request",
    "read_final_weights",
    "run_audit",
    "run_probe_stage",
    "run_ranks_check",
    "run_train_stage",
]
