"""File-system escapes: writing outside artifacts, reading the data, held-out data and key."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import DATA, run_cli
from tests.sandbox.conftest import RunAttack, layer_state, reason


def test_write_outside_the_artifacts_dir_is_refused(run_attack: RunAttack, tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    result = run_attack(
        f"""
        import os

        def attack(ctx):
            outcomes = []
            for path in [{str(target)!r}, "/tmp/prism-escape.txt", os.path.expanduser("~/../x")]:
                try:
                    with open(path, "w") as handle:
                        handle.write("escaped")
                    outcomes.append(f"wrote {{path}}")
                except OSError as exc:
                    outcomes.append(f"{{path}}: {{exc.strerror}}")
            with open(os.path.join(ctx.artifacts_dir, "notes.txt"), "w") as handle:
                handle.write("allowed")
            raise RuntimeError("; ".join(outcomes))
        """
    )
    assert not target.exists()
    assert not Path("/tmp/prism-escape.txt").exists()
    _, rule, message = reason(result)
    assert rule == "train.exception"
    assert "wrote" not in message and "Permission denied" in message
    assert layer_state(result, "landlock") == "active"


def test_reading_data_heldout_and_signing_key_is_refused(
    run_attack: RunAttack, tmp_path: Path
) -> None:
    keys = tmp_path / "keys"
    keys.mkdir()
    assert run_cli("keygen", "--out", keys / "validator").exit_code == 0
    shard = sorted((DATA / "train").glob("*.jsonl"))[0]
    heldout = sorted((DATA / "test").glob("*.jsonl"))[0]
    secrets = [shard, heldout, keys / "validator.key", DATA / "MANIFEST.json"]
    result = run_attack(
        f"""
        def attack(ctx):
            outcomes = []
            for path in {[str(p) for p in secrets]!r}:
                try:
                    with open(path, "rb") as handle:
                        outcomes.append(f"read {{len(handle.read())}} bytes of {{path}}")
                except OSError as exc:
                    outcomes.append(f"{{path}}: {{exc.strerror}}")
            raise RuntimeError("; ".join(outcomes))
        """,
        args=("--heldout", DATA, "--key", keys / "validator.key"),
    )
    _, rule, message = reason(result)
    assert rule == "train.exception"
    assert "read " not in message
    assert message.count("Permission denied") == len(secrets)
    assert result.record["signer"]["mode"] == "key"


def test_readable_data_access_grants_the_train_split_only(
    run_attack: RunAttack,
) -> None:
    shard = sorted((DATA / "train").glob("*.jsonl"))[0]
    heldout = sorted((DATA / "test").glob("*.jsonl"))[0]
    result = run_attack(
        f"""
        def attack(ctx):
            outcomes = []
            for path in [{str(shard)!r}, {str(heldout)!r}]:
                try:
                    with open(path, "rb") as handle:
                        outcomes.append(f"read:{{len(handle.read(10))}}")
                except OSError as exc:
                    outcomes.append(exc.strerror)
            raise RuntimeError(f"data_dir={{ctx.data_dir}} " + "; ".join(outcomes))
        """,
        config={"data_access": "readable"},
    )
    _, _, message = reason(result)
    assert "read:10; Permission denied" in message
    assert "data_dir=" + str(DATA / "train") in message
