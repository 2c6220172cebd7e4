"""The prism.yaml contract: bad manifests, scripts and symbols are rejected with their rule id."""

from __future__ import annotations

from pathlib import Path

import pytest

from prism_eval.errors import Rejected
from prism_eval.supervisor.intake.contract import BundleManifest, check_contract
from tests.conftest import ROOT
from tests.supervisor.intake.test_bundle import ARCH, TRAIN, load, write_tree

EXAMPLES = ROOT / "examples" / "bundles"


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


def test_the_reference_schema_names_entrypoints_symbols_files_and_kind(tmp_path: Path) -> None:
    manifest = (
        "kind: training_for_arch\narchitecture_id: arch-42\ntokenizer: gpt2\n"
        "architecture: {entrypoint: 'src/net.py::make', files: [src/layers.py]}\n"
        "training:\n  entrypoint: src/loop.py\n  function: fit\n"
    )
    files = {
        "prism.yaml": manifest,
        "src/net.py": "def make(ctx):\n    pass\n",
        "src/layers.py": "",
        "src/loop.py": "async def helper():\n    pass\n\ndef fit(ctx, steps=3):\n    pass\n",
    }
    c = check_contract(load(write_tree(tmp_path / "src", files), tmp_path))
    assert (c.architecture_path, c.training_path, c.build_symbol, c.train_symbol) == (
        "src/net.py",
        "src/loop.py",
        "make",
        "fit",
    )
    assert c.tokenizer == "gpt2"
    assert (c.manifest.kind, c.manifest.architecture_id) == ("training_for_arch", "arch-42")


@pytest.mark.parametrize(
    ("section", "symbol"),
    [
        ("{entrypoint: 'architecture.py::make'}", "make"),
        ("{entrypoint: architecture.py, factory: make}", "make"),
        ("{function: make}", "make"),
        ("{entry: make}", "make"),
        ("{entrypoint: 'architecture.py::other', factory: make}", "make"),  # the key wins
    ],
)
def test_each_way_the_reference_names_a_symbol(tmp_path: Path, section: str, symbol: str) -> None:
    files = {
        "prism.yaml": f"architecture: {section}\n",
        "architecture.py": "def make(ctx):\n    pass\n\ndef other(ctx):\n    pass\n",
        "training.py": TRAIN,
    }
    assert (
        check_contract(load(write_tree(tmp_path / "src", files), tmp_path)).build_symbol == symbol
    )


def test_a_manifest_in_a_folder_resolves_paths_from_that_folder(tmp_path: Path) -> None:
    files = {
        "project/prism.yml": "architecture: {entrypoint: model/arch.py}\n"
        "training: {entrypoint: loop.py}\ntokenizer: byte\n",
        "project/model/arch.py": ARCH,
        "project/loop.py": TRAIN,
        "README.md": "",
    }
    c = check_contract(load(write_tree(tmp_path / "src", files), tmp_path))
    assert (c.manifest_path, c.architecture_path, c.training_path) == (
        "project/prism.yml",
        "project/model/arch.py",
        "project/loop.py",
    )


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        ("architecture:\ntraining:\n", ("architecture.py", [], None)),  # empty sections
        ("training:\n  files: helper.py\n", ("architecture.py", ["helper.py"], None)),
        ("architecture_id: 42\n", ("architecture.py", [], "42")),
    ],
)
def test_manifests_the_reference_accepts_in_their_loose_forms(
    tmp_path: Path, manifest: str, expected: tuple[str, list[str], str | None]
) -> None:
    files = {"prism.yaml": manifest, "architecture.py": ARCH, "training.py": TRAIN, "helper.py": ""}
    c = check_contract(load(write_tree(tmp_path / "src", files), tmp_path))
    m = c.manifest
    assert (c.architecture_path, m.training.files, m.architecture_id) == expected


def test_a_manifest_in_a_folder_finds_undeclared_scripts_beside_it(tmp_path: Path) -> None:
    files = {
        "mine/prism.yaml": "tokenizer: byte\n",
        "mine/architecture.py": ARCH,
        "mine/training.py": TRAIN,
        "vendored/architecture.py": ARCH,  # another file of the default name, elsewhere
    }
    c = check_contract(load(write_tree(tmp_path / "src", files), tmp_path))
    assert (c.architecture_path, c.training_path) == ("mine/architecture.py", "mine/training.py")


def test_without_a_manifest_the_default_scripts_are_found_anywhere_once(tmp_path: Path) -> None:
    files = {"model_src/architecture.py": ARCH, "model_src/training.py": TRAIN, "README.md": ""}
    c = check_contract(load(write_tree(tmp_path / "src", files), tmp_path))
    assert (c.architecture_path, c.training_path) == (
        "model_src/architecture.py",
        "model_src/training.py",
    )
    twice = {**files, "other/architecture.py": ARCH}
    assert contract_rule(tmp_path / "twice", twice) == "contract.missing_script"


def test_a_declared_entrypoint_is_honoured_exactly(tmp_path: Path) -> None:
    # No fallback to a file of the same name elsewhere: a missing declared file is rejected.
    files = {
        "prism.yaml": "architecture: {entrypoint: model.py}\n",
        "lib/model.py": ARCH,
        "training.py": TRAIN,
    }
    bundle = load(write_tree(tmp_path / "src", files), tmp_path)
    with pytest.raises(Rejected) as caught:
        check_contract(bundle)
    assert caught.value.rule_id == "contract.missing_script"
    assert "'model.py'" in caught.value.message and "exactly" in (caught.value.hint or "")


def test_unknown_key_names_the_allowed_keys(tmp_path: Path) -> None:
    bundle = load(EXAMPLES / "reject_unknown_key", tmp_path)
    with pytest.raises(Rejected) as caught:
        check_contract(bundle)
    for key in ("tokeniser", "kind", "architecture_id", "architecture", "training", "tokenizer"):
        assert key in caught.value.message
    assert "tokenizer" in (caught.value.hint or "")


def test_unknown_nested_key_names_the_allowed_nested_keys(tmp_path: Path) -> None:
    files = {
        "architecture.py": ARCH,
        "training.py": TRAIN,
        "prism.yaml": "training: {entrypiont: training.py}",
    }
    bundle = load(write_tree(tmp_path / "src", files), tmp_path)
    with pytest.raises(Rejected) as caught:
        check_contract(bundle)
    assert caught.value.rule_id == "contract.unknown_key"
    assert "section 'training'" in caught.value.message
    for key in ("entrypoint", "factory", "function", "entry", "files"):
        assert key in caught.value.message
    assert "'entrypoint'" in (caught.value.hint or "")


def test_the_old_entrypoints_dialect_is_an_unknown_key(tmp_path: Path) -> None:
    files = {
        "architecture.py": ARCH,
        "training.py": TRAIN,
        "prism.yaml": "entrypoints: {architecture: architecture.py}\n",
    }
    assert contract_rule(tmp_path, files) == "contract.unknown_key"


MANIFEST_CASES = [
    ("tokenizer: sentencepiece\n", "contract.invalid"),
    ("tokenizer: 5\n", "contract.invalid"),
    ("kind: everything\n", "contract.invalid"),
    ("architecture: architecture.py\n", "contract.invalid"),
    ("architecture:\n  entrypoint: 3\n", "contract.invalid"),
    ("training: {files: {helper.py: yes}}\n", "contract.invalid"),
    ("- tokenizer\n- byte\n", "contract.invalid"),
    ("just a string\n", "contract.invalid"),
    ("1: x\n", "contract.invalid"),
    ("tokenizer: byte\ntokenizer: gpt2\n", "contract.bad_yaml"),
    ("a: &x [1]\nb: *x\n", "contract.bad_yaml"),
    ("tokenizer: 'byte\n", "contract.bad_yaml"),
    ("architecture_id: " + "[" * 20000 + "]" * 20000 + "\n", "contract.bad_yaml"),
    ("architecture: {entrypoint: training.py}\n", "contract.bad_entrypoint"),
    ("training: {entrypoint: train.txt}\n", "contract.missing_script"),
    ("training: {entrypoint: ../training.py}\n", "contract.missing_script"),
    ("training: {entrypoint: loop.py}\n", "contract.missing_script"),
    ("training: {function: 'not a name'}\n", "contract.invalid"),
    ("training: {files: [absent.py]}\n", "contract.missing_file"),
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
    files = {"architecture.py": ARCH, "training.py": TRAIN, "Prism.yaml": "tokenizer: gpt2\n"}
    assert contract_rule(tmp_path, files) == "contract.invalid"


def test_two_manifests_are_ambiguous(tmp_path: Path) -> None:
    files = {"architecture.py": ARCH, "training.py": TRAIN, "prism.yaml": "", "prism.yml": ""}
    assert contract_rule(tmp_path, files) == "contract.ambiguous_manifest"


# ---- the tokenizer, declared or inferred ---------------------------------------------------


def training_calling(*calls: str) -> str:
    body = "".join(f"    {call}\n" for call in calls)
    return f"def train(ctx):\n{body}    pass\n"


@pytest.mark.parametrize(
    ("calls", "tokenizer"),
    [
        ((), "byte"),
        (('tokenizer = ctx.reference_tokenizer("gpt2")',), "gpt2"),
        (('ctx.reference_tokenizer(name="llama")', 'ctx.reference_tokenizer("llama")'), "llama"),
    ],
)
def test_the_tokenizer_is_inferred_from_literal_calls(
    tmp_path: Path, calls: tuple[str, ...], tokenizer: str
) -> None:
    files = {"architecture.py": ARCH, "training.py": training_calling(*calls)}
    assert check(tmp_path, files).tokenizer == tokenizer  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("calls", "rule_id"),
    [
        (('ctx.reference_tokenizer("gpt2")', 'ctx.reference_tokenizer("llama")'),
         "contract.ambiguous_tokenizer"),
        (("ctx.reference_tokenizer(NAME)",), "contract.tokenizer_not_literal"),
        (('ctx.reference_tokenizer("sentencepiece")',), "contract.unknown_tokenizer"),
    ],
)  # fmt: skip
def test_an_unknowable_tokenizer_is_rejected_with_a_hint_to_declare_it(
    tmp_path: Path, calls: tuple[str, ...], rule_id: str
) -> None:
    files = {"architecture.py": ARCH, "training.py": training_calling(*calls)}
    bundle = load(write_tree(tmp_path / "src", files), tmp_path)
    with pytest.raises(Rejected) as caught:
        check_contract(bundle)
    assert caught.value.rule_id == rule_id
    if rule_id != "contract.unknown_tokenizer":
        assert "tokenizer: gpt2" in (caught.value.hint or "")


def test_a_declared_tokenizer_wins_over_the_calls(tmp_path: Path) -> None:
    files = {
        "architecture.py": ARCH,
        "training.py": training_calling("ctx.reference_tokenizer(NAME)"),
        "prism.yaml": "tokenizer: gpt2\n",
    }
    assert check(tmp_path, files).tokenizer == "gpt2"  # type: ignore[attr-defined]


# ---- the architecture's name -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "name"),
    [
        ('ARCHITECTURE_NAME = "Tiny  GPT\t(v2)"\n', "Tiny GPT (v2)"),
        ('ARCHITECTURE_NAME: str = "Mixer+Attn & co."\n', "Mixer+Attn & co."),
        ('ARCHITECTURE_NAME = "über<script>!"\n', "berscript"),
        ('ARCHITECTURE_NAME = "' + "x" * 60 + '"\n', "x" * 48),
        ('ARCHITECTURE_NAME = "   "\n', None),
        ("ARCHITECTURE_NAME = f'{1}'\n", None),
        ('NAME = "x"\n', None),
        ('ARCHITECTURE_NAME = "first"\nARCHITECTURE_NAME = "second"\n', "second"),
    ],
)
def test_the_architecture_name_is_read_and_moderated(
    tmp_path: Path, source: str, name: str | None
) -> None:
    files = {"architecture.py": source + ARCH, "training.py": TRAIN}
    assert check(tmp_path, files).architecture_name == name  # type: ignore[attr-defined]


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


def test_scripts_are_imported_under_their_file_names_which_must_differ(tmp_path: Path) -> None:
    """As in the reference, a script is imported as a module named after its file, so
    a/model.py and b/model.py would be one module."""
    manifest = "architecture: {entrypoint: a/model.py}\ntraining: {entrypoint: b/model.py}\n"
    files = {"prism.yaml": manifest, "a/model.py": ARCH, "b/model.py": TRAIN}
    assert contract_rule(tmp_path, files) == "contract.bad_entrypoint"


def test_a_script_whose_file_name_is_an_installed_module_is_rejected(tmp_path: Path) -> None:
    """src/code.py would be imported as `code`, the standard library's module."""
    manifest = "architecture: {entrypoint: src/code.py}\n"
    files = {"prism.yaml": manifest, "src/code.py": ARCH, "training.py": TRAIN}
    assert contract_rule(tmp_path, files) == "contract.shadowing_module"
