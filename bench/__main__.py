"""Benchmarks: capture overhead, supervisor throughput, data hashing.

Every figure that matters is a ratio of two measurements taken side by side in this process,
so a busy machine slows both alike. This is a developer tool: it imports the example model and
the worker's capture directly, which the supervisor itself never does.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from prism_eval.config import load_config
from prism_eval.data import iter_documents, verify_data_dir
from prism_eval.evaluation import evaluate
from prism_eval.pipeline import RunRequest
from prism_eval.stream import StreamTally, pack_batches
from prism_eval.tokenizers import load_tokenizer
from prism_eval.worker.capture import batch_nats

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "bundles" / "ok_tiny_transformer"
DATA = ROOT / "examples" / "data"
BATCH, SEQ, STEPS = 16, 128, 30


def _load_example_model() -> torch.nn.Module:
    spec = importlib.util.spec_from_file_location("bench_architecture", EXAMPLE / "architecture.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    ctx = type("Ctx", (), {"vocab_size": 257, "max_seq_len": 256})()
    model: torch.nn.Module = module.build_model(ctx)
    return model


def _train_steps(capture: bool) -> float:
    """Seconds for STEPS training steps of the example, with or without the capture forward."""
    torch.manual_seed(0)
    model = _load_example_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    batches = [torch.randint(0, 256, (BATCH, SEQ)) for _ in range(STEPS)]
    started = time.perf_counter()
    for rows in batches:
        if capture:
            batch_nats(model, rows, 257)
        logits = model(rows[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, 257), rows[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return time.perf_counter() - started


def _median(function: Callable[[], float], repeats: int = 3) -> float:
    return statistics.median(function() for _ in range(repeats))


def bench_capture() -> dict[str, Any]:
    """Training with the capture forward vs the same loop without it (interleaved)."""
    _train_steps(False)  # warm-up
    plain, captured = [], []
    for _ in range(3):
        plain.append(_train_steps(False))
        captured.append(_train_steps(True))
    ratio = statistics.median(captured) / statistics.median(plain)
    return {"capture_overhead_ratio": round(ratio, 3), "steps": STEPS, "batch": [BATCH, SEQ]}


def bench_supervisor_stream() -> dict[str, Any]:
    """Tokenize + pack the embedded train split: supervisor tokens/s and bytes/s per tokenizer."""
    manifest = verify_data_dir(DATA, ["train"])
    results: dict[str, Any] = {}
    for name in ("byte", "gpt2"):
        tokenizer = load_tokenizer(name)
        started = time.perf_counter()
        tally = StreamTally()
        tokens = scored = 0
        for batch in pack_batches(
            iter_documents(DATA, manifest, "train"), tokenizer,
            batch_size=BATCH, seq_len=SEQ, byte_budget=1 << 40, tally=tally,
        ):  # fmt: skip
            tokens += batch.predicted_tokens
            scored += batch.bytes
        seconds = time.perf_counter() - started
        results[name] = {
            "tokens_per_s": round(tokens / seconds),
            "mb_per_s": round(scored / seconds / 1e6, 2),
        }
    return results


def bench_pipeline_vs_loop() -> dict[str, Any]:
    """The full train stage (worker + supervisor) vs the same loop in-process with capture."""
    budget = 128 * 1024
    config = load_config("cpu", None, {"byte_budget": budget})
    with tempfile.TemporaryDirectory() as out:
        signed = evaluate(
            RunRequest(bundle=EXAMPLE, data_dir=DATA, config=config), dict(os.environ)
        )
    record = signed.record
    assert record.run is not None, record.reason
    stage_rate = record.run.bytes / record.run.wall_seconds
    steps = record.run.batches
    in_process = _train_steps(True) / STEPS * steps
    loop_rate = record.run.bytes / in_process
    del out
    return {
        "train_stage_bytes_per_s": round(stage_rate),
        "in_process_capture_loop_bytes_per_s": round(loop_rate),
        "pipeline_overhead_ratio": round(loop_rate / stage_rate, 3),
        "note": "train stage includes worker start-up and importing torch",
    }


def bench_hashing() -> dict[str, Any]:
    """verify_data_dir over the embedded data vs hashlib over the same bytes."""
    shards = sorted(DATA.rglob("*.jsonl"))
    total = sum(p.stat().st_size for p in shards)

    def raw() -> float:
        started = time.perf_counter()
        for path in shards:
            hashlib.sha256(path.read_bytes()).hexdigest()
        return time.perf_counter() - started

    def verify() -> float:
        started = time.perf_counter()
        verify_data_dir(DATA)
        return time.perf_counter() - started

    raw_s, verify_s = _median(raw, 5), _median(verify, 5)
    return {
        "bytes": total,
        "raw_sha256_mb_per_s": round(total / raw_s / 1e6),
        "verify_vs_raw_ratio": round(verify_s / raw_s, 3),
    }


def bench_worker_start() -> dict[str, Any]:
    """Seconds to a ready worker with every isolation layer vs none (interleaved, median)."""
    from prism_eval.doctor import start_selftest

    config = load_config("cpu")
    isolated, bare = [], []
    for _ in range(5):
        isolated.append(start_selftest(config, isolated=True)[1])
        bare.append(start_selftest(config, isolated=False)[1])
    cost = statistics.median(isolated) - statistics.median(bare)
    return {
        "ready_isolated_s": round(statistics.median(isolated), 3),
        "ready_bare_s": round(statistics.median(bare), 3),
        "isolation_cost_ms": round(cost * 1000, 1),
        "target_ms": 200,
    }


def main() -> None:
    """Run every benchmark and print one JSON-ish report to stdout."""
    import json

    torch.set_num_threads(os.cpu_count() or 1)
    report = {
        "capture": bench_capture(),
        "supervisor_stream": bench_supervisor_stream(),
        "pipeline": bench_pipeline_vs_loop(),
        "hashing": bench_hashing(),
        "worker_start": bench_worker_start(),
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
