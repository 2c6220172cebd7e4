"""Worker (sandboxed): `torch.compile` without code generation.

Inductor, torch.compile's default backend, builds the code it generates with a C++ compiler (CPU)
or Triton's toolchain (GPU), started as a new program; the sandbox refuses that (seccomp denies
`execve`), so a loop written with `torch.compile(model)` would fail. In its place the worker puts
TorchDynamo's `eager` backend: the model is still captured as graphs, which run as ordinary torch
ops, so the numbers are those of the uncompiled model and only the speed-up is lost. A backend the
bundle names other than inductor is left as it is. The record's environment says so.
"""

from __future__ import annotations

from typing import Any

import torch

BACKEND = "eager"
INDUCTOR_ONLY = ("mode", "options")  # inductor's tuning knobs, meaningless to eager


def compile_without_codegen() -> dict[str, str]:
    """Make torch.compile (and torch.compiler.compile, which calls it) use the eager backend
    where inductor was asked for; return the fact for the record's environment."""
    original = torch.compile

    def compile_without_inductor(model: Any = None, **kwargs: Any) -> Any:
        if kwargs.get("backend") in (None, "inductor"):
            kwargs["backend"] = BACKEND
            for knob in INDUCTOR_ONLY:
                kwargs.pop(knob, None)
        return original(model, **kwargs)

    compile_without_inductor.__doc__ = original.__doc__
    torch.compile = compile_without_inductor
    return {"torch_compile_backend": BACKEND}
