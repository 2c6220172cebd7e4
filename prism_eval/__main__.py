"""Supervisor: `python -m prism_eval` is the `prism-eval` command."""

from prism_eval.cli import main

main()
