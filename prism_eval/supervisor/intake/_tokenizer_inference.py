"""Supervisor: which reference tokenizer a training script asks for, read from its source.

When prism.yaml declares no `tokenizer:`, the probe still needs the vocabulary before any miner
code runs, so the contract reads it from the training script: every call of `reference_tokenizer`
(`ctx.reference_tokenizer("gpt2")`) must name one reference tokenizer as a string literal, and all
calls must name the same one. Anything else is a rejection that says to declare it.
"""

from __future__ import annotations

import ast

from prism_eval.errors import Rejected
from prism_eval.tokenizer_files import TOKENIZER_NAMES

_DECLARE = "declare it in prism.yaml, e.g. `tokenizer: gpt2`"


def _calls(tree: ast.Module) -> list[ast.Call]:
    def named(func: ast.expr) -> bool:
        return (isinstance(func, ast.Attribute) and func.attr == "reference_tokenizer") or (
            isinstance(func, ast.Name) and func.id == "reference_tokenizer"
        )

    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and named(n.func)]


def inferred_tokenizer(tree: ast.Module, path: str) -> str | None:
    """The one tokenizer the script's reference_tokenizer calls name; None when it makes none."""
    names: dict[str, int] = {}
    for call in _calls(tree):
        argument = (
            call.args[0]
            if call.args
            else next((k.value for k in call.keywords if k.arg == "name"), None)
        )
        if not (isinstance(argument, ast.Constant) and isinstance(argument.value, str)):
            raise Rejected(
                "contract.tokenizer_not_literal",
                f"{path}:{call.lineno}: reference_tokenizer(...) is not called with a string "
                "literal, so the tokenizer cannot be known before the run",
                hint=_DECLARE,
            )
        if argument.value not in TOKENIZER_NAMES:
            raise Rejected(
                "contract.unknown_tokenizer",
                f"{path}:{call.lineno}: reference_tokenizer({argument.value[:40]!r}) names no "
                f"reference tokenizer ({', '.join(TOKENIZER_NAMES)})",
            )
        names.setdefault(argument.value, call.lineno)
    if len(names) > 1:
        found = ", ".join(f"{name!r} (line {line})" for name, line in names.items())
        raise Rejected(
            "contract.ambiguous_tokenizer",
            f"{path} asks for several tokenizers: {found}",
            hint=_DECLARE,
        )
    return next(iter(names), None)
