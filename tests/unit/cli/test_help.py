"""Every command's --help has an example and its exit codes; completion is documented."""

from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from pipeline.cli import cli


def _commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        found.append((*prefix, name))
        if isinstance(command, click.Group):
            found.extend(_commands(command, (*prefix, name)))
    return found


COMMANDS = _commands(cli)


def test_the_expected_commands_are_there() -> None:
    names = {" ".join(c) for c in COMMANDS}
    expected = {"run", "replay", "status", "failures", "retire", "validate", "check", "config show"}
    assert expected <= names


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_help_has_an_example_and_exit_codes(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(cli, [*command, "--help"], catch_exceptions=False)
    assert result.exit_code == 0
    assert re.search(r"Example:\n +feedback-pipeline ", result.stdout)
    assert "Exit codes: 0 " in result.stdout


def test_top_level_help_documents_shell_completion() -> None:
    result = CliRunner().invoke(cli, ["--help"], catch_exceptions=False)
    assert "_FEEDBACK_PIPELINE_COMPLETE=bash_source feedback-pipeline" in result.stdout


def test_bash_completion_script_is_produced(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_FEEDBACK_PIPELINE_COMPLETE", "bash_source")
    result = CliRunner().invoke(cli, [], prog_name="feedback-pipeline")
    assert "_feedback_pipeline_completion" in result.stdout
