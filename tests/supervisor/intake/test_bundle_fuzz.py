"""Malformed archives are the miner's problem: every mutation of a valid bundle zip ends in a
`Rejected` with a rule id, or passes intake → contract → lint. Never another exception (that
would be the evaluator's `error`, retried forever)."""

from __future__ import annotations

import io
import tempfile
import zipfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prism_eval.errors import Rejected
from prism_eval.supervisor.config import IntakeLimits
from prism_eval.supervisor.intake.bundle import load_bundle
from prism_eval.supervisor.intake.contract import check_contract
from prism_eval.supervisor.intake.lint import lint_bundle, raise_on_findings
from tests.conftest import BUNDLES


def valid_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted((BUNDLES / "ok_tiny_transformer").iterdir()):
            archive.writestr(path.name, path.read_bytes())
    return buffer.getvalue()


VALID = valid_zip()
MUTATIONS = st.tuples(
    st.lists(
        st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8
    ),
    st.one_of(st.none(), st.integers(0, len(VALID))),
)


def intake_to_lint(data: bytes, work: Path) -> None:
    archive, destination = work / "bundle.zip", work / "bundle"
    archive.write_bytes(data)
    destination.mkdir()
    bundle = load_bundle(archive, destination, IntakeLimits())
    contract = check_contract(bundle)
    raise_on_findings(lint_bundle(bundle, contract))


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(MUTATIONS)
def test_a_mutated_archive_is_rejected_with_a_rule_or_passes(
    mutation: tuple[list[tuple[int, int]], int | None],
) -> None:
    flips, cut = mutation
    data = bytearray(VALID)
    for offset, value in flips:
        data[offset] = value
    if cut is not None:
        del data[cut:]
    with tempfile.TemporaryDirectory() as work:
        try:
            intake_to_lint(bytes(data), Path(work))
        except Rejected as exc:
            assert exc.rule_id and exc.message


def test_the_unmutated_archive_passes(tmp_path: Path) -> None:
    intake_to_lint(VALID, tmp_path)


def test_a_corrupt_member_offset_is_a_bad_archive_not_an_evaluator_error(tmp_path: Path) -> None:
    data = bytearray(VALID)
    directory = data.rfind(b"PK\x01\x02")  # the last central-directory entry
    data[directory + 42 : directory + 46] = (2**32 - 9).to_bytes(4, "little")  # its offset
    try:
        intake_to_lint(bytes(data), tmp_path)
    except Rejected as exc:
        assert exc.rule_id == "intake.bad_archive"
    else:
        raise AssertionError("a member at an impossible offset was read")
