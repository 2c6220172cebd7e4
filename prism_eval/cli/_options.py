"""Supervisor: options that several commands share, each declared once, as decorators."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import click

F = TypeVar("F", bound=Callable[..., Any])
Decorator = Callable[[Any], Any]


def _all(*options: Decorator) -> Decorator:
    def apply(function: Any) -> Any:
        for option in reversed(options):
            function = option(function)
        return function

    return apply


def profile_option(function: F) -> F:
    """--profile: the evaluation profile (prism_eval/supervisor/profiles/)."""
    return click.option("--profile", default="cpu", show_default=True,
                        help="Evaluation profile: cpu or official.")(function)  # fmt: skip


def config_options(function: F) -> F:
    """--profile and --config: the profile and a YAML file laid over it."""
    overlay = click.option("--config", "config_file", type=click.Path(path_type=Path),
                           help="A YAML file laid over the profile.")  # fmt: skip
    return cast(F, _all(profile_option, overlay)(function))


def trust_options(function: F) -> F:
    """--pubkey, --keyring and --any-signer: whose signatures a command accepts. Without a
    trusted key the command refuses (verify.no_trusted_key) unless --any-signer is given."""
    trust = _all(
        click.option("--pubkey", "pubkeys", multiple=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="A trusted signer's public key (repeatable)."),
        click.option("--keyring", "keyrings", multiple=True,
                     type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="A file of trusted public keys, PEM blocks one after another "
                     "(repeatable)."),
        click.option("--any-signer", is_flag=True,
                     help="Accept the key the record names: integrity only, not identity "
                     "(the output says identity: unverified)."),
    )  # fmt: skip
    return cast(F, trust(function))


def _help(when: str, text: str) -> str:
    words = f"{when}{text}"
    return words[0].upper() + words[1:]


def inputs_options(when: str = "") -> Decorator:
    """--data, --heldout, --review-verdict, --reviewer-key: what an evaluation is given. `when`
    prefixes the help (`verify` takes them only with --reproduce)."""
    return _all(
        click.option("--data", "data_dir", type=click.Path(path_type=Path),
                     help=_help(when, "the locked data dir (default: the embedded data).")),
        click.option("--heldout", "heldout_dir", type=click.Path(path_type=Path),
                     help=_help(when, "the held-out data dir.")),
        click.option("--review-verdict", "review_verdict", type=click.Path(path_type=Path),
                     help=_help(when, "the signed verdict from `prism-eval review`.")),
        click.option("--reviewer-key", "reviewer_keys", multiple=True,
                     type=click.Path(path_type=Path),
                     help=_help(when, "a trusted reviewer's public key (repeatable).")),
    )  # fmt: skip
