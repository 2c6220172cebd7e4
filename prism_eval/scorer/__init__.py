"""Scorer (trusted): turns logits into nats in a process of its own.

It imports torch and never a bundle file, never `prism_eval.worker`: its inputs are raw
numbers in shared buffers (logits a predictor wrote, weights a trainer committed) and targets
from the supervisor. Started as `python -m prism_eval.scorer --fd N`; nothing imports it.
`nats` holds the math, `service` the message loop.

May import: `prism_eval.protocol`, the standard library, torch, numpy.
Offers: nothing; it is started, not imported.
"""

__all__: list[str] = []
