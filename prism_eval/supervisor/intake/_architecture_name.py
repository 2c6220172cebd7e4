"""Supervisor: the architecture's display name — `ARCHITECTURE_NAME = "..."` in architecture.py.

Read by parsing, never importing: only a plain top-level string assignment counts (the last one).
Moderated the way the reference challenge does, deterministically, so every validator shows the
same name: whitespace runs become one space, non-printable characters go, only ASCII letters,
digits, spaces and `-_.()[]/+&` stay, and the result is cut to 48 characters; empty means none.
"""

from __future__ import annotations

import ast

CONSTANT = "ARCHITECTURE_NAME"
MAX_LENGTH = 48
_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 -_.()[]/+&")


def declared_name(tree: ast.Module) -> str | None:
    """The string literal last assigned to ARCHITECTURE_NAME at the top level, if any."""
    value = None
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, assigned = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, assigned = [stmt.target], stmt.value
        else:
            continue
        if any(isinstance(t, ast.Name) and t.id == CONSTANT for t in targets):
            literal = isinstance(assigned, ast.Constant) and isinstance(assigned.value, str)
            value = str(assigned.value) if isinstance(assigned, ast.Constant) and literal else None
    return value


def moderate(raw: str) -> str | None:
    """The name as every validator shows it (see the module docstring)."""
    printable = "".join(ch for ch in " ".join(raw.split()) if ch.isprintable())
    kept = " ".join("".join(ch for ch in printable if ch in _ALLOWED).split())
    return kept[:MAX_LENGTH].strip() or None


def architecture_name(tree: ast.Module) -> str | None:
    """The moderated ARCHITECTURE_NAME of a parsed architecture script, or None."""
    raw = declared_name(tree)
    return moderate(raw) if raw is not None else None
