"""Worker (sandboxed): determinism set-up and loading the miner's scripts by path.

Seeds and deterministic flags are set before any miner import (docs/design.md §5). The scripts are
loaded from the paths the supervisor named, under their own module names, so an installed
module cannot stand in for them and they cannot shadow an installed one.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import random
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch


def apply_determinism(seed: int, device: str, threads: int) -> dict[str, str]:
    """Seed every generator, force deterministic kernels; return the flags for the record."""
    if threads > 0:
        torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    reseed(seed)
    return {
        "use_deterministic_algorithms": str(torch.are_deterministic_algorithms_enabled()),
        "cudnn.benchmark": str(torch.backends.cudnn.benchmark),
        "cudnn.deterministic": str(torch.backends.cudnn.deterministic),
        "matmul.allow_tf32": str(torch.backends.cuda.matmul.allow_tf32),
        "cudnn.allow_tf32": str(torch.backends.cudnn.allow_tf32),
        "CUBLAS_WORKSPACE_CONFIG": os.environ.get("CUBLAS_WORKSPACE_CONFIG", ""),
        "PYTHONHASHSEED": os.environ.get("PYTHONHASHSEED", ""),
        "torch_threads": str(torch.get_num_threads()),
        "device": device,
    }


def reseed(seed: int) -> None:
    """Seed random, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def load_script(bundle_dir: Path, relative_path: str) -> ModuleType:
    """Execute one bundle script as a module named after its file stem, as the reference does
    (so `from architecture import build_model` finds src/architecture.py too); its folder joins
    the end of sys.path, so its helpers import and never shadow installed modules."""
    path = bundle_dir / relative_path
    for folder in (bundle_dir, path.parent):
        if str(folder) not in sys.path:
            sys.path.append(str(folder))
    name = Path(relative_path).stem
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {relative_path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def seeded(function: Callable[..., Any], seed: int) -> Callable[..., Any]:
    """Wrap build_model so every call starts from the forced seed."""

    @functools.wraps(function)
    def build_under_forced_seed(*args: Any, **kwargs: Any) -> Any:
        reseed(seed)
        return function(*args, **kwargs)

    return build_under_forced_seed


def load_build_model(
    bundle_dir: Path, architecture_file: str, symbol: str, seed: int
) -> Callable[..., Any]:
    """Load architecture.py and replace its build function by a re-seeding wrapper.

    `from architecture import build_model` in training.py then gets the wrapper too, so the
    initial weights depend on (bundle, seed) alone however the miner builds the model.
    """
    module = load_script(bundle_dir, architecture_file)
    build = getattr(module, symbol)
    wrapped = seeded(build, seed)
    setattr(module, symbol, wrapped)
    return wrapped
