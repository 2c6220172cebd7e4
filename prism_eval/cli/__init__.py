"""Supervisor: the `prism-eval` command line. Click only: parse, call the supervisor, render.

stdout carries exactly one JSON document per command that has a result; logs and progress go
to stderr. Exit codes: 0 scored/ok, 1 verification failed, 2 usage, 3 rejected, 4 failed,
5 error. `_base` holds the group and the error handling, `_options` the options several
commands share; the commands are grouped by who uses them: `evaluate` (validators: run,
review, doctor), `records` (auditors: verify, export, report, leaderboard, schema),
`setup` (keygen, data).

May import: `prism_eval.supervisor` (its surface), `prism_eval.errors`, click. Only the
`review` command imports the networked `prism_eval.supervisor.review.client`.
Offers: `main`, the console script.
"""

from prism_eval.cli import evaluate, records, setup
from prism_eval.cli._base import main

__all__ = ["evaluate", "main", "records", "setup"]
