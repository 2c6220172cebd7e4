"""The scored step's budget: where a step's time goes, next to the loops it is measured against.

For a small model (the example transformer at 8 × 64 tokens) and a mid-size one (a few million
parameters, 256-token rows), measured side by side in this process (each in-process loop runs
once before and once after the evaluation, and the two are averaged, so drift cancels):

- the bare loop: the miner's step alone (forward, backward, clip, AdamW) on random batches;
- the reference runner's loop: the same, plus one no-grad forward and one `.item()` per batch,
  what the reference challenge's own runner pays for its (unguarded) score;
- the bare loop with the trainer's commit before each step (the harness's share of the
  trainer's time, without any other process);
- `prism-eval run` (1 MiB for the small model, 256 KiB for the mid one), as a validator runs it
  (a subprocess): the supervisor's per-phase timings (`run.step_ms` in its record), the train
  stage, and the whole evaluation with its fixed costs.

The floor of a scored step is the bare step plus one forward; the protocol's cost is whatever a
scored step takes beyond that. A developer tool: it imports the example's model directly, which
the supervisor never does.
"""

from __future__ import annotations

import importlib.util
import json
import mmap
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from prism_eval.protocol import place_tensors
from prism_eval.worker.weights import Committer, describe, map_buffer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "bundles" / "ok_tiny_transformer"
DATA = ROOT / "examples" / "data"
THREADS = 2  # the cpu profile's worker threads
WARM_UP_STEPS = 3


@dataclass(frozen=True)
class Model:
    """One benchmarked geometry: the example transformer at a width and depth, evaluated on
    `budget_bytes` of text; the in-process loops take `loop_steps` steps each."""

    name: str
    width: int
    layers: int
    batch_size: int
    seq_len: int
    budget_bytes: int
    loop_steps: int


MODELS = (
    Model("small", width=128, layers=2, batch_size=8, seq_len=64, budget_bytes=1 << 20,
          loop_steps=300),
    Model("mid", width=256, layers=3, batch_size=4, seq_len=256, budget_bytes=256 << 10,
          loop_steps=50),
)  # fmt: skip


def write_bundle(model: Model, folder: Path) -> Path:
    """The example bundle at `model`'s width, depth and geometry."""
    bundle = folder / model.name
    bundle.mkdir()
    architecture = (EXAMPLE / "architecture.py").read_text()
    default = "return TinyTransformer(ctx.vocab_size, ctx.max_seq_len)"
    assert default in architecture
    sized = (
        f"return TinyTransformer(ctx.vocab_size, ctx.max_seq_len, {model.width}, {model.layers})"
    )
    (bundle / "architecture.py").write_text(architecture.replace(default, sized))
    training = (EXAMPLE / "training.py").read_text()
    geometry = "batch_size=16, seq_len=128"
    assert geometry in training
    ours = f"batch_size={model.batch_size}, seq_len={model.seq_len}"
    (bundle / "training.py").write_text(training.replace(geometry, ours))
    (bundle / "prism.yaml").write_text((EXAMPLE / "prism.yaml").read_text())
    return bundle


def build_model_of(bundle: Path) -> torch.nn.Module:
    """The bundle's model, built in this process (a benchmark's liberty, never the supervisor's)."""
    spec = importlib.util.spec_from_file_location("bench_model", bundle / "architecture.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ctx = type("Ctx", (), {"vocab_size": 257, "max_seq_len": 256})()
    built: torch.nn.Module = module.build_model(ctx)
    return built


def shared_buffer(size: int) -> torch.Tensor:
    """A memfd of `size` bytes, mapped as a flat uint8 tensor."""
    fd = os.memfd_create("bench")
    os.ftruncate(fd, max(size, mmap.PAGESIZE))
    return map_buffer(fd)


def _committer(net: torch.nn.Module) -> Committer:
    """The trainer's commit of `net` into a shared buffer, as the harness makes it."""
    placed, size = place_tensors(describe(net))
    return Committer(net, placed, shared_buffer(size))


def loop_ms(bundle: Path, model: Model, kind: str) -> tuple[float, float]:
    """(ms per step, ms per no-grad forward) of the example's loop in this process. `kind`:
    `bare`; `reference`, each step first paying what the reference runner adds (forward and
    .item()); `commit`, each step first committing the weights as the trainer's harness does."""
    torch.manual_seed(0)
    net = build_model_of(bundle)
    committer = _committer(net) if kind == "commit" else None
    optimizer = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.01)
    steps = model.loop_steps
    batches = [torch.randint(0, 256, (model.batch_size, model.seq_len)) for _ in range(steps)]
    forward_s = 0.0
    started = time.perf_counter()
    for step, rows in enumerate([*batches[:WARM_UP_STEPS], *batches]):
        if step == WARM_UP_STEPS:  # allocator and kernels warm: start counting
            forward_s, started = 0.0, time.perf_counter()
        if committer is not None:
            committer.commit()
        if kind == "reference":
            before = time.perf_counter()
            net.eval()
            with torch.no_grad():
                logits = net(rows)  # (batch, seq, vocab)
            net.train()
            forward_s += time.perf_counter() - before
            F.cross_entropy(logits[:, :-1].reshape(-1, 257), rows[:, 1:].reshape(-1)).item()
        logits = net(rows[:, :-1])  # (batch, seq - 1, vocab)
        loss = F.cross_entropy(logits.reshape(-1, 257), rows[:, 1:].reshape(-1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        optimizer.step()
    seconds = time.perf_counter() - started
    return 1000 * seconds / steps, 1000 * forward_s / steps


@dataclass(frozen=True)
class Evaluation:
    """One `prism-eval run` seen from outside: its record and, in seconds from its start, when
    the first batch was scored (its first `train` progress line, printed at the first loss),
    when the last stage ended (its last stage line), and when it exited."""

    record: dict[str, Any]
    first_batch_s: float
    last_stage_s: float
    exit_s: float


def run_evaluation(bundle: Path, budget_bytes: int) -> Evaluation:
    """`prism-eval run` as a validator types it, its progress on stderr timed as it comes."""
    command = [sys.executable, "-m", "prism_eval", "run", str(bundle), "--data", str(DATA),
               "--byte-budget", str(budget_bytes)]  # fmt: skip
    started = time.perf_counter()
    first_batch_s = last_stage_s = 0.0
    with (
        tempfile.TemporaryFile("w+") as stdout,
        subprocess.Popen(
            command, stdout=stdout, stderr=subprocess.PIPE, text=True, cwd=ROOT
        ) as run,
    ):
        assert run.stderr is not None
        for line in run.stderr:
            if line.startswith("train ") and not first_batch_s:
                first_batch_s = time.perf_counter() - started
            if line.startswith("prism-eval: ") and ": passed (" in line:
                last_stage_s = time.perf_counter() - started
        run.wait()
        exit_s = time.perf_counter() - started
        stdout.seek(0)
        record: dict[str, Any] = json.load(stdout)["record"]
    assert record["status"] == "scored", record["reason"]
    return Evaluation(record, first_batch_s, last_stage_s, exit_s)


def _loops(bundle: Path, model: Model) -> dict[str, float]:
    bare, _ = loop_ms(bundle, model, "bare")
    reference, forward = loop_ms(bundle, model, "reference")
    committed, _ = loop_ms(bundle, model, "commit")
    return {"bare": bare, "reference": reference, "forward": forward, "commit": committed - bare}


def bench_model(model: Model, folder: Path) -> dict[str, Any]:
    """Loops before and after one evaluation; the step's budget against them."""
    torch.set_num_threads(THREADS)
    bundle = write_bundle(model, folder)
    before = _loops(bundle, model)
    evaluation = run_evaluation(bundle, model.budget_bytes)
    record, evaluation_s = evaluation.record, evaluation.exit_s
    after = _loops(bundle, model)
    loops = {name: (before[name] + after[name]) / 2 for name in before}
    run, stages = record["run"], {s["name"]: s["seconds"] for s in record["stages"]}
    steps = run["batches"]
    step_ms = run["step_ms"]
    scored_step_ms = 1000 * stages["train"] / steps
    floor_ms = loops["bare"] + loops["forward"]
    return {
        "geometry": [model.batch_size, model.seq_len],
        "budget_bytes": model.budget_bytes,
        "params": run["model_params"],
        "batches": steps,
        "ms_per_step": {
            "bare_loop": round(loops["bare"], 2),
            "forward": round(loops["forward"], 2),
            "floor": round(floor_ms, 2),
            "commit_in_process": round(loops["commit"], 2),
            "reference_runner": round(loops["reference"], 2),
            "scored": round(scored_step_ms, 2),
            "protocol": round(scored_step_ms - floor_ms, 2),
        },
        "phases_ms": step_ms,
        "ratios": {
            "scored_vs_bare": round(scored_step_ms / loops["bare"], 3),
            "train_stage_vs_floor": round(scored_step_ms / floor_ms, 3),
            "evaluation_vs_reference_runner": round(
                evaluation_s / (steps * loops["reference"] / 1000), 3
            ),
        },
        "fixed_s": {
            "evaluation": round(evaluation_s, 2),
            "start_to_first_batch": round(evaluation.first_batch_s, 2),
            "probe": round(stages["probe"], 2),
            "first_batch_in_train_stage": run["first_batch_seconds"],
            "audit": round(stages["audit"], 2),
            "last_stage_to_exit": round(evaluation.exit_s - evaluation.last_stage_s, 2),
        },
        "stream_sha256": record["stream"]["sha256"],
    }


def bench_step_budget() -> dict[str, Any]:
    """The step budget for every benchmarked model."""
    with tempfile.TemporaryDirectory(prefix="prism-bench-") as work:
        return {model.name: bench_model(model, Path(work)) for model in MODELS}


if __name__ == "__main__":
    json.dump(bench_step_budget(), sys.stdout, indent=2)
    sys.stdout.write("\n")
