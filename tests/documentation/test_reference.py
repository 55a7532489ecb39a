"""The site's generated reference (docs/hooks/reference.py) covers what the code has: every
command, every setting, every metric a run serves; and the pages ask only for tables it
makes."""

from __future__ import annotations

import importlib.util
import re
from types import ModuleType

import click
import pytest
from paths import ROOT

from pipeline.cli import cli
from pipeline.config import Settings

DOCS = ROOT / "docs"


def _reference() -> ModuleType:
    spec = importlib.util.spec_from_file_location("docs_reference", DOCS / "hooks" / "reference.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


REFERENCE = _reference()


def test_every_command_and_subcommand_has_its_help_on_the_page() -> None:
    page = REFERENCE.cli_reference()
    names = [name for name, command in cli.commands.items()]
    subcommands = [
        f"{name} {sub}"
        for name, command in cli.commands.items()
        if isinstance(command, click.Group)
        for sub in command.commands
    ]
    for name in [*names, *subcommands]:
        assert f"## `feedback-pipeline {name}`" in page, name
    assert "Exit codes: 0 every record sent" in page  # the epilogs come along


def test_every_setting_has_a_row_with_its_variable_and_default() -> None:
    rows = {row[0]: row for row in REFERENCE.settings_rows()}

    assert set(rows) == set(Settings.model_fields)
    assert rows["concurrency"][1:4] == ("1 to 1000", "16", "FEEDBACK_PIPELINE_CONCURRENCY")
    assert rows["new_ledger"][1] == "`check` \\| `adopt` \\| `send`"
    assert rows["rate"][4] == "`--rate`"
    assert rows["backoff"][5]  # no flag: the model's description says what it is
    assert all(row[5] for name, row in rows.items()), "a setting without a meaning"


def test_every_metric_a_run_serves_is_listed() -> None:
    table = REFERENCE.metrics_reference()
    served = {
        "feedback_records_total", "feedback_requests_total", "feedback_concurrency_limit",
        "feedback_concurrency_ceiling", "feedback_rate_limit", "feedback_input_bytes",
        "feedback_drain_waiting", "feedback_lease_lost", "feedback_request_duration_seconds",
    }  # fmt: skip
    listed = set(re.findall(r"^\| `(\w+)`", table, re.M))
    assert served <= listed


def test_every_command_says_its_exit_codes() -> None:
    table = REFERENCE.exit_codes_reference()
    rows = re.findall(r"^\| `feedback-pipeline ([\w -]+)` \| (.+) \|$", table, re.M)
    commands = {name for name, _ in rows}
    assert {"run", "replay", "status", "config show", "fake-server"} <= commands
    assert len(commands) == 12
    assert all(text.startswith("0 ") for _, text in rows)


def test_the_schema_is_the_migrations() -> None:
    schema = REFERENCE.ledger_schema()
    assert "CREATE TABLE records" in schema
    assert "retired_reason" in schema  # the last SQLite migration
    assert "CREATE SEQUENCE SCHEMA.fences" in schema  # PostgreSQL's fencing tokens


def test_a_marker_becomes_its_table_and_an_unknown_one_is_an_error() -> None:
    page = "intro\n<!-- reference:ledger-states -->\nend"
    assert "`in_flight`, `unknown`, `sent`" in REFERENCE.on_page_markdown(page)
    with pytest.raises(ValueError, match="unknown reference marker 'nope'"):
        REFERENCE.on_page_markdown("<!-- reference:nope -->")


def test_every_marker_in_the_pages_is_known() -> None:
    markers = {
        m for p in DOCS.rglob("*.md") for m in REFERENCE.MARKER.findall(p.read_text("utf-8"))
    }
    assert markers == set(REFERENCE.GENERATORS)
