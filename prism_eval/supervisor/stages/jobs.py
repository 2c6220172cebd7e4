"""Supervisor: what each worker of a run is told — its JobSpec, its directories, its sandbox.

Every role's job (probe, trainer, predictor, auditor, referee, ranks) is built here from the
run's config, bundle, contract and tokenizer: the same context fields for all, and for each
its own sandbox (supervisor/sandbox/policy.py) and its own directories under the run's work
dir. No worker may reach the locked data, the held-out data or the signing key (`protected`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from prism_eval.protocol import JobSpec, Role
from prism_eval.supervisor.config import EvalConfig
from prism_eval.supervisor.data import Tokenizer, tokenizer_dir
from prism_eval.supervisor.intake import Bundle, Contract
from prism_eval.supervisor.sandbox import prepare_worker_dirs, sandbox_spec
from prism_eval.supervisor.stages.ranks import RankJob


@dataclass(frozen=True)
class WorkerJobs:
    """The jobs of one run's workers."""

    work_dir: Path
    config: EvalConfig
    bundle: Bundle
    contract: Contract
    tokenizer: Tokenizer
    data_dir: Path  # the locked data; its train split is readable only under data_access
    protected: tuple[Path, ...]  # what no worker may reach

    def scratch(self, job: str) -> Path:
        path = self.work_dir / f"scratch-{job}"
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def artifacts_dir(self, name: str = "artifacts") -> Path:
        path = self.work_dir / name
        path.mkdir(mode=0o700, exist_ok=True)
        return path

    def rank(self, rank: int, nproc: int) -> RankJob:
        """One rank of the ranks check: CPU, its share of the threads, its own directories."""
        threads = max(1, (self.config.threads or os.cpu_count() or 1) // nproc)
        budget = self.config.ranks_byte_budget
        config = self.config.model_copy(
            update={"device": "cpu", "threads": threads, "byte_budget": budget}
        )
        scratch = self.scratch(f"rank{rank}")
        artifacts = self.artifacts_dir(f"artifacts-rank{rank}")
        spec = self.spec("ranks", config=config, scratch=scratch, artifacts=artifacts)
        spec = spec.model_copy(update={"rank": rank, "world_size": nproc})
        return RankJob(spec, scratch)

    def spec(
        self,
        job: Role,
        *,
        config: EvalConfig | None = None,
        scratch: Path | None = None,
        artifacts: Path | None = None,
    ) -> JobSpec:
        config = config or self.config
        # Only loops may read the train split (data_access: readable); a predictor never.
        readable = config.data_access == "readable" and job in ("trainer", "ranks")
        artifacts = artifacts or self.artifacts_dir()
        scratch = scratch or self.scratch(job)
        readable_data = self.data_dir / "train" if readable else None
        tokenizers = tokenizer_dir()
        reference_tokenizers = tokenizers if tokenizers.is_dir() else None
        sandbox = sandbox_spec(
            job,
            config,
            bundle_dir=self.bundle.root,
            scratch_dir=scratch,
            artifacts_dir=artifacts,
            readable_data_dir=readable_data,
            reference_tokenizer_dir=reference_tokenizers,
            protected=list(self.protected),
        )
        prepare_worker_dirs(self.work_dir, [scratch, artifacts], sandbox.drop_to_uid)
        return JobSpec(
            job=job,
            bundle_dir=str(self.bundle.root),
            architecture_file=self.contract.architecture_path,
            training_file=self.contract.training_path,
            build_symbol=self.contract.build_symbol,
            train_symbol=self.contract.train_symbol,
            seed=config.seed,
            device=config.device,
            threads=config.threads,
            capture_dtype=config.capture_dtype,
            tokenizer=self.tokenizer.name,
            vocab_size=self.tokenizer.vocab_size,
            bos_id=self.tokenizer.bos_id,
            max_seq_len=config.max_seq_len,
            max_batch_size=config.max_batch_size,
            max_params=config.max_params,
            byte_budget=config.byte_budget,
            artifacts_dir=str(artifacts),
            data_dir=str(readable_data) if readable_data else None,
            reference_tokenizer_dir=str(reference_tokenizers) if reference_tokenizers else None,
            final_weights_path=str(artifacts / "final.safetensors"),
            sandbox=sandbox,
        )
