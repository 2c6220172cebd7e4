"""Layers the config requires: a missing one turns the run into an error; all hold here."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from prism_eval.errors import EvaluatorError
from prism_eval.supervisor.config import ISOLATION_LAYERS, load_config
from prism_eval.supervisor.doctor import selftest_spec
from prism_eval.supervisor.sandbox.session import start_job


@pytest.fixture
def work() -> Iterator[Path]:
    """A work dir the unprivileged worker uid can reach (pytest's tmp root is 0700)."""
    path = Path(tempfile.mkdtemp(prefix="prism-eval-test-"))
    yield path
    shutil.rmtree(path)


def _active_layers(work: Path, isolated: bool, required: list[str]) -> set[str]:
    config = load_config("cpu", None, {"isolation_required": required})
    spec = selftest_spec(work, config, isolated=isolated)
    worker, _, layers = start_job(spec, work / "scratch", config)
    worker.close()
    return {layer.name for layer in layers if layer.state == "active"}


def test_a_required_layer_that_did_not_hold_is_an_error(work: Path) -> None:
    with pytest.raises(EvaluatorError) as caught:
        _active_layers(work, isolated=False, required=["landlock", "seccomp"])
    assert caught.value.rule_id == "sandbox.layer_unavailable"
    assert "landlock" in caught.value.message and "seccomp" in caught.value.message


def test_every_layer_holds_on_this_host_when_all_are_required(work: Path) -> None:
    assert _active_layers(work, isolated=True, required=list(ISOLATION_LAYERS)) == set(
        ISOLATION_LAYERS
    )


def _layers_with(work: Path, **sandbox: object) -> dict[str, str]:
    config = load_config("cpu", None, {})
    spec = selftest_spec(work, config)
    spec = spec.model_copy(update={"sandbox": spec.sandbox.model_copy(update=sandbox)})
    worker, _, layers = start_job(spec, work / "scratch", config)
    worker.close()
    return {layer.name: layer.detail for layer in layers}


def test_tcp_is_granted_to_ranks_only_inside_a_private_network_namespace(work: Path) -> None:
    ranked = _layers_with(work, allow_inet=True)
    assert ranked["network_namespace"] == "private namespace; only lo, up"
    assert ranked["seccomp"].endswith("sockets: AF_UNIX, AF_INET and route netlink")
    assert "TCP left to the private network namespace" in ranked["landlock"]
    # Without its own namespace, loopback TCP would reach the host: the worker keeps it shut.
    shared = _layers_with(work, allow_inet=True, network_namespace=False)
    assert shared["seccomp"].endswith("sockets: AF_UNIX only")
    assert "all TCP bind/connect refused" in shared["landlock"]
