"""The scored trainer's one-rank rendezvous: which init_process_group calls it completes."""

from __future__ import annotations

from typing import Any

import pytest
import torch.distributed as dist

from prism_eval.worker.process_group import RENDEZVOUS_PORT, one_rank_rendezvous

ONE_RANK = {"init_method": f"tcp://127.0.0.1:{RENDEZVOUS_PORT}", "rank": 0, "world_size": 1}


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[tuple[Any, ...], dict[str, Any]]]:
    """What reaches torch's init_process_group once the rendezvous is installed."""
    seen: list[tuple[tuple[Any, ...], dict[str, Any]]] = []
    monkeypatch.setattr(dist, "init_process_group", lambda *a, **k: seen.append((a, k)))
    for name in ("MASTER_ADDR", "GLOO_SOCKET_IFNAME", "NCCL_SOCKET_IFNAME"):
        monkeypatch.delenv(name, raising=False)
    one_rank_rendezvous()
    return seen


@pytest.mark.parametrize(
    ("args", "kwargs", "expected"),
    [
        (("gloo",), {}, {**ONE_RANK}),
        ((), {"backend": "gloo"}, {"backend": "gloo", **ONE_RANK}),
        ((), {"init_method": None, "rank": -1, "world_size": -1}, {**ONE_RANK}),
        ((), {"rank": 0, "world_size": 1}, {**ONE_RANK}),
    ],
)
def test_a_call_without_a_rendezvous_becomes_rank_0_of_1(
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    expected: dict[str, Any],
) -> None:
    dist.init_process_group(*args, **kwargs)
    assert calls == [(args, expected)]


@pytest.mark.parametrize(
    ("args", "kwargs"),
    [
        (("gloo", "file:///tmp/rendezvous"), {}),
        ((), {"backend": "gloo", "init_method": "tcp://127.0.0.1:1234", "rank": 0}),
        ((), {"backend": "gloo", "store": object(), "rank": 0, "world_size": 1}),
    ],
)
def test_a_call_that_names_its_rendezvous_is_left_alone(
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> None:
    dist.init_process_group(*args, **kwargs)
    assert calls == [(args, kwargs)]


def test_torchrun_variables_are_left_to_torch(
    calls: list[tuple[tuple[Any, ...], dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    dist.init_process_group("gloo")
    assert calls == [(("gloo",), {})]
