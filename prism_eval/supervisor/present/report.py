"""Supervisor: a self-contained HTML page for people, from a record (`prism-eval report`).

The page shows the status and reason, the stage table with timings, the online learning curve
(bits per byte against bytes seen, drawn with matplotlib and embedded as a PNG), the audit
and held-out figures, the ranks check, the isolation table and the environment. Everything
from the record is HTML-escaped: failure messages quote miner code, which is hostile.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from prism_eval.supervisor.attest import Record, Verified

_STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.15em; margin-top: 1.8em; }
table { border-collapse: collapse; width: 100%; } td, th { padding: .25em .6em; text-align: left;
  border-bottom: 1px solid #ddd; vertical-align: top; } th { background: #f4f4f4; }
.status { display: inline-block; padding: .1em .6em; border-radius: .3em; color: #fff; }
.scored { background: #2a7d2e; } .rejected { background: #b35c00; }
.failed { background: #b32020; } .error { background: #555; }
code { font-size: .92em; } img { max-width: 100%; }
"""


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def curve_png(record: Record) -> bytes | None:
    """The learning curve as PNG bytes, or None when the record has no stream."""
    if record.stream is None or not record.stream.curve:
        return None
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    points = record.stream.curve
    figure, axes = pyplot.subplots(figsize=(7.5, 3.6), dpi=110)
    axes.plot([p.bytes for p in points], [p.batch_bpb for p in points], alpha=0.35,
              label="per batch")  # fmt: skip
    axes.plot([p.bytes for p in points], [p.bpb for p in points], linewidth=2,
              label="cumulative (the score)")  # fmt: skip
    axes.set_xlabel("bytes seen")
    axes.set_ylabel("bits per byte")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    pyplot.close(figure)
    return buffer.getvalue()


def render_report(verified: Verified) -> str:
    """The whole page as one HTML string (no external resources)."""
    record = verified.record
    subject = record.subject
    signer = "a pinned key" if verified.pinned else "the record's own key (not pinned)"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>prism-eval record {_e(record.subject.bundle_sha256 or '')[:16]}</title>",
        f"<style>{_STYLE}</style></head><body>",
        f"<h1>prism-eval record <span class='status {_e(record.status)}'>{_e(record.status)}"
        "</span></h1>",
        f"<p>{_e(record.reason.message)}"
        + (f" <code>{_e(record.reason.rule_id)}</code>" if record.reason.rule_id else "")
        + (f"<br>hint: {_e(record.reason.hint)}" if record.reason.hint else "")
        + "</p>",
        f"<p>{_e(subject.architecture_name or 'Unnamed architecture')}: bundle "
        f"<code>{_e(subject.bundle_sha256)}</code> ({_e(subject.source)}"
        + (f", kind {_e(subject.kind)}" if subject.kind else "")
        + (f", architecture id {_e(subject.architecture_id)}" if subject.architecture_id else "")
        + (f"; {subject.compressed_bytes:,} bytes compressed" if subject.compressed_bytes else "")
        + ")"
        f"<br>Signature verified against {signer}: key <code>{_e(record.signer.keyid[:16])}"
        f"…</code> ({_e(record.signer.mode)})<br>Evaluated {_e(record.started_at)} → "
        f"{_e(record.finished_at)} by prism-eval {_e(record.evaluator.version)}</p>",
    ]
    if record.score is not None:
        score = record.score
        parts.append("<h2>Score</h2>" + _table(
            ["bpb", "final score", "held-out delta", "gap", "multipliers"],
            [[score.bpb, score.final_score, score.heldout_delta, score.gap,
              score.multipliers or "none"]],
        ))  # fmt: skip
    png = curve_png(record)
    if png is not None:
        encoded = base64.b64encode(png).decode("ascii")
        parts.append(
            "<h2>Online learning curve</h2>"
            f"<img id='curve' alt='bits per byte against bytes seen' "
            f"src='data:image/png;base64,{encoded}'>"
        )
    parts.append("<h2>Stages</h2>" + _table(
        ["stage", "status", "rule", "seconds", "message"],
        [[s.name, s.status, s.rule_id or "", f"{s.seconds:.2f}", s.message or ""]
         for s in record.stages],
    ))  # fmt: skip
    if record.run is not None:
        run = record.run
        parts.append("<h2>Run</h2>" + _table(
            ["batch × seq", "batches", "tokens", "bytes", "stopped by", "parameters", "seconds"],
            [[f"{run.batch_size} × {run.seq_len}", run.batches, run.tokens, run.bytes,
              run.stopped_by, run.model_params, run.wall_seconds]],
        ))  # fmt: skip
    if record.prefix_audit is not None:
        prefix = record.prefix_audit
        parts.append(
            f"<h2>Prefix audit</h2><p>{prefix.steps} steps audited (rate {prefix.rate:g}), "
            f"{prefix.positions} positions; largest difference {prefix.max_diff_nats:.3g} nats "
            f"(tolerance {prefix.tolerance_nats:g}). Chance to catch a predictor leaking at 1 % "
            f"of positions: {prefix.catch_spread_1pct:.4f}; in 1 % of steps: "
            f"{prefix.catch_steps_1pct:.4f}.</p>"
        )
    if record.audit is not None:
        audit = record.audit
        parts.append("<h2>Audit and held-out</h2>" + _table(
            ["figure", "value"],
            [["step-0 loss reported / replayed (nats)",
              f"{audit.step0_reported_nats} / {audit.step0_replayed_nats}"],
             [f"last {audit.recent_batches} batches online / saved weights (bpb)",
              f"{audit.recent_online_bpb:.4f} / {audit.recent_final_bpb:.4f}"],
             ["held-out untrained twin / trained (bpb)",
              "no held-out data" if audit.heldout_trained_bpb is None
              else f"{audit.heldout_twin_bpb:.4f} / {audit.heldout_trained_bpb:.4f}"]],
        ))  # fmt: skip
    if record.ranks is not None:
        ranks = record.ranks
        parts.append(
            f"<h2>Ranks check</h2><p>train(ctx) as {ranks.nproc} ranks ({_e(ranks.backend)} on "
            f"{_e(ranks.device)}, batches of {ranks.batch_size} × {ranks.seq_len}) in "
            f"{ranks.wall_seconds:.1f} s; every rank saved weights "
            f"<code>{_e(ranks.final_weights_sha256[:16])}…</code>. Not part of the score.</p>"
            + _table(
                ["rank", "batches", "tokens", "bytes"],
                [[r.rank, r.batches, r.tokens, r.bytes] for r in ranks.ranks],
            )
        )  # fmt: skip
    parts.append("<h2>Isolation</h2>" + _table(
        ["layer", "state", "detail"], [[x.name, x.state, x.detail] for x in record.isolation]
    ))  # fmt: skip
    environment = record.environment.model_dump()
    parts.append("<h2>Environment</h2>" + _table(
        ["field", "value"], [[k, v] for k, v in environment.items()]
    ))  # fmt: skip
    parts.append("</body></html>")
    return "\n".join(parts)
