"""Supervisor: the trusted evaluator — runs every stage; never imports torch or a bundle file.

One package per part of an evaluation: `intake` (the bundle), `data` (locked text, tokenizers,
the packed stream), `review` (the LLM gate), `stages` (the stages that run workers: probe,
train, audit, ranks), `sandbox` (starting workers, their isolation), `attest` (the signed
record), `present` (the report page, the leaderboard). Beside them: `config` (profiles),
`formula` (the score's math), `pipeline` (the stage order), `evaluation` (one run end to end),
`reproduce`, `doctor`, `progress`, `interrupts`.

May import: `prism_eval.protocol`, `prism_eval.errors`, `prism_eval.tokenizer_files`, any
library but torch. Never `prism_eval.worker` nor `prism_eval.scorer`: it starts them as processes.
Offers: what the command line calls. The networked review client is not part of it: only the
`review` command imports `prism_eval.supervisor.review.client`, so no other path loads it.
"""

from prism_eval.supervisor.attest import (
    SignedRecord,
    TrustedKeys,
    export_envelope,
    generate_keypair,
    signed_record_bytes,
    verify_record,
)
from prism_eval.supervisor.config import MAX_RANKS, load_config
from prism_eval.supervisor.data import lock_data_dir, manifest_sha256, prepare_data, verify_data_dir
from prism_eval.supervisor.doctor import diagnose, render_diagnosis
from prism_eval.supervisor.evaluation import evaluate
from prism_eval.supervisor.interrupts import sigterm_interrupts
from prism_eval.supervisor.pipeline import RunRequest, load_request_config
from prism_eval.supervisor.present import WeightScheme, build_leaderboard, render_report
from prism_eval.supervisor.reproduce import reproduce_record
from prism_eval.supervisor.review import DECISION_EXIT_CODES, signed_verdict_bytes

__all__ = [
    "DECISION_EXIT_CODES",
    "MAX_RANKS",
    "RunRequest",
    "SignedRecord",
    "TrustedKeys",
    "WeightScheme",
    "build_leaderboard",
    "diagnose",
    "evaluate",
    "export_envelope",
    "generate_keypair",
    "load_config",
    "load_request_config",
    "lock_data_dir",
    "manifest_sha256",
    "prepare_data",
    "render_diagnosis",
    "render_report",
    "reproduce_record",
    "signed_record_bytes",
    "signed_verdict_bytes",
    "sigterm_interrupts",
    "verify_data_dir",
    "verify_record",
]
