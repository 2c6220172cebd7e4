"""File-system escapes: writing outside artifacts, reading the data, held-out data and key."""

from __future__ import annotations

import os
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


def test_dev_shm_is_private_to_each_worker(run_attack: RunAttack) -> None:
    # Every worker (probe, train, audit) imports architecture.py and leaves a file in /dev/shm,
    # which stays writable for DataLoader workers. The trainer must see only its own, and
    # nothing may be left on the host: no stash from the probe, none for the referee.
    token = f"prism-stash-{os.getpid()}-"
    result = run_attack(
        f"""
        import os

        def attack(ctx):
            seen = sorted(n for n in os.listdir("/dev/shm") if n.startswith("{token}"))
            raise RuntimeError(f"mine={{os.getpid()}} seen={{seen}}")
        """,
        architecture_prelude=f"""
        import os
        with open(f"/dev/shm/{token}{{os.getpid()}}", "w") as stash:
            stash.write("remember me")
        """,
    )
    status, rule, message = reason(result)
    assert (status, rule) == ("failed", "train.exception"), message
    mine = message.split("mine=")[1].split()[0]
    assert f"seen=['{token}{mine}']" in message
    assert not [name for name in os.listdir("/dev/shm") if name.startswith(token)]
    assert layer_state(result, "private_shm") == "active"
