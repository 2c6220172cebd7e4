"""The AST lint: each rule fires with its id and line; honest code passes untouched."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from prism_eval.errors import Rejected
from prism_eval.supervisor.config import IntakeLimits
from prism_eval.supervisor.intake.bundle import load_bundle
from prism_eval.supervisor.intake.contract import check_contract
from prism_eval.supervisor.intake.lint import (
    RULES,
    LintFinding,
    lint_bundle,
    match_reference,
    raise_on_findings,
)
from tests.conftest import ROOT

EXAMPLES = ROOT / "examples" / "bundles"
ARCH = "def build_model(ctx):\n    return None\n"
TRAIN_HEAD = "def train(ctx):\n    return None\n"


def lint_files(
    tmp_path: Path, files: dict[str, str], limits: IntakeLimits | None = None
) -> list[LintFinding]:
    """Write a directory bundle, load it, check its contract and lint it."""
    files = {"architecture.py": ARCH, "training.py": TRAIN_HEAD, **files}
    source = tmp_path / "src"
    for name, text in files.items():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        (source / name).write_text(text)
    dest = tmp_path / "dest"
    dest.mkdir()
    bundle = load_bundle(source, dest, limits or IntakeLimits())
    return lint_bundle(bundle, check_contract(bundle))


def lint_training(tmp_path: Path, body: str) -> list[LintFinding]:
    """Lint a training.py made of `train(ctx)` followed by `body`."""
    return lint_files(tmp_path, {"training.py": TRAIN_HEAD + textwrap.dedent(body)})


def hits(findings: list[LintFinding]) -> set[tuple[str, int]]:
    return {(f.rule_id, f.line) for f in findings}


# Each case: code appended after the two-line train(ctx), the rule id and the line it fires on.
CASES = [
    ("import subprocess\n", "lint.process", 3),
    ("import os\nos.system('ls')\n", "lint.process", 4),
    ("import os\nos.execv('/bin/sh', [])\n", "lint.process", 4),
    ("import os\npid = os.fork()\n", "lint.process", 4),
    ("import multiprocessing\n", "lint.process", 3),
    ("import torch.multiprocessing as mp\n", "lint.process", 3),
    ("import pty\n", "lint.process", 3),
    ("import socket\n", "lint.network", 3),
    ("from urllib.request import urlopen\n", "lint.network", 3),
    ("import requests\n", "lint.network", 3),
    ("import torch\ntorch.hub.load('a', 'b')\n", "lint.network", 4),
    ("import ctypes\n", "lint.ffi", 3),
    ("import torch\ntorch.ops.load_library('x.so')\n", "lint.ffi", 4),
    ("from torch.utils import cpp_extension\n", "lint.ffi", 3),
    ("import pickle\n", "lint.deserialization", 3),
    ("import marshal\n", "lint.deserialization", 3),
    ("import torch\nstate = torch.load('w.pt')\n", "lint.deserialization", 4),
    ("import torch\nm = torch.jit.load('m.pt')\n", "lint.deserialization", 4),
    ("import numpy as np\nx = np.load('a.npy', allow_pickle=True)\n", "lint.deserialization", 4),
    ("import importlib\nm = importlib.import_module('os')\n", "lint.introspection", 4),
    ("import inspect\nf = inspect.currentframe()\n", "lint.introspection", 4),
    ("from inspect import stack\n", "lint.introspection", 3),
    ("import gc\nobjects = gc.get_objects()\n", "lint.introspection", 4),
    ("import gc\ngc.callbacks.append(print)\n", "lint.introspection", 4),
    ("import builtins\n", "lint.introspection", 3),
    ("import sys\nf = sys._getframe(1)\n", "lint.introspection", 4),
    ("import sys\nsys.modules['torch'] = None\n", "lint.introspection", 4),
    ("import sys\nsys.modules.pop('torch')\n", "lint.introspection", 4),
    ("x = eval('1')\n", "lint.dynamic_code", 3),
    ("exec('x = 1')\n", "lint.dynamic_code", 3),
    ("c = compile('1', 'f', 'eval')\n", "lint.dynamic_code", 3),
    ("m = __import__('os')\n", "lint.dynamic_code", 3),
    ("breakpoint()\n", "lint.dynamic_code", 3),
    ("import os\nfd = os.open('x', 0)\n", "lint.file_access", 4),
    ("import os\nos.symlink('/proc', 'p')\n", "lint.file_access", 4),
    ("import torch\nt = torch.from_file('shard.bin', size=10)\n", "lint.file_access", 4),
    ("import torch\ns = torch.UntypedStorage.from_file('x', False, 9)\n", "lint.file_access", 4),
    ("x = 'QUJD' * 1\ny = '" + "QUJD" * 600 + "'\n", "lint.embedded_data", 4),
    ("w = b'" + "\\x01" * 3000 + "'\n", "lint.embedded_data", 3),
    ("t = [" + "0.5, " * 600 + "]\n", "lint.embedded_data", 3),
    ("t = (\n" + "    (1, -2, 3),\n" * 200 + ")\n", "lint.embedded_data", 3),
    ("s = [\n" + ("    '" + "word " * 4000 + "',\n") * 2 + "]\n", "lint.embedded_data", 3),
    ("x = ().__class__.__bases__[0].__subclasses__()\n", "lint.dunder_access", 3),
    ("g = train.__globals__\n", "lint.dunder_access", 3),
    ("b = __builtins__\n", "lint.dunder_access", 3),
    ("c = train.__code__\n", "lint.dunder_access", 3),
    ("v = getattr(train, '__globals__')\n", "lint.dunder_access", 3),
    ("import torch\nd = torch.__dict__\n", "lint.dunder_access", 4),
    ("import torch\nname = 'load'\nf = getattr(torch, name)\n", "lint.dynamic_getattr", 5),
    ("import os\nf = getattr(os, 'system')\n", "lint.process", 4),
    ("import torch\ntorch.nn.functional.log_softmax = abs\n", "lint.monkeypatch", 4),
    ("import torch.nn.functional as F\nF.cross_entropy = abs\n", "lint.monkeypatch", 4),
    ("import torch\nsetattr(torch, 'load', abs)\n", "lint.monkeypatch", 4),
    ("import torch\ndel torch.Tensor.backward\n", "lint.monkeypatch", 4),
    ("from torch import nn\nnn.Module.__call__ = abs\n", "lint.monkeypatch", 4),
]


@pytest.mark.parametrize(("body", "rule_id", "line"), CASES, ids=[c[0][:60] for c in CASES])
def test_rule_fires_with_its_id_and_line(
    tmp_path: Path, body: str, rule_id: str, line: int
) -> None:
    findings = lint_training(tmp_path, body)
    assert (rule_id, line) in hits(findings)
    finding = next(f for f in findings if (f.rule_id, f.line) == (rule_id, line))
    assert finding.path == "training.py"
    assert finding.col >= 1
    assert RULES[rule_id].explanation in finding.message
    assert finding.hint == RULES[rule_id].hint


@pytest.mark.parametrize(
    ("body", "rule_id", "line"),
    [
        ("import torch as t\nt.load('w.pt')\n", "lint.deserialization", 4),
        ("from torch import load as l\nl('w.pt')\n", "lint.deserialization", 4),
        ("import subprocess as sp\nsp.run(['ls'])\n", "lint.process", 4),
        ("from os import system as s\ns('ls')\n", "lint.process", 4),
        ("import os as o\nrun = o.popen\nrun('ls')\n", "lint.process", 5),
        ("import torch\nt = torch\nt.hub.load('a', 'b')\n", "lint.network", 5),
        ("import numpy as xp\nxp.load('a', allow_pickle=True)\n", "lint.deserialization", 4),
        ("def f():\n    import pickle as p\n    return p.loads(b'')\n", "lint.deserialization", 5),
    ],
)
def test_import_aliases_are_resolved(tmp_path: Path, body: str, rule_id: str, line: int) -> None:
    assert (rule_id, line) in hits(lint_training(tmp_path, body))


HONEST_TRAINING = """
import collections
import dataclasses
import functools
import itertools
import math
import os
import random
import time
from typing import Any

import einops
import torch
import torch.nn.functional as F
from torch import nn, optim

from architecture import build_model


@dataclasses.dataclass
class Settings:
    lr: float = float(os.environ.get("LR", "3e-4"))
    steps: int = int(os.getenv("STEPS", "10"))


class Mixer(nn.Module):
    def __init__(self, width: int, depth: int) -> None:
        super().__init__()
        for i in range(depth):
            setattr(self, f"block_{i}", nn.Linear(width, width))
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i in range(self.depth):
            x = getattr(self, f"block_{i}")(x)
        return einops.rearrange(x, "b t c -> b t c")


def train(ctx: Any) -> None:
    settings = Settings()
    random.seed(ctx.seed)
    model = build_model(ctx).to(ctx.device)
    optimizer = optim.AdamW(model.parameters(), lr=settings.lr)
    schedule = optim.lr_scheduler.LambdaLR(optimizer, lambda step: min(1.0, step / 10))
    handle = model.register_forward_hook(lambda module, args, out: None)
    handle.remove()
    counts = collections.Counter()
    started = time.monotonic()
    name = "weight"
    for batch in itertools.islice(ctx.iter_train_batches(model, batch_size=8, seq_len=64), 100):
        model.train()
        logits = model(batch[:, :-1])  # (B, T, V)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), batch[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        counts["steps"] += 1
        scale = functools.reduce(lambda a, b: a * b, [1.0, math.sqrt(2.0)])
        _ = getattr(model, name, None), scale
    model.eval()
    with torch.no_grad():
        torch.save(model.state_dict(), os.path.join(ctx.artifacts_dir, "extra.pt"))
    _ = time.monotonic() - started
"""


def test_honest_code_produces_no_finding(tmp_path: Path) -> None:
    files = {"training.py": HONEST_TRAINING, "architecture.py": _example_architecture()}
    assert lint_files(tmp_path, files) == []


def _example_architecture() -> str:
    return (EXAMPLES / "reject_lint_subprocess" / "architecture.py").read_text()


def test_lint_example_is_rejected_for_the_subprocess_call(tmp_path: Path) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    bundle = load_bundle(EXAMPLES / "reject_lint_subprocess", dest, IntakeLimits())
    findings = lint_bundle(bundle, check_contract(bundle))
    assert {f.rule_id for f in findings} == {"lint.process"}
    assert any("subprocess.run" in f.message for f in findings)
    with pytest.raises(Rejected) as caught:
        raise_on_findings(findings)
    assert caught.value.rule_id == "lint.process"


def test_architecture_importing_training_is_flagged(tmp_path: Path) -> None:
    architecture = ARCH + "from training import train\n"
    findings = lint_files(tmp_path, {"architecture.py": architecture})
    assert ("lint.imports_training", 3) in hits(findings)


def test_bundle_local_modules_may_be_patched(tmp_path: Path) -> None:
    body = "import helpers\nhelpers.DEBUG = True\nfrom helpers import pickle_free\n"
    files = {"training.py": TRAIN_HEAD + body, "helpers.py": "DEBUG = False\npickle_free = 1\n"}
    assert lint_files(tmp_path, files) == []


def test_every_python_file_is_linted(tmp_path: Path) -> None:
    findings = lint_files(tmp_path, {"lib/util.py": "import socket\n", "notes.txt": "import os"})
    assert [(f.path, f.rule_id, f.line) for f in findings] == [("lib/util.py", "lint.network", 1)]


def test_helper_with_syntax_error_is_a_finding(tmp_path: Path) -> None:
    findings = lint_files(tmp_path, {"helpers.py": "x = (\n"})
    assert [f.rule_id for f in findings] == ["lint.syntax_error"]


def test_deeply_nested_expression_does_not_crash_the_lint(tmp_path: Path) -> None:
    deep = "x = " + "1 + " * 100_000 + "1\n"
    findings = lint_files(
        tmp_path, {"helpers.py": deep}, IntakeLimits(max_file_bytes=2**20, max_total_bytes=2**21)
    )
    assert [f.rule_id for f in findings] == ["lint.syntax_error"]
    nested = "x = " + "[" * 150 + "]" * 150 + "\n"
    assert lint_files(tmp_path / "n", {"helpers.py": nested}) == []


def test_findings_are_sorted_by_path_line_col(tmp_path: Path) -> None:
    findings = lint_files(
        tmp_path,
        {
            "training.py": TRAIN_HEAD + "import pickle\nimport socket\n",
            "architecture.py": ARCH + "import ctypes\n",
        },
    )
    keys = [(f.path, f.line, f.col) for f in findings]
    assert keys == sorted(keys)
    assert [f.path for f in findings] == ["architecture.py", "training.py", "training.py"]


def test_raise_on_findings_summarizes_and_caps_evidence() -> None:
    raise_on_findings([])  # nothing to say: no error
    findings = [
        LintFinding(
            rule_id="lint.process",
            path="training.py",
            line=i,
            col=1,
            message=f"finding {i}",
            hint="fix it",
        )
        for i in range(1, 61)
    ]
    with pytest.raises(Rejected) as caught:
        raise_on_findings(findings)
    error = caught.value
    assert error.rule_id == "lint.process"
    assert error.message == "60 lint finding(s); first: training.py:1: finding 1"
    assert len(error.evidence) == 50
    assert error.evidence[0] == "training.py:1:1 lint.process finding 1 (fix it)"


@pytest.mark.parametrize(
    ("name", "rule_id"),
    [
        ("os.environ.get", None),
        ("os.path.join", None),
        ("torch.nn.functional.cross_entropy", None),
        ("torch.compile", None),
        ("os.spawnlp", "lint.process"),
        ("torch.storage.UntypedStorage.from_file", "lint.file_access"),
        ("urllib.request.urlopen", "lint.network"),
    ],
)
def test_reference_table_matches_names_and_prefixes(name: str, rule_id: str | None) -> None:
    assert match_reference(name) == rule_id


def test_open_is_flagged_in_the_architecture_but_allowed_in_the_training_loop(
    tmp_path: Path,
) -> None:
    findings = lint_files(
        tmp_path,
        {
            "architecture.py": "f = open('/data/train.jsonl')\n" + ARCH,
            "training.py": TRAIN_HEAD + "with open('checkpoint.txt', 'w') as out:\n    pass\n",
        },
    )
    assert [(f.path, f.rule_id, f.line) for f in findings] == [
        ("architecture.py", "lint.file_access", 1)
    ]


ASSETS = ROOT / "tests" / "assets" / "bundles"


@pytest.mark.parametrize(
    "bundle",
    [
        "ok_nanogpt_style",  # inspect.signature, globals(), TF32 flags, print, dataclasses
        "lint_ok_mingpt_style",  # self.__dict__, logging, literal_eval, setattr on own objects
        "lint_ok_muon_style",  # an Optimizer subclass, torch.compile, torch.distributed, os.environ
        "ok_reference_style",  # the reference's interface import, DDP, reference_tokenizer
        "ok_reference_style_paths",  # helpers imported by plain name from a sub-folder
    ],
)
def test_widely_used_training_code_passes_the_lint(tmp_path: Path, bundle: str) -> None:
    """False-positive guard: code in the style of nanoGPT, minGPT and Muon, written for these
    tests, must pass; the lint is a courtesy, not the boundary."""
    dest = tmp_path / "dest"
    dest.mkdir()
    loaded = load_bundle(ASSETS / bundle, dest, IntakeLimits())
    assert lint_bundle(loaded, check_contract(loaded)) == []
