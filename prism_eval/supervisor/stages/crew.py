"""Supervisor: the children of the probe and train stages, started together.

The whole crew is launched when the probe stage begins: the trusted scorer (started with exec:
its torch import overlaps the rest), then, forked from the evaluation's zygote (spawner.py), the
probe worker (which goes on as the scored run's predictor), the trainer and the auditor — both
gated: they load nothing of the bundle until the probe has passed and the train stage says
`Go`. The scorer serves the audit stage too. Whoever ends the evaluation kills what is left
(`kill`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from prism_eval.protocol import JobSpec
from prism_eval.supervisor.config import EvalConfig
from prism_eval.supervisor.sandbox import Spawner, WorkerProcess, launch_job, launch_scorer


@dataclass(frozen=True)
class CrewJobs:
    """The job of each sandboxed child, and where each one's scratch dir is."""

    probe: JobSpec
    trainer: JobSpec
    auditor: JobSpec
    scratch: Callable[[str], Path]


@dataclass
class Crew:
    """Three sandboxed workers and the trusted scorer."""

    jobs: CrewJobs
    predictor: WorkerProcess  # the probe worker, then the scored run's predictor
    trainer: WorkerProcess
    auditor: WorkerProcess
    scorer: WorkerProcess

    def kill(self) -> None:
        """Kill every child (safe to call again)."""
        for child in (self.trainer, self.predictor, self.auditor, self.scorer):
            child.kill()


def launch_crew(
    jobs: CrewJobs,
    config: EvalConfig,
    probe_input: tuple[BaseModel, bytes],
    spawner: Spawner | None,
) -> Crew:
    """Launch every child without waiting for any (the probe gets its input with its job); the
    workers are forked from `spawner`'s zygote (started with exec without one)."""
    gated = {"gated": True}
    launched: list[WorkerProcess] = []
    try:
        launched.append(launch_scorer(jobs.scratch("scorer"), config))  # its import overlaps
        launched.append(
            launch_job(jobs.probe, jobs.scratch("probe"), config, [probe_input], spawner)
        )
        for spec in (jobs.trainer, jobs.auditor):
            gated_spec = spec.model_copy(update=gated)
            launched.append(launch_job(gated_spec, jobs.scratch(spec.job), config, (), spawner))
    except BaseException:
        for child in launched:
            child.kill()
        raise
    scorer, predictor, trainer, auditor = launched
    return Crew(jobs, predictor, trainer, auditor, scorer)
