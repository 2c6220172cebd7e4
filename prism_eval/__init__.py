"""prism-eval: the hermetic evaluator for PRISM bundles.

Split along the trust boundary into three zones and the protocol between them
(docs/design.md opens with the tree): `supervisor/` is trusted and never imports torch or a
bundle file; `scorer/` is trusted, imports torch, never a bundle file; `worker/` runs miner
code in sandboxed processes. `protocol/`, `errors` and `tokenizer_files` are shared by all;
`cli` is the command line over the supervisor.

May import: nothing of its own (every zone imports this module).
Offers: `__version__`.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
