"""Supervisor: intake — a bundle's bytes read safely, its contract, and the friendly lint.

`bundle` extracts a zip, a directory or standard input under caps (docs/design.md §4 item 2);
`contract` checks prism.yaml in the reference schema, the scripts and entry points; `lint` is
the AST lint, a courtesy to honest miners and never a defence. The `_` modules serve `contract`.

May import: the supervisor's `config`, `prism_eval.errors`, `prism_eval.tokenizer_files`.
Offers: the names in `__all__`.
"""

from prism_eval.supervisor.intake.bundle import STDIN, Bundle, BundleFile, load_bundle, save_stream
from prism_eval.supervisor.intake.contract import Contract, check_contract
from prism_eval.supervisor.intake.lint import lint_bundle, raise_on_findings

__all__ = [
    "STDIN",
    "Bundle",
    "BundleFile",
    "Contract",
    "check_contract",
    "lint_bundle",
    "load_bundle",
    "raise_on_findings",
    "save_stream",
]
