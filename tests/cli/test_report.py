"""`prism-eval report`: a self-contained page, rendered by a real headless Chromium."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from matplotlib import image

from prism_eval.supervisor.attest.verify import Verified
from prism_eval.supervisor.present.report import render_report
from tests.conftest import CliResult, run_cli
from tests.supervisor.attest.test_record_verify import make_record

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def test_report_embeds_the_curve_and_escapes_record_text() -> None:
    record = make_record(message="<script>alert('miner')</script>")
    page = render_report(Verified(record, identity="unverified", signatures=[]))
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "data:image/png;base64," in page and "id='curve'" in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from outside
    assert "Tiny &lt;b&gt;transformer&lt;/b&gt;: bundle" in page
    assert "kind full; 1,234 bytes compressed" in page
    assert "<h2>Prefix audit</h2><p>1 steps audited (rate 0.1), 4 positions" in page


@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_report_renders_in_headless_chromium_with_the_curve(
    example_run: tuple[CliResult, Path], tmp_path: Path
) -> None:
    _, out = example_run
    page = tmp_path / "report.html"
    result = run_cli("report", out / "record.json", "--any-signer", "--out", page)
    assert result.exit_code == 0, result.stderr
    screenshot = tmp_path / "report.png"
    subprocess.run(
        [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--screenshot={screenshot}", "--window-size=1000,1400", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    pixels = image.imread(screenshot)[..., :3]  # (height, width, rgb) in [0, 1]
    # The cumulative curve is drawn in matplotlib's orange (#ff7f0e): it must be on screen.
    orange = (abs(pixels[..., 0] - 1.0) < 0.05) & (abs(pixels[..., 1] - 0.5) < 0.06)
    orange &= pixels[..., 2] < 0.15
    assert orange.sum() > 200
    # And the scored status badge (green) rendered.
    green = (abs(pixels[..., 0] - 0.165) < 0.05) & (abs(pixels[..., 1] - 0.49) < 0.05)
    assert green.sum() > 50


def test_a_report_that_cannot_be_written_is_an_error_not_a_traceback(
    example_run: tuple[CliResult, Path], tmp_path: Path
) -> None:
    _, out = example_run
    result = run_cli(
        "report", out / "record.json", "--any-signer", "--out", tmp_path / "missing" / "r.html"
    )
    assert result.exit_code == 5
    assert "[output.unwritable] cannot write" in result.stderr
    assert "Traceback" not in result.stderr
