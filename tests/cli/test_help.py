"""The command line teaches: every command's --help shows an example, and an option that
several commands share is declared once (prism_eval/cli/_options.py)."""

from __future__ import annotations

import ast
from collections import defaultdict

import click
import pytest
from click.testing import CliRunner

from prism_eval.cli import main
from tests.conftest import ROOT

# Flags that mean the same wherever they appear (cli/_options.py declares each once).
SHARED = {"--profile", "--config", "--pubkey", "--keyring", "--any-signer", "--data",
          "--heldout", "--review-verdict", "--reviewer-key"}  # fmt: skip


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [path]
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*path, name)))
        else:
            found.append((*path, name))
    return found


@pytest.mark.parametrize("path", _commands(main), ids=lambda p: " ".join(p) or "prism-eval")
def test_every_help_shows_an_example(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"prism-eval {' '.join(path)} --help has no example"
    assert "prism-eval " in result.output.split("Example", 1)[1]


def test_an_option_is_declared_once_for_one_meaning() -> None:
    """The same option with the same help in two places is a shared option written twice."""
    declared: dict[tuple[str, str], list[str]] = defaultdict(list)
    for path in sorted((ROOT / "prism_eval" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and ast.unparse(node.func) == "click.option"):
                continue
            flag = ast.literal_eval(node.args[0])
            help_text = next((ast.unparse(k.value) for k in node.keywords if k.arg == "help"), "")
            declared[(flag, help_text)].append(f"{path.name}:{node.lineno}")
    assert {key: places for key, places in declared.items() if len(places) > 1} == {}


def test_commands_that_share_an_option_share_its_declaration() -> None:
    """--profile, --pubkey, --data ... mean the same wherever they appear: one help text."""
    helps: dict[str, set[str]] = defaultdict(set)  # lowercase: "With --reproduce: the ..."
    for path in _commands(main):
        command = main
        for name in path:
            command = command.commands[name]  # type: ignore[attr-defined]
        for param in command.params:
            if isinstance(param, click.Option) and param.opts[0] in SHARED:
                helps[param.opts[0]].add(
                    (param.help or "").lower().removeprefix("with --reproduce: ")
                )
    assert {flag: h for flag, h in helps.items() if len(h) > 1} == {}
    assert set(helps) == SHARED
