"""Benchmarks: the scored run's costs, supervisor throughput, data hashing.

Every figure that matters is a ratio of two measurements taken side by side in this process,
so a busy machine slows both alike. This is a developer tool: it imports the example model, the
scorer's math and the worker's commit code directly, which the supervisor itself never does.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from bench.step_budget import bench_step_budget, build_model_of, shared_buffer
from prism_eval.protocol import place_tensors
from prism_eval.supervisor.config import load_config
from prism_eval.supervisor.data.locked import iter_documents, verify_data_dir
from prism_eval.supervisor.data.packing import StreamTally, pack_batches
from prism_eval.supervisor.data.tokenizers import load_tokenizer
from prism_eval.supervisor.evaluation import evaluate
from prism_eval.supervisor.pipeline import RunRequest
from prism_eval.worker.weights import Committer, describe

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "bundles" / "ok_tiny_transformer"
DATA = ROOT / "examples" / "data"
BATCH, SEQ = 16, 128


def _median(function: Callable[[], float], repeats: int = 3) -> float:
    return statistics.median(function() for _ in range(repeats))


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


def _evaluate(budget: int, **overrides: Any) -> Any:
    config = load_config("cpu", None, {"byte_budget": budget, **overrides})
    record = evaluate(RunRequest(bundle=EXAMPLE, data_dir=DATA, config=config), dict(os.environ))
    assert record.record.run is not None, record.record.reason
    return record.record


def bench_prefix_audit() -> dict[str, Any]:
    """Seconds per audited position: the same evaluation with every step audited and with the
    fewest, side by side (the difference is the audit's cost)."""
    budget = 64 * 1024
    everything = _evaluate(budget, prefix_audit_rate=1.0, spot_check_rate=0.02)
    fewest = _evaluate(budget, prefix_audit_rate=0.01, spot_check_rate=0.02)
    assert everything.prefix_audit is not None and fewest.prefix_audit is not None
    extra_s = everything.run.wall_seconds - fewest.run.wall_seconds
    extra_positions = everything.prefix_audit.positions - fewest.prefix_audit.positions
    return {
        "audited_positions": [everything.prefix_audit.positions, fewest.prefix_audit.positions],
        "train_stage_s": [everything.run.wall_seconds, fewest.run.wall_seconds],
        "s_per_audited_position": round(extra_s / max(1, extra_positions), 5),
        "rate_1_vs_rate_0.01": round(everything.run.wall_seconds / fewest.run.wall_seconds, 3),
    }


def bench_handoff() -> dict[str, Any]:
    """Logits into the shared buffer (the predictor's write) vs memcpy of the same bytes into
    private memory; gpt2-wide logits of 8 × 128 positions."""
    logits = torch.randn(8, 128, 50257)
    size = logits.numel() * 4
    shared = shared_buffer(size)[:size].view(torch.float32).view(logits.shape)
    private = torch.empty_like(logits)
    shared.copy_(logits)  # first touch: the pages exist from the first batch on

    def copy_into(target: torch.Tensor) -> Callable[[], float]:
        def run() -> float:
            started = time.perf_counter()
            target.copy_(logits)
            return time.perf_counter() - started

        return run

    handoff_s, memcpy_s = _median(copy_into(shared), 7), _median(copy_into(private), 7)
    return {
        "bytes": size,
        "handoff_gb_per_s": round(size / handoff_s / 1e9, 2),
        "memcpy_gb_per_s": round(size / memcpy_s / 1e9, 2),
        "handoff_vs_memcpy": round(handoff_s / memcpy_s, 3),
    }


def _weight_traffic(model: torch.nn.Module) -> dict[str, Any]:
    placed, size = place_tensors(describe(model))
    commit, snapshot, own = (
        shared_buffer(size),
        shared_buffer(size),
        torch.empty(size, dtype=torch.uint8),
    )
    committer = Committer(model, placed, commit)
    for parameter in model.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> float:
        started = time.perf_counter()
        optimizer.step()
        return time.perf_counter() - started

    def traffic() -> float:
        started = time.perf_counter()
        committer.commit()
        snapshot.copy_(commit)
        own.copy_(snapshot)
        return time.perf_counter() - started

    step_s, traffic_s = _median(step, 5), _median(traffic, 5)
    return {
        "weights_bytes": size,
        "commit_and_copies_s": round(traffic_s, 5),
        "optimizer_step_s": round(step_s, 5),
        "traffic_vs_optimizer_step": round(traffic_s / step_s, 3),
    }


def bench_commit() -> dict[str, Any]:
    """A step's weight traffic — the trainer's commit, the scorer's snapshot and the predictor's
    copy of it — vs one optimizer step, for the example and a 12 × 768 model."""
    layers = (torch.nn.Linear(768, 768 * 4) for _ in range(12))
    return {
        "example": _weight_traffic(build_model_of(EXAMPLE)),
        "12x768": _weight_traffic(torch.nn.Sequential(*layers)),
    }


def bench_ranks() -> dict[str, Any]:
    """The ranks check (2 ranks, gloo on CPU) next to the scored run of the same evaluation."""
    config = load_config("cpu", None, {"byte_budget": 64 * 1024, "nproc": 2})
    record = evaluate(
        RunRequest(bundle=EXAMPLE, data_dir=DATA, config=config), dict(os.environ)
    ).record
    assert record.ranks is not None and record.run is not None, record.reason
    ranks, run = record.ranks, record.run
    ranks_rate = sum(shard.bytes for shard in ranks.ranks) / ranks.wall_seconds
    scored_rate = run.bytes / run.wall_seconds
    return {
        "ranks_check_s": ranks.wall_seconds,
        "ranks_bytes_per_s": round(ranks_rate),
        "scored_run_bytes_per_s": round(scored_rate),
        "scored_vs_ranks_throughput_ratio": round(scored_rate / ranks_rate, 3),
        "note": "both include worker start-up; the ranks also rendezvous and allreduce each step",
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
    from prism_eval.supervisor.doctor import start_selftest

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


LARGE_ARCHITECTURE = """
import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, width, heads):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)
        self.mlp = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Linear(4 * width, width)
        )

    def forward(self, x):
        b, t, w = x.shape
        q, k, v = (z.view(b, t, self.heads, -1).transpose(1, 2)
                   for z in self.qkv(self.norm1(x)).split(w, dim=-1))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, w))
        return x + self.mlp(self.norm2(x))


class GPT(nn.Module):
    def __init__(self, vocab, seq, width=768, layers=12):
        super().__init__()
        self.embed, self.pos = nn.Embedding(vocab, width), nn.Embedding(seq, width)
        self.blocks = nn.ModuleList(Block(width, 12) for _ in range(layers))
        self.norm, self.head = nn.LayerNorm(width), nn.Linear(width, vocab, bias=False)
        self.head.weight = self.embed.weight  # tied, as in GPT-2: about 124M parameters

    def forward(self, tokens):
        x = self.embed(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x))


def build_model(ctx):
    return GPT(ctx.vocab_size, ctx.max_seq_len)
"""


def bench_large_probe() -> dict[str, Any]:
    """Gates before training for a GPT-2-small-size model (~124M parameters, gpt2 vocab)."""
    with tempfile.TemporaryDirectory() as work:
        bundle = Path(work) / "bundle"
        bundle.mkdir()
        (bundle / "architecture.py").write_text(LARGE_ARCHITECTURE)
        (bundle / "training.py").write_text("def train(ctx):\n    return None\n")
        (bundle / "prism.yaml").write_text("tokenizer: gpt2\n")
        config = load_config("cpu", None, {"max_seq_len": 1024})
        record = evaluate(
            RunRequest(bundle=bundle, data_dir=DATA, config=config), dict(os.environ)
        ).record
    seconds = {stage.name: round(stage.seconds, 2) for stage in record.stages}
    assert record.run is None and record.reason.rule_id == "train.no_batches", record.reason
    gates = sum(seconds[name] for name in ("inputs", "intake", "contract", "lint", "probe"))
    probe = next(s for s in record.stages if s.name == "probe")
    return {"probe_message": probe.message, "stage_seconds": seconds, "gates_s": round(gates, 2)}


def main() -> None:
    """Run every benchmark and print one JSON-ish report to stdout."""
    import json

    torch.set_num_threads(os.cpu_count() or 1)
    report = {
        "step_budget": bench_step_budget(),
        "supervisor_stream": bench_supervisor_stream(),
        "prefix_audit": bench_prefix_audit(),
        "handoff": bench_handoff(),
        "commit": bench_commit(),
        "ranks": bench_ranks(),
        "hashing": bench_hashing(),
        "worker_start": bench_worker_start(),
        "large_probe": bench_large_probe(),
    }
    json.dump(report, sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
