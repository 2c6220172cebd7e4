"""Supervisor: the `prism-eval` group, error handling and output helpers of every command."""

from __future__ import annotations

import functools
import json
import os
import sys
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import click

import prism_eval
from prism_eval import __version__
from prism_eval.errors import EvaluatorError, PrismError

F = TypeVar("F", bound=Callable[..., Any])


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="prism-eval")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
def main(debug: bool) -> None:
    """prism-eval: score a PRISM bundle into a signed, reproducible record.

    \b
    Examples:
      prism-eval run bundle.zip > record.json        # evaluate (embedded data by default)
      prism-eval verify record.json --pubkey v.pub   # check a record
      prism-eval doctor                              # what this host can do
    """
    if debug:
        os.environ["PRISM_EVAL_DEBUG"] = "1"


def handles_errors(function: F) -> F:
    """Turn a PrismError into its hint on stderr and its exit code; --debug shows tracebacks."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except PrismError as exc:
            if os.environ.get("PRISM_EVAL_DEBUG"):
                traceback.print_exc()
            click.echo(f"prism-eval: {exc}", err=True)
            for line in exc.evidence:
                click.echo(f"  {line}", err=True)
            sys.exit(exc.exit_code)

    return wrapper  # type: ignore[return-value]


def emit(document: Any) -> None:
    """The command's one JSON document on stdout."""
    sys.stdout.write(json.dumps(document, indent=None, sort_keys=True) + "\n")
    sys.stdout.flush()


def write_out(path: Path, data: bytes) -> None:
    """Write an output file; one that cannot be written is the operator's error (exit 5)."""
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise EvaluatorError(
            "output.unwritable", f"cannot write {path}: {exc.strerror or exc}"
        ) from exc


def utc_iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def default_data_dir() -> Path:
    """$PRISM_EVAL_DATA, else the checkout's examples/data, else the installed copy."""
    if os.environ.get("PRISM_EVAL_DATA"):
        return Path(os.environ["PRISM_EVAL_DATA"])
    checkout = Path(prism_eval.__file__).resolve().parents[1] / "examples" / "data"
    if (checkout / "MANIFEST.json").is_file():
        return checkout
    return Path(sys.prefix) / "share" / "prism-eval" / "data"
