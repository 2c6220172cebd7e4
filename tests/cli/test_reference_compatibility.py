"""Bundles written for the reference challenge run unchanged (docs/reference-compatibility.md).

Real runs of bundles in the reference's style: its manifest schema, its interface import,
`from architecture import build_model`, `ctx.reference_tokenizer("gpt2")` returning a working
tiktoken encoding, `batch.tokens`, DDP behind `world_size > 1` (run as two ranks); with and
without the manifest, zipped inside a folder, other file names and symbols, bytes when no
tokenizer is passed; and a nanoGPT-style model that returns (logits, loss) and calls .view() on
its input.
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT, TEST_BUDGET, run_cli

ASSETS = ROOT / "tests" / "assets" / "bundles"
REFERENCE_STYLE = ASSETS / "ok_reference_style"


def zip_in_folder(source: Path, target: Path, folder: str) -> Path:
    """Zip a bundle directory with every file under `folder/` and a README beside the folder
    (so intake does not take the folder for a wrapper and strip it)."""
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("README.md", "The submission is in my-submission/.\n")
        for path in sorted(source.rglob("*")):
            if path.is_file():
                archive.write(path, f"{folder}/{path.relative_to(source).as_posix()}")
    return target


def scored(*args: object) -> dict:  # type: ignore[type-arg]
    result = run_cli("run", *args, "--byte-budget", str(TEST_BUDGET))
    assert result.exit_code == 0, result.stderr
    record = result.record
    assert record["status"] == "scored", record["reason"]
    return record


def test_a_reference_style_bundle_scores_alike_with_and_without_its_manifest(
    tmp_path: Path,
) -> None:
    # Two ranks as well: its DistributedDataParallel branch runs in the ranks check.
    archive = zip_in_folder(REFERENCE_STYLE, tmp_path / "b.zip", "my-submission")
    zipped = scored(archive, "--nproc", "2")
    ranks = next(s for s in zipped["stages"] if s["name"] == "ranks")
    assert ranks["status"] == "passed", ranks
    assert zipped["ranks"]["backend"] == "gloo"
    bare = tmp_path / "bare"
    shutil.copytree(REFERENCE_STYLE, bare, ignore=shutil.ignore_patterns("prism.yaml"))
    inferred = scored(bare)  # the tokenizer comes from its reference_tokenizer("gpt2") call
    for record in (zipped, inferred):
        assert record["inputs"]["tokenizer"]["name"] == "gpt2"
        assert record["subject"]["architecture_name"] == "RMSNorm decoder (reference style)"
    assert zipped["subject"]["architecture_id"] == "prism-eval-tests/rmsnorm-decoder"
    assert inferred["subject"]["architecture_id"] is None
    assert zipped["score"]["bpb"] == inferred["score"]["bpb"]
    contract = next(s for s in zipped["stages"] if s["name"] == "contract")
    assert "declared in my-submission/prism.yaml" in contract["message"]


def test_declared_paths_and_symbols_and_no_tokenizer_train_on_bytes() -> None:
    record = scored(ASSETS / "ok_reference_style_paths")
    assert record["inputs"]["tokenizer"]["name"] == "byte"
    # a tab and a right-to-left override in ARCHITECTURE_NAME: moderated away
    assert record["subject"]["architecture_name"] == "GRU byte model (paths)"
    assert [f["path"] for f in record["subject"]["files"]] == [
        "prism.yml", "src/loop.py", "src/net.py", "src/schedule.py",
    ]  # fmt: skip


def test_passing_no_tokenizer_means_bytes_even_when_gpt2_is_declared(tmp_path: Path) -> None:
    """As in the reference: tokenizer=None is the byte stream. The model was built for the
    declared vocabulary, which byte ids fit."""
    bundle = tmp_path / "bundle"
    shutil.copytree(REFERENCE_STYLE, bundle)
    training = bundle / "training.py"
    text = training.read_text().replace(", tokenizer=tokenizer)", ")")
    training.write_text(text)
    record = scored(bundle)
    assert record["inputs"]["tokenizer"]["name"] == "byte"
    assert record["run"]["model_params"] > 50257 * 64  # the gpt2-sized embedding


def test_a_nanogpt_style_model_scores() -> None:
    """(logits, loss) from forward, .view() on its inputs and targets, inspect.signature to
    pick the fused AdamW, globals() for the config, TF32 switched on: all honest, all scored."""
    record = scored(ASSETS / "ok_nanogpt_style")
    assert record["subject"]["architecture_name"] == "nanoGPT-style GPT"
    assert record["score"]["bpb"] < 8.0


def test_nanogpts_last_position_only_inference_is_refused_with_the_fix(tmp_path: Path) -> None:
    """nanoGPT's forward returns only the last position's logits when called without targets;
    every position is scored here (as in the reference), so the probe says what to change."""
    bundle = tmp_path / "bundle"
    shutil.copytree(ASSETS / "ok_nanogpt_style", bundle)
    architecture = bundle / "architecture.py"
    text = architecture.read_text()
    every_position = "        logits = self.lm_head(x)\n"
    assert every_position in text
    last_only = "        logits = self.lm_head(x if targets is not None else x[:, [-1], :])\n"
    architecture.write_text(text.replace(every_position, last_only))
    result = run_cli("run", bundle, "--byte-budget", str(TEST_BUDGET))
    record = result.record
    assert (record["status"], record["reason"]["rule_id"]) == ("rejected", "probe.bad_output_shape")
    assert "without targets" in record["reason"]["hint"]


def test_a_loop_that_reads_the_shards_itself_is_told_where_the_data_is(tmp_path: Path) -> None:
    """The reference mounts the train split at ctx.data_dir; here it is hidden by default, and
    the failure says so."""
    bundle = tmp_path / "bundle"
    shutil.copytree(REFERENCE_STYLE, bundle)
    training = bundle / "training.py"
    text = training.read_text().replace(
        "    distributed = ctx.world_size > 1\n",
        "    shards = sorted(Path(ctx.data_dir).glob('*.jsonl'))\n"
        "    distributed = ctx.world_size > 1\n",
    )
    training.write_text("from pathlib import Path\n" + text)
    result = run_cli("run", bundle, "--byte-budget", str(TEST_BUDGET))
    assert (result.exit_code, result.record["status"]) == (4, "failed")
    assert result.record["reason"]["rule_id"] == "train.exception"
    assert "ctx.iter_train_batches" in result.record["reason"]["hint"]


@pytest.fixture(scope="module")
def plain_reference_style_bpb() -> float:
    return float(scored(REFERENCE_STYLE)["score"]["bpb"])


@pytest.mark.parametrize(
    ("script", "line", "compiled"),
    [
        (  # the loop compiles the model it trains
            "training.py",
            "    wrapped = DistributedDataParallel(model) if distributed else model\n",
            "    wrapped = DistributedDataParallel(model) if distributed else model\n"
            '    wrapped = torch.compile(wrapped, mode="max-autotune")\n',
        ),
        (  # build_model returns a compiled module
            "architecture.py",
            "    return Decoder(ctx.vocab_size)\n",
            "    return torch.compile(Decoder(ctx.vocab_size))\n",
        ),
    ],
)
def test_torch_compile_runs_in_the_sandbox_with_the_numbers_of_the_plain_model(
    tmp_path: Path, plain_reference_style_bpb: float, script: str, line: str, compiled: str
) -> None:
    """Inductor would start a compiler, which the sandbox forbids: torch.compile runs with the
    eager backend instead, so the bundle works unchanged and scores exactly as without it."""
    bundle = tmp_path / "bundle"
    shutil.copytree(REFERENCE_STYLE, bundle)
    path = bundle / script
    text = path.read_text()
    assert line in text
    path.write_text(text.replace(line, compiled))
    record = scored(bundle)
    assert record["environment"]["determinism"]["torch_compile_backend"] == "eager"
    assert record["score"]["bpb"] == plain_reference_style_bpb


@pytest.mark.parametrize(
    ("geometry", "rule_id", "hint"),
    [
        ("batch_size=ROWS, seq_len=1024", "train.bad_seq_len", "ctx.max_seq_len"),
        ("batch_size=4096, seq_len=64", "train.bad_batch_size", "accumulate gradients"),
    ],
)
def test_a_geometry_outside_the_profile_is_refused_with_a_hint(
    tmp_path: Path, geometry: str, rule_id: str, hint: str
) -> None:
    """The reference takes any seq_len; here the profile bounds it (256 on the cpu profile)."""
    bundle = tmp_path / "bundle"
    shutil.copytree(REFERENCE_STYLE, bundle)
    training = bundle / "training.py"
    text = training.read_text()
    assert "batch_size=ROWS, seq_len=64" in text
    training.write_text(text.replace("batch_size=ROWS, seq_len=64", geometry))
    result = run_cli("run", bundle, "--byte-budget", str(TEST_BUDGET))
    record = result.record
    assert (result.exit_code, record["status"], record["reason"]["rule_id"]) == (
        3,
        "rejected",
        rule_id,
    )
    assert hint in record["reason"]["hint"]


def test_a_stream_of_another_tokenizer_than_the_model_was_built_for_is_refused(
    tmp_path: Path,
) -> None:
    """Declared bytes, asked for gpt2 at run time: the model's vocabulary would not fit."""
    bundle = tmp_path / "bundle"
    shutil.copytree(REFERENCE_STYLE, bundle)
    manifest = bundle / "prism.yaml"
    text = manifest.read_text()
    assert "tokenizer: gpt2" in text
    manifest.write_text(text.replace("tokenizer: gpt2", "tokenizer: byte"))
    training = bundle / "training.py"
    check = "    assert tokenizer.n_vocab == ctx.vocab_size  # the real tiktoken encoding\n"
    assert check in training.read_text()
    training.write_text(training.read_text().replace(check, ""))
    result = run_cli("run", bundle, "--byte-budget", str(TEST_BUDGET))
    record = result.record
    assert (result.exit_code, record["status"], record["reason"]["rule_id"]) == (
        3,
        "rejected",
        "train.undeclared_tokenizer",
    )
    assert "tokenizer: gpt2" in record["reason"]["hint"]
