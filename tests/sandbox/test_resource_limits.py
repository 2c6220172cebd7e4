"""Resource attacks: memory bombs, infinite loops, silence, filling the disk."""

from __future__ import annotations

from tests.sandbox.conftest import RunAttack, layer_state, reason


def test_memory_bomb_kills_only_the_worker_and_says_so(run_attack: RunAttack) -> None:
    result = run_attack(
        """
        def attack(ctx):
            hoard = []
            while True:
                hoard.append(bytearray(64 * 2**20))
        """,
        config={"memory_limit_mib": 1024},
    )
    status, rule, _ = reason(result)
    assert (status, rule) == ("failed", "train.out_of_memory")
    assert layer_state(result, "cgroup_memory") == "active"


def test_infinite_loop_hits_the_wall_clock(run_attack: RunAttack) -> None:
    result = run_attack(
        """
        def attack(ctx):
            while True:
                pass
        """,
        config={"train_timeout_s": 8},
    )
    status, rule, _ = reason(result)
    assert (status, rule) == ("failed", "train.timeout")


def test_a_silent_worker_hits_the_idle_limit(run_attack: RunAttack) -> None:
    result = run_attack(
        """
        import time

        def attack(ctx):
            time.sleep(3600)
        """,
        config={"idle_timeout_s": 5, "train_timeout_s": 120},
    )
    assert reason(result)[:2] == ("failed", "train.idle_timeout")


def test_filling_the_artifacts_dir_past_its_quota_fails(run_attack: RunAttack) -> None:
    result = run_attack(
        """
        import os

        def attack(ctx):
            chunk = os.urandom(2**20)
            for index in range(10_000):
                with open(os.path.join(ctx.artifacts_dir, f"fill-{index}.bin"), "wb") as handle:
                    handle.write(chunk)
        """,
        config={"artifacts_quota_mib": 8},
    )
    assert reason(result)[:2] == ("failed", "train.disk_quota")


def test_one_file_larger_than_the_quota_is_refused_by_the_kernel(run_attack: RunAttack) -> None:
    result = run_attack(
        """
        import os

        def attack(ctx):
            with open(os.path.join(ctx.artifacts_dir, "huge.bin"), "wb") as handle:
                handle.write(bytes(16 * 2**20))
        """,
        config={"artifacts_quota_mib": 8},
    )
    status, rule, message = reason(result)
    assert (status, rule) == ("failed", "train.exception")
    assert "File too large" in message


def test_endless_output_is_capped_and_never_reaches_stdout(run_attack: RunAttack) -> None:
    result = run_attack(
        """
        import sys

        def attack(ctx):
            chunk = "x" * 65536
            for _ in range(2048):  # 128 MiB without a newline, then carry on
                sys.stdout.write(chunk)
            sys.stdout.write("\\n")
            sys.stdout.flush()
        """
    )
    assert result.record["status"] == "scored"
    assert len(result.stderr) < 2 * 2**20
    assert "further output not shown" in result.stderr
