"""`prism-eval review` and `run --review-verdict`: real processes against a real loopback API.

Runs of `reject_build_raises` stop at the probe (or earlier, at the review stage), which keeps
these end-to-end checks to seconds; one full scored run shows an allowed bundle goes through.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from prism_eval.supervisor.attest.issuing import SigningIdentity
from prism_eval.supervisor.attest.signing import generate_keypair, load_signing_key
from prism_eval.supervisor.attest.verify import ANY_SIGNER, verify_record
from prism_eval.supervisor.config import IntakeLimits
from prism_eval.supervisor.intake.bundle import bundle_digest, load_bundle
from tests.conftest import BUNDLES, CliResult, run_cli
from tests.supervisor.review.test_review import (
    ALLOW,
    REJECT,
    Action,
    ChatServer,
    answer,
    made_verdict,
)

OK = BUNDLES / "ok_tiny_transformer"
FAST = BUNDLES / "reject_build_raises"  # stops at the probe: cheap to run past the review
API_ENV = {"PRISM_EVAL_REVIEW_API_KEY": "sk-cli-test", "OPENROUTER_API_KEY": ""}


@dataclass(frozen=True)
class Keys:
    reviewer_key: Path
    reviewer_pub: Path
    stranger_pub: Path

    def identity(self) -> SigningIdentity:
        return SigningIdentity(load_signing_key(self.reviewer_key), "key")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> Keys:
    home = tmp_path_factory.mktemp("review-keys")
    reviewer_key, reviewer_pub = generate_keypair(home / "reviewer")
    _, stranger_pub = generate_keypair(home / "stranger")
    return Keys(reviewer_key, reviewer_pub, stranger_pub)


@pytest.fixture
def api() -> Iterator[ChatServer]:
    server = ChatServer()
    yield server
    server.close()


def digest_of(source: Path, tmp_path: Path) -> str:
    destination = tmp_path / f"intake-{source.name}"
    destination.mkdir()
    return bundle_digest(load_bundle(source, destination, IntakeLimits()).files)


def write_config(tmp_path: Path, **settings: Any) -> Path:
    path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
    path.write_text("".join(f"{key}: {json.dumps(value)}\n" for key, value in settings.items()))
    return path


def review_cli(api: ChatServer, bundle: Path, keys: Keys, tmp_path: Path, *extra: Any) -> CliResult:
    config = write_config(
        tmp_path, review_timeout_s=1, review_max_attempts=2, review_backoff_s=0.01
    )
    return run_cli(
        "review", bundle, "--key", keys.reviewer_key, "--endpoint", api.url, "--config", config,
        *extra, env=API_ENV,
    )  # fmt: skip


def run_with(bundle: Path, *extra: Any) -> CliResult:
    return run_cli("run", bundle, "--byte-budget", "4096", *extra)


def review_stage(result: CliResult) -> dict[str, Any]:
    stage: dict[str, Any] = next(s for s in result.record["stages"] if s["name"] == "review")
    return stage


def test_allowed_bundle_is_scored_and_its_record_names_the_verdict(
    api: ChatServer, keys: Keys, tmp_path: Path
) -> None:
    api.play(answer(ALLOW))
    api_key_file = tmp_path / "api-key"
    api_key_file.write_text("sk-from-a-file\n")
    verdict_path = tmp_path / "verdict.json"
    reviewed = review_cli(
        api, OK, keys, tmp_path, "--out", verdict_path, "--model", "test/asked",
        "--api-key-file", api_key_file,
    )  # fmt: skip
    assert reviewed.exit_code == 0, reviewed.stderr
    assert reviewed.document()["decision"] == "allow"
    headers, body = api.requests[0]
    assert headers["Authorization"] == "Bearer sk-from-a-file"  # the file wins over the env
    assert body["model"] == "test/asked"
    verdict = json.loads(verdict_path.read_bytes())["verdict"]
    assert (verdict["requested_model"], verdict["model"]) == (
        "test/asked",
        "test/reviewer-2025-01-01",
    )

    policy = write_config(tmp_path, review_policy="required")
    result = run_with(
        OK, "--config", policy, "--review-verdict", verdict_path,
        "--reviewer-key", keys.stranger_pub, "--reviewer-key", keys.reviewer_pub,
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    assert review_stage(result)["status"] == "passed"
    reviewer_keyid = json.loads(verdict_path.read_bytes())["signatures"][0]["keyid"]
    assert result.record["review"] == {
        "policy": "required",
        "verdict_sha256": hashlib.sha256(rfc8785.dumps(verdict)).hexdigest(),
        "decision": "allow",
        "reviewer_keyid": reviewer_keyid,
        "model": "test/reviewer-2025-01-01",
    }
    verify_record(result.stdout.strip(), ANY_SIGNER)


def test_rejecting_review_exits_3_and_the_run_is_rejected_with_its_reasons(
    api: ChatServer, keys: Keys, tmp_path: Path
) -> None:
    api.play(answer(REJECT))
    verdict_path = tmp_path / "verdict.json"
    reviewed = review_cli(api, FAST, keys, tmp_path, "--out", verdict_path)
    assert reviewed.exit_code == 3, reviewed.stderr
    assert reviewed.document()["reasons"] == REJECT["reasons"]

    result = run_with(FAST, "--review-verdict", verdict_path, "--reviewer-key", keys.reviewer_pub)
    assert result.exit_code == 3, result.stderr
    assert result.record["reason"]["rule_id"] == "review.rejected_by_reviewer"
    assert "opens a socket" in result.record["reason"]["message"]
    assert "training.py:7: socket.create_connection(...)" in review_stage(result)["evidence"]
    assert result.record["review"]["decision"] == "reject"


def test_held_review_exits_5_and_the_run_is_rejected(
    api: ChatServer, keys: Keys, tmp_path: Path
) -> None:
    api.play(Action(500, b"upstream down"))
    reviewed = review_cli(api, FAST, keys, tmp_path)  # no --out: the verdict goes to stdout
    assert reviewed.exit_code == 5, reviewed.stderr
    document = reviewed.document()
    assert document["verdict"]["decision"] == "held" and len(api.requests) == 2
    verdict_path = tmp_path / "held.json"
    verdict_path.write_bytes(reviewed.stdout)

    optional = write_config(tmp_path, review_policy="optional")
    result = run_with(
        FAST, "--config", optional, "--review-verdict", verdict_path,
        "--reviewer-key", keys.reviewer_pub,
    )  # fmt: skip
    assert result.exit_code == 3, result.stderr
    assert result.record["reason"]["rule_id"] == "review.held"
    assert "HTTP 500" in result.record["reason"]["message"]
    assert result.record["review"]["decision"] == "held"


@pytest.mark.parametrize(
    ("case", "rule_id"),
    [
        ("another bundle", "review.wrong_bundle"),
        ("tampered", "review.bad_signature"),
        ("untrusted key", "review.untrusted_reviewer"),
    ],
)
def test_run_rejects_a_verdict_it_cannot_trust_even_with_policy_off(
    keys: Keys, tmp_path: Path, case: str, rule_id: str
) -> None:
    bundle_sha256 = digest_of(OK if case == "another bundle" else FAST, tmp_path)
    decision = {"decision": "reject", "reasons": ["hidden weights"]} if case == "tampered" else {}
    raw = made_verdict(keys.identity(), bundle_sha256, **decision)
    if case == "tampered":
        document = json.loads(raw)
        document["verdict"].update(decision="allow", reasons=[])
        raw = json.dumps(document).encode()
    verdict_path = tmp_path / "verdict.json"
    verdict_path.write_bytes(raw)
    trusted = keys.stranger_pub if case == "untrusted key" else keys.reviewer_pub
    result = run_with(FAST, "--review-verdict", verdict_path, "--reviewer-key", trusted)
    assert result.exit_code == 3, result.stderr
    assert result.record["reason"]["rule_id"] == rule_id
    assert review_stage(result)["status"] == "rejected"
    assert result.record["review"] == {
        "policy": "off", "verdict_sha256": None, "decision": None, "reviewer_keyid": None,
        "model": None,
    }  # fmt: skip


@pytest.mark.parametrize("policy", ["required", "optional", "off"])
def test_missing_verdict_under_each_policy(tmp_path: Path, policy: str) -> None:
    result = run_with(FAST, "--config", write_config(tmp_path, review_policy=policy))
    assert result.record["review"]["policy"] == policy
    assert result.record["review"]["verdict_sha256"] is None
    stage = review_stage(result)
    if policy == "required":
        assert result.exit_code == 3
        assert result.record["reason"]["rule_id"] == "review.missing_verdict"
        assert stage["status"] == "rejected"
    else:
        assert stage["status"] == "skipped" and f"policy is {policy}" in stage["message"]
        assert result.record["reason"]["rule_id"] == "probe.build_failed"  # the run went on


def test_review_without_an_api_key_is_an_error_and_writes_nothing(
    keys: Keys, tmp_path: Path
) -> None:
    out = tmp_path / "verdict.json"
    result = run_cli(
        "review", FAST, "--key", keys.reviewer_key, "--out", out,
        env={"PRISM_EVAL_REVIEW_API_KEY": "", "OPENROUTER_API_KEY": ""},
    )  # fmt: skip
    assert result.exit_code == 5
    assert "review.no_api_key" in result.stderr and result.stdout == b""
    assert not out.exists()


def test_the_example_record_states_its_review_policy(example_run: tuple[CliResult, Path]) -> None:
    result, _ = example_run  # the cpu profile: policy off, no verdict, still said so
    assert result.record["review"] == {
        "policy": "off", "verdict_sha256": None, "decision": None, "reviewer_keyid": None,
        "model": None,
    }  # fmt: skip
