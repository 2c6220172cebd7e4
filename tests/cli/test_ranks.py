"""`run --nproc N`: the ranks check runs train(ctx) at world size N (gloo on CPU), after the
audit; the score stays the single-rank one."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml

from tests.conftest import BUNDLES, TEST_BUDGET, CliResult, run_cli

ARCHITECTURE = (BUNDLES / "ok_tiny_transformer" / "architecture.py").read_text()

# A DDP loop with one hook per way a distributed loop goes wrong: {before_loop} runs once the
# process group is up (on ranks), {per_batch} inside the loop (with `step` counting batches).
TRAINING = """
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel


def train(ctx):
    model = ctx.build_model()
    forward = model
    if ctx.world_size > 1:  # the scored run is one rank; the ranks check runs after it
        dist.init_process_group("gloo")
        forward = DistributedDataParallel(model)
    batch_size = 8
{before_loop}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step, batch in enumerate(ctx.iter_train_batches(model, batch_size=batch_size, seq_len=64)):
{per_batch}
        logits = forward(batch[:, :-1])
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
"""


def run_ranks_bundle(
    tmp_path: Path, before_loop: str = "", per_batch: str = "", nproc: int = 2
) -> CliResult:
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "architecture.py").write_text(ARCHITECTURE)
    (bundle / "training.py").write_text(
        TRAINING.format(
            before_loop=textwrap.indent(textwrap.dedent(before_loop), " " * 4),
            per_batch=textwrap.indent(textwrap.dedent(per_batch), " " * 8),
        )
    )
    config = tmp_path / "config.yaml"
    # Lint off: these loops use os and file writes on purpose; the budget keeps each run short.
    config.write_text(
        yaml.safe_dump({"unsafe_skip_lint_for_tests": True, "ranks_byte_budget": 8192})
    )
    return run_cli(
        "run", bundle, "--config", config, "--byte-budget", "4096", "--nproc", str(nproc)
    )


def outcome(result: CliResult) -> tuple[int, str, str | None]:
    record = result.record
    return result.exit_code, record["status"], record["reason"]["rule_id"]


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[CliResult, Path]:
    out = tmp_path_factory.mktemp("ranks-out")
    result = run_cli(
        "run", BUNDLES / "ok_tiny_transformer", "--byte-budget", str(TEST_BUDGET),
        "--nproc", "2", "--out", out,
    )  # fmt: skip
    return result, out


def test_nproc_2_runs_the_ranks_check_on_cpu(two_ranks: tuple[CliResult, Path]) -> None:
    result, _ = two_ranks
    assert result.exit_code == 0, result.stderr[-3000:]
    record = result.record
    stages = {stage["name"]: stage for stage in record["stages"]}
    assert stages["ranks"]["status"] == "passed"
    names = [stage["name"] for stage in record["stages"]]
    assert names.index("audit") < names.index("ranks") < names.index("score")
    ranks = record["ranks"]
    assert (ranks["nproc"], ranks["backend"], ranks["device"]) == (2, "gloo", "cpu")
    shards = ranks["ranks"]
    assert [shard["rank"] for shard in shards] == [0, 1]
    assert shards[0]["batches"] == shards[1]["batches"] >= 2
    assert sum(shard["bytes"] for shard in shards) >= 32 * 1024  # ranks_byte_budget
    rows = ranks["batch_size"] * (ranks["seq_len"] - 1)  # every batch is full
    assert all(shard["tokens"] == shard["batches"] * rows for shard in shards)
    assert len(ranks["final_weights_sha256"]) == 64
    layers = {layer["name"]: layer for layer in ranks["isolation"]}
    assert layers["network_namespace"]["state"] == "active"
    assert "AF_INET" in layers["seccomp"]["detail"]
    assert "private network namespace" in layers["landlock"]["detail"]
    # The record's own block is the scored trainer's: loopback TCP in a namespace of its own.
    main_layers = {layer["name"]: layer for layer in record["isolation"]}
    assert main_layers["network_namespace"]["state"] == "active"
    assert main_layers["seccomp"]["detail"].endswith("sockets: AF_UNIX, AF_INET and route netlink")
    assert record["inputs"]["config"]["nproc"] == 2
    assert "[rank 1]" in result.stderr  # each rank's output is labelled


def test_the_score_does_not_depend_on_nproc(
    two_ranks: tuple[CliResult, Path], example_run: tuple[CliResult, Path]
) -> None:
    ranked, single = two_ranks[0].record, example_run[0].record
    assert ranked["stream"] == single["stream"]
    assert ranked["score"] == single["score"]
    assert single["ranks"] is None
    single_stages = {stage["name"]: stage for stage in single["stages"]}
    assert single_stages["ranks"]["status"] == "skipped"


def test_a_ranks_record_verifies_and_reproduces(two_ranks: tuple[CliResult, Path]) -> None:
    _, out = two_ranks
    result = run_cli(
        "verify", out / "record.json", "--any-signer", "--reproduce",
        "--bundle", BUNDLES / "ok_tiny_transformer", "--stream", out / "stream.json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr[-3000:]
    assert '"reproduced": true' in result.stdout.decode()


@pytest.mark.parametrize("nproc", ["0", "9", "16"])
def test_nproc_outside_one_node_is_a_usage_error(nproc: str) -> None:
    result = run_cli("run", BUNDLES / "ok_tiny_transformer", "--nproc", nproc)
    assert result.exit_code == 2
    assert result.stdout == b""
    assert "1 to 8 ranks, on this node only" in result.stderr


def test_ranks_that_do_not_average_gradients_diverge(tmp_path: Path) -> None:
    # Each rank trains on its own shard alone: the weights drift apart.
    result = run_ranks_bundle(tmp_path, before_loop="forward = model")
    assert outcome(result) == (4, "failed", "ranks.diverged")
    assert "different weights" in result.record["reason"]["message"]
    assert "DistributedDataParallel" in result.record["reason"]["hint"]


def test_a_nonzero_rank_that_writes_artifacts_fails(tmp_path: Path) -> None:
    result = run_ranks_bundle(
        tmp_path,
        before_loop="""
        with open(os.path.join(ctx.artifacts_dir, "log.txt"), "w") as handle:
            handle.write("every rank writes")
        """,
    )
    assert outcome(result) == (4, "failed", "ranks.nonzero_rank_wrote")
    assert result.record["reason"]["message"].startswith("rank 1 wrote log.txt")


def test_three_ranks_where_rank_zero_writes_artifacts_pass(tmp_path: Path) -> None:
    result = run_ranks_bundle(
        tmp_path,
        before_loop="""
        if ctx.rank == 0:
            with open(os.path.join(ctx.artifacts_dir, "log.txt"), "w") as handle:
                handle.write("rank 0 only")
        """,
        nproc=3,
    )
    assert outcome(result) == (0, "scored", None), result.stderr[-3000:]
    shards = result.record["ranks"]["ranks"]
    assert [shard["rank"] for shard in shards] == [0, 1, 2]
    assert len({shard["batches"] for shard in shards}) == 1


def test_one_rank_raising_ends_the_check_and_names_the_rank(tmp_path: Path) -> None:
    # Rank 0 is then stuck in a collective: the check must kill it, not wait for it.
    result = run_ranks_bundle(
        tmp_path,
        per_batch="""
        if ctx.rank == 1 and step == 1:
            raise ValueError("rank one gives up")
        """,
    )
    assert outcome(result) == (4, "failed", "ranks.exception")
    message = result.record["reason"]["message"]
    assert message.startswith("rank 1: train(ctx) raised")
    assert "rank one gives up" in message


def test_one_rank_stopping_early_fails_the_check(tmp_path: Path) -> None:
    result = run_ranks_bundle(
        tmp_path,
        per_batch="""
        if ctx.rank == 1 and step == 1:
            return
        """,
    )
    assert outcome(result) == (4, "failed", "ranks.stream_incomplete")
    assert result.record["reason"]["message"].startswith("rank 1: train(ctx) stopped after 2 ")


def test_ranks_must_ask_for_the_same_geometry(tmp_path: Path) -> None:
    result = run_ranks_bundle(tmp_path, before_loop="batch_size = 8 + 4 * ctx.rank")
    assert outcome(result) == (4, "failed", "ranks.geometry_mismatch")
    assert "the same batch_size, seq_len and tokenizer" in result.record["reason"]["hint"]


def test_the_report_shows_the_ranks_check(
    two_ranks: tuple[CliResult, Path], tmp_path: Path
) -> None:
    _, out = two_ranks
    page = tmp_path / "report.html"
    result = run_cli("report", out / "record.json", "--any-signer", "--out", page)
    assert result.exit_code == 0, result.stderr
    text = page.read_text()
    assert "<h2>Ranks check</h2>" in text and "train(ctx) as 2 ranks (gloo on cpu" in text


def _loop_bundle(tmp_path: Path, guard: str) -> Path:
    """The DDP loop above, with `guard` deciding whether it sets up a process group."""
    bundle = tmp_path / f"bundle-{len(list(tmp_path.iterdir()))}"
    bundle.mkdir()
    (bundle / "architecture.py").write_text(ARCHITECTURE)
    training = TRAINING.replace(
        "    if ctx.world_size > 1:  # the scored run", guard + "  # the run"
    )
    (bundle / "training.py").write_text(training.format(before_loop="", per_batch=""))
    return bundle


def test_a_loop_that_always_sets_up_a_process_group_scores_as_one_rank(tmp_path: Path) -> None:
    """As under torchrun with one process: init_process_group and DDP at world size 1 work,
    and the score is the one the same loop gets without them."""
    always = run_cli("run", _loop_bundle(tmp_path, "    if True:"), "--byte-budget", "4096")
    assert outcome(always) == (0, "scored", None), always.stderr[-2000:]
    guarded = run_cli(
        "run", _loop_bundle(tmp_path, "    if ctx.world_size > 1:"), "--byte-budget", "4096"
    )
    assert always.record["stream"] == guarded.record["stream"]


def test_a_process_group_the_device_cannot_run_gets_a_hint(tmp_path: Path) -> None:
    bundle = _loop_bundle(tmp_path, "    if True:")
    training = bundle / "training.py"
    training.write_text(
        training.read_text().replace('init_process_group("gloo")', 'init_process_group("nccl")')
    )
    result = run_cli("run", bundle, "--byte-budget", "4096")
    assert outcome(result) == (4, "failed", "train.exception")
    assert "'gloo' on CPU" in result.record["reason"]["hint"]
