"""Worker (sandboxed): the logits in a model's output, in the forms the reference accepts.

A model may return the logits tensor itself, a tuple or list whose first item is the logits
(nanoGPT returns `(logits, loss)`), or an object with a `.logits` tensor (Hugging Face style).
"""

from __future__ import annotations

from typing import Any

import torch


class OutputError(RuntimeError):
    """The model's output holds no usable logits tensor."""


def logits_of(output: Any) -> torch.Tensor:
    """The logits in `output`; a plain tensor (a subclass could rewrite what reads it)."""
    if isinstance(output, tuple | list) and output:
        output = output[0]
    elif not isinstance(output, torch.Tensor) and isinstance(
        getattr(output, "logits", None), torch.Tensor
    ):
        output = output.logits
    if not isinstance(output, torch.Tensor):
        raise OutputError(
            f"the model returned {type(output).__name__}; return the logits tensor "
            "(batch, seq, vocab), a tuple whose first item is it, or an object with .logits"
        )
    if type(output) is not torch.Tensor:
        raise OutputError(
            f"the model returned a tensor subclass ({type(output).__name__}); return a plain "
            "torch.Tensor of logits"
        )
    return output
