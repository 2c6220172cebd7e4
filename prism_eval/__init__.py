"""prism-eval: the hermetic evaluator for PRISM bundles.

The package is split along the trust boundary: `worker/` runs miner code in sandboxed
processes; everything else is the supervisor, which never imports a miner byte.
"""

__version__ = "0.1.0"
