"""Supervisor: the children of the probe and train stages, started together.

Each child imports torch when it starts (seconds of CPU). So that these start-ups overlap, the
whole crew is launched when the probe stage begins: the probe worker (which goes on as the
scored run's predictor), the trainer and the auditor — both gated: they load nothing of the
bundle until the probe has passed and the train stage says `Go` — and the trusted scorer, which
serves the audit stage too. Whoever ends the evaluation kills what is left (`kill`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel

from prism_eval.config import EvalConfig
from prism_eval.protocol import JobSpec
from prism_eval.sandbox.launch import WorkerProcess
from prism_eval.sandbox.session import launch_job, launch_scorer


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


def launch_crew(jobs: CrewJobs, config: EvalConfig, probe_input: tuple[BaseModel, bytes]) -> Crew:
    """Launch every child without waiting for any (the probe gets its input with its job)."""
    gated = {"gated": True}
    launched: list[WorkerProcess] = []
    try:
        launched.append(launch_job(jobs.probe, jobs.scratch("probe"), config, [probe_input]))
        for spec in (jobs.trainer, jobs.auditor):
            launched.append(
                launch_job(spec.model_copy(update=gated), jobs.scratch(spec.job), config)
            )
        launched.append(launch_scorer(jobs.scratch("scorer"), config))
    except BaseException:
        for child in launched:
            child.kill()
        raise
    return Crew(jobs, *launched)
