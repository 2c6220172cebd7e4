"""The prism.yaml contract: bad manifests, scripts and symbols are rejected with their rule id."""

from __future__ import annotations

from pathlib import Path

import pytest

from prism_eval.contract import BundleManifest, check_contract
from prism_eval.errors import Rejected
from tests.unit.test_bundle import ARCH, TRAIN, load, write_tree

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "bundles"


def contract_rule(tmp_path: Path, files: dict[str, str]) -> str:
    bundle = load(write_tree(tmp_path / "src", files), tmp_path)
    with pytest.raises(Rejected) as caught:
        check_contract(bundle)
    return caught.value.rule_id


def check(tmp_path: Path, files: dict[str, str]) -> object:
    return check_contract(load(write_tree(tmp_path / "src", files), tmp_path))


@pytest.mark.parametrize(
    ("example", "rule_id"),
    [
        ("reject_missing_script", "contract.missing_script"),
        ("reject_bad_yaml", "contract.bad_yaml"),
        ("reject_unknown_key", "contract.unknown_key"),
        ("reject_missing_symbol", "contract.missing_symbol"),
    ],
)
def test_example_bundle_is_rejected_by_the_contract(
    tmp_path: Path, example: str, rule_id: str
) -> None:
    bundle = load(EXAMPLES / example, tmp_path)
    with pytest.raises(Rejected) as caught:
        check_contract(bundle)
    assert caught.value.rule_id == rule_id


def test_lint_example_passes_the_contract(tmp_path: Path) -> None:
    contract = check_contract(load(EXAMPLES / "reject_lint_subprocess", tmp_path))
    assert contract.training_path == "training.py"


def test_missing_manifest_and_empty_manifest_give_defaults(tmp_path: Path) -> None:
    for i, manifest in enumerate([None, "", "# nothing here\n"]):
        files = {"architecture.py": ARCH, "training.py": TRAIN}
        if manifest is not None:
            files["prism.yaml"] = manifest
        contract = check_contract(load(write_tree(tmp_path / f"src{i}", files), tmp_path))
        assert contract.manifest == BundleManifest()
        assert (contract.architecture_path, contract.training_path) == (
            "architecture.py",
            "training.py",
        )
        assert (contract.build_symbol, contract.train_symbol, contract.tokenizer) == (
            "build_model",
            "train",
            "byte",
        )


def test_manifest_names_other_entrypoints_and_symbols(tmp_path: Path) -> None:
    manifest = (
        "name: demo\ntokenizer: gpt2\n"
        "entrypoints: {architecture: src/net.py, training: src/loop.py}\n"
        "symbols: {build_model: make, train: fit}\n"
    )
    files = {
        "prism.yaml": manifest,
        "src/net.py": "def make(ctx):\n    pass\n",
        "src/loop.py": "async def helper():\n    pass\n\ndef fit(ctx, steps=3):\n    pass\n",
    }
    c = check_contract(load(write_tree(tmp_path / "src", files), tmp_path))
    assert (c.architecture_path, c.training_path, c.build_symbol, c.train_symbol) == (
        "src/net.py",
        "src/loop.py",
        "make",
        "fit",
    )
    assert c.tokenizer == "gpt2" and c.manifest.name == "demo"


def test_unknown_key_names_the_allowed_keys(tmp_path: Path) -> None:
    bundle = load(EXAMPLES / "reject_unknown_key", tmp_path)
    with pytest.raises(Rejected) as caught:
        check_contract(bundle)
    for key in ("tokeniser", "entrypoints", "symbols", "tokenizer", "name"):
        assert key in caught.value.message
    assert "tokenizer" in (caught.value.hint or "")


def test_unknown_nested_key_names_the_allowed_nested_keys(tmp_path: Path) -> None:
    files = {"architecture.py": ARCH, "training.py": TRAIN, "prism.yaml": "symbols: {bulid: x}"}
    bundle = load(write_tree(tmp_path / "src", files), tmp_path)
    with pytest.raises(Rejected) as caught:
        check_contract(bundle)
    assert caught.value.rule_id == "contract.unknown_key"
    assert "build_model" in caught.value.message and "train" in caught.value.message


MANIFEST_CASES = [
    ("tokenizer: sentencepiece\n", "contract.invalid"),
    ("tokenizer: 5\n", "contract.invalid"),
    ("entrypoints: architecture.py\n", "contract.invalid"),
    ("entrypoints:\n  architecture: 3\n", "contract.invalid"),
    ("- tokenizer\n- byte\n", "contract.invalid"),
    ("just a string\n", "contract.invalid"),
    ("1: x\n", "contract.invalid"),
    ("tokenizer: byte\ntokenizer: gpt2\n", "contract.bad_yaml"),
    ("a: &x [1]\nb: *x\n", "contract.bad_yaml"),
    ("tokenizer: 'byte\n", "contract.bad_yaml"),
    ("name: " + "[" * 20000 + "]" * 20000 + "\n", "contract.bad_yaml"),
    ("entrypoints: {architecture: training.py}\n", "contract.bad_entrypoint"),
    ("entrypoints: {training: train.txt}\n", "contract.bad_entrypoint"),
    ("entrypoints: {training: ../training.py}\n", "contract.bad_entrypoint"),
    ("entrypoints: {training: loop.py}\n", "contract.missing_script"),
    ("symbols: {train: 'not a name'}\n", "contract.invalid"),
]


@pytest.mark.parametrize(
    ("manifest", "rule_id"), MANIFEST_CASES, ids=[m[:40] for m, _ in MANIFEST_CASES]
)
def test_invalid_manifest_is_rejected(tmp_path: Path, manifest: str, rule_id: str) -> None:
    files = {"architecture.py": ARCH, "training.py": TRAIN, "prism.yaml": manifest}
    assert contract_rule(tmp_path, files) == rule_id


def test_bad_yaml_reports_the_line(tmp_path: Path) -> None:
    bundle = load(EXAMPLES / "reject_bad_yaml", tmp_path)
    with pytest.raises(Rejected) as caught:
        check_contract(bundle)
    assert caught.value.message.startswith("prism.yaml:4:")


def test_misnamed_manifest_is_not_silently_ignored(tmp_path: Path) -> None:
    files = {"architecture.py": ARCH, "training.py": TRAIN, "prism.yml": "tokenizer: gpt2\n"}
    assert contract_rule(tmp_path, files) == "contract.invalid"


def test_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    files = {"architecture.py": ARCH, "training.py": "def train(ctx):\n    return (\n"}
    bundle = load(write_tree(tmp_path / "src", files), tmp_path)
    with pytest.raises(Rejected) as caught:
        check_contract(bundle)
    assert caught.value.rule_id == "contract.syntax_error"
    assert caught.value.message.startswith("training.py:2")


@pytest.mark.parametrize(
    "training",
    [
        "def fit(ctx):\n    pass\n",
        "async def train(ctx):\n    pass\n",
        "train = lambda ctx: None\n",
        "from helpers import train\n",
        "class train:\n    pass\n",
        "def train(ctx):\n    pass\n\ntrain = None\n",
        "if True:\n    def train(ctx):\n        pass\n",
        "def outer():\n    def train(ctx):\n        pass\n",
    ],
)
def test_missing_or_non_plain_symbol_is_rejected(tmp_path: Path, training: str) -> None:
    files = {"architecture.py": ARCH, "training.py": training, "helpers.py": TRAIN}
    assert contract_rule(tmp_path, files) == "contract.missing_symbol"


def test_missing_symbol_hint_lists_existing_functions(tmp_path: Path) -> None:
    bundle = load(EXAMPLES / "reject_missing_symbol", tmp_path)
    with pytest.raises(Rejected) as caught:
        check_contract(bundle)
    assert "train_loop" in (caught.value.hint or "")


@pytest.mark.parametrize(
    "training",
    [
        "def train():\n    pass\n",
        "def train(ctx, data):\n    pass\n",
        "def train(*, ctx):\n    pass\n",
    ],
)
def test_symbol_that_cannot_take_ctx_is_rejected(tmp_path: Path, training: str) -> None:
    files = {"architecture.py": ARCH, "training.py": training}
    assert contract_rule(tmp_path, files) == "contract.bad_signature"


@pytest.mark.parametrize(
    "training",
    [
        "def train(ctx):\n    pass\n",
        "def train(ctx, /, steps=10, *, lr=1e-3):\n    pass\n",
        "def train(*args, **kwargs):\n    pass\n",
        "def train(ctx):\n    pass\n\ndef train(ctx):\n    return 1\n",
        "import torch\n\n@torch.no_grad()\ndef train(ctx):\n    pass\n",
    ],
)
def test_plain_symbol_is_accepted(tmp_path: Path, training: str) -> None:
    assert check(tmp_path, {"architecture.py": ARCH, "training.py": training})


@pytest.mark.parametrize(
    "name",
    ["os.py", "torch.py", "numpy.py", "json.py", "torch/__init__.py", "prism_challenge/x.py"],
)
def test_module_shadowing_a_standard_or_installed_one_is_rejected(
    tmp_path: Path, name: str
) -> None:
    files = {"architecture.py": ARCH, "training.py": TRAIN, name: "X = 1\n"}
    assert contract_rule(tmp_path, files) == "contract.shadowing_module"


def test_ordinary_helper_modules_are_accepted(tmp_path: Path) -> None:
    files = {"architecture.py": ARCH, "training.py": TRAIN, "prism_layers.py": "", "notes.md": ""}
    assert check(tmp_path, files)
