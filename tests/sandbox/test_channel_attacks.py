"""Attacks on the channel: closing it, malformed, oversized and non-finite frames, forged losses."""

from __future__ import annotations

import pytest

from tests.sandbox.conftest import RunAttack, reason

FD = "int(sys.argv[sys.argv.index('--fd') + 1])"


def test_closing_the_channel_ends_the_run(run_attack: RunAttack) -> None:
    result = run_attack(
        f"""
        import os, sys, time

        def attack(ctx):
            os.close({FD})
            time.sleep(30)
        """
    )
    assert reason(result)[:2] == ("failed", "train.channel_closed")


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        ("struct.pack('>II', 5, 0) + b'abcde'", "not JSON"),
        ("struct.pack('>II', 10 * 2**20, 0)", "oversized header"),
        ("struct.pack('>II', 2, 4) + b'{}' + b'body'", "a body from a worker"),
        (
            "(lambda h: struct.pack('>II', len(h), 0) + h)"
            '(b\'{"type":"batch_loss","index":0,"nats":NaN,"tokens":124}\')',
            "non-finite loss",
        ),
        (
            "(lambda h: struct.pack('>II', len(h), 0) + h)"
            '(b\'{"type":"batch_loss","index":999,"nats":1.0,"tokens":124}\')',
            "a loss for a batch never sent",
        ),
    ],
)
def test_a_bad_frame_fails_the_run_as_a_protocol_breach(
    run_attack: RunAttack, frame: str, why: str
) -> None:
    result = run_attack(
        f"""
        import os, struct, sys, time

        def attack(ctx):
            os.write({FD}, {frame})
            time.sleep(30)
        """
    )
    status, rule, _ = reason(result)
    assert (status, rule) == ("failed", "train.protocol"), why


def test_printed_fake_result_markers_never_reach_stdout(run_attack: RunAttack) -> None:
    fake = '{"payloadType":"application/vnd.in-toto+json","record":{"status":"scored"}}'
    result = run_attack(
        f"""
        import sys

        def attack(ctx):
            print({fake!r})
            sys.stdout.flush()
            sys.stderr.write("FINAL_SCORE=0.99\\n")
        """
    )
    assert result.exit_code == 0
    assert result.stdout.count(b"\n") == 1
    assert result.record["status"] == "scored"
    assert "FINAL_SCORE=0.99" in result.stderr  # forwarded to stderr, marked as worker output


def test_a_failure_report_naming_another_step_is_the_miners_fault(run_attack: RunAttack) -> None:
    frame = (
        '(lambda h: struct.pack(\'>II\', len(h), 0) + h)(b\'{"type":"failure",'
        '"where":"load_weights","exc_type":"X","message":"m","traceback":""}\')'
    )
    result = run_attack(
        f"""
        import os, struct, sys, time

        def attack(ctx):
            os.write({FD}, {frame})
            time.sleep(30)
        """
    )
    # Never `error` (the evaluator's fault, retried): a hostile worker cannot choose that.
    assert reason(result)[:2] == ("failed", "train.protocol")


def test_a_negative_loss_is_a_protocol_breach_not_an_evaluator_error(
    run_attack: RunAttack,
) -> None:
    frame = (
        "(lambda h: struct.pack('>II', len(h), 0) + h)"
        '(b\'{"type":"batch_loss","index":0,"nats":-5.0,"tokens":124}\')'
    )
    result = run_attack(
        f"""
        import os, struct, sys, time

        def attack(ctx):
            model = ctx.build_model()
            ctx.iter_train_batches(model, batch_size=4, seq_len=32)  # the stream is open
            os.write({FD}, {frame})
            time.sleep(30)
        """
    )
    assert reason(result)[:2] == ("failed", "train.protocol")
