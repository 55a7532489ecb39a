"""The site's reference pages, generated from the code at build time (an mkdocs hook).

A page asks for a table by a marker line, ``<!-- reference:NAME -->``, which the build
replaces by what the code says now: every command's ``--help`` (click), every setting with
its default, range, environment variable and flag (the pydantic settings model and the click
options), each command's exit codes (its help's epilog), the metrics (a run's own Prometheus
registry), the ledger's states and schema. A table copied by hand drifts from the code; one
read from it cannot.

The tests import this module too (``tests/documentation/``, ``tests/unit/config/``): the
settings table they check is the one the site shows.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable, Iterator
from typing import Any, get_args

import annotated_types
import click
from prometheus_client.samples import Sample

from pipeline.cli import cli
from pipeline.config import ENV_PREFIX, Settings
from pipeline.ledger.postgres.schema import MIGRATIONS as PG_MIGRATIONS
from pipeline.ledger.sqlite.schema import migrate
from pipeline.models import Status
from pipeline.observe.metrics import RunMetrics
from pipeline.observe.monitor import Monitor
from pipeline.observe.pulse import Pulse
from pipeline.observe.summary import Summary

MARKER = re.compile(r"^<!-- reference:([a-z-]+) -->$", re.M)
PROG = "feedback-pipeline"


def _commands(group: click.Group, parent: click.Context) -> Iterator[tuple[str, str]]:
    for name in sorted(group.commands):
        command = group.commands[name]
        ctx = click.Context(command, info_name=name, parent=parent, terminal_width=100)
        yield ctx.command_path, command.get_help(ctx)
        if isinstance(command, click.Group):
            yield from _commands(command, ctx)


def cli_reference() -> str:
    """Every command's ``--help``, as a user sees it."""
    root = click.Context(cli, info_name=PROG, terminal_width=100)
    parts = [f"## `{PROG}`\n\n```text\n{cli.get_help(root)}\n```\n"]
    for path, text in _commands(cli, root):
        parts.append(f"## `{path}`\n\n```text\n{text}\n```\n")
    return "\n".join(parts)


def exit_codes_reference() -> str:
    """Each command's exit codes, as its ``--help`` states them (the epilog's paragraph)."""
    rows = ["| command | exit codes |", "| --- | --- |"]
    root = click.Context(cli, info_name=PROG)
    for path, command in _all_commands(cli, root):
        said = re.search(r"Exit codes: (.*)", command.epilog or "", re.S)
        if said:
            rows.append(f"| `{path}` | {' '.join(said.group(1).split())} |")
    return "\n".join(rows) + "\n"


def _all_commands(group: click.Group, parent: click.Context) -> Iterator[tuple[str, click.Command]]:
    for name in sorted(group.commands):
        command = group.commands[name]
        ctx = click.Context(command, info_name=name, parent=parent)
        if isinstance(command, click.Group):
            yield from _all_commands(command, ctx)
        else:
            yield ctx.command_path, command


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def setting_range(name: str) -> str:
    """The range of values the model accepts, read from its constraints."""
    field = Settings.model_fields[name]
    low = high = None
    for item in field.metadata:
        if isinstance(item, annotated_types.Ge):
            low = item.ge
        elif isinstance(item, annotated_types.Le):
            high = item.le
    if low is not None and high is not None:
        return f"{_number(float(str(low)))} to {_number(float(str(high)))}"
    choices = [a for a in get_args(field.annotation) if isinstance(a, str)]
    literal = [a for arg in get_args(field.annotation) for a in get_args(arg) if isinstance(a, str)]
    options = choices or literal
    if options:
        return " \\| ".join(f"`{o}`" for o in options)
    if (
        field.annotation is bool
        or "Switch" in repr(field.annotation)
        or "bool" in repr(field.annotation)
    ):
        return "`true` \\| `false`"
    return ""


def setting_default(name: str) -> str:
    field = Settings.model_fields[name]
    default = field.get_default(call_default_factory=True)
    if default is None:
        return "none"
    if isinstance(default, bool):
        return "true" if default else "false"
    if isinstance(default, int | float):
        return _number(float(default))
    if default == {}:
        return "none"
    return f"`{default}`"


def _flags() -> dict[str, tuple[str, str]]:
    """Setting name -> (its flags, its help text), from the commands' options."""
    found: dict[str, tuple[str, str]] = {}
    for command in cli.commands.values():
        for param in command.params:
            if isinstance(param, click.Option) and param.name and param.name not in found:
                help_text = re.sub(r"\s*\[[^\]]*\]\.?$", "", param.help or "").strip()
                flags = ", ".join(f"`{o}`" for o in [*param.opts, *param.secondary_opts])
                found[param.name] = (flags, help_text)
    return found


#: Settings whose flag is not named like them.
_FLAG_NAMES = {"format": "fmt"}


def settings_rows() -> list[tuple[str, str, str, str, str, str]]:
    """(setting, range, default, environment variable, flag, meaning) for every setting."""
    flags = _flags()
    rows = []
    for name in Settings.model_fields:
        flag, meaning = flags.get(_FLAG_NAMES.get(name, name), ("", ""))
        meaning = Settings.model_fields[name].description or meaning
        rows.append((name, setting_range(name), setting_default(name),
                     f"{ENV_PREFIX}{name.upper()}", flag, meaning.replace("|", "\\|")))  # fmt: skip
    return rows


def settings_reference() -> str:
    """A section per setting (an anchor and a line in the page's table of contents each): what
    it means, then its range, default, variable and flag."""
    parts = []
    for name, rng, default, env, flag, meaning in settings_rows():
        facts = [f"range {rng}" if rng else "", f"default {default}", f"`{env}`", flag]
        parts.append(
            f"### `{name}`\n\n{meaning.replace(chr(92) + '|', '|')}\n\n"
            + " · ".join(f for f in facts if f)
            + "\n"
        )
    return "\n".join(parts)


class _Flow:
    """What a sending run's flow control shows (a run that sends has every metric)."""

    limit, cap, api_cap, rate, ceiling = 16, None, None, 50.0, 16


class _Sending:
    flow, retries = _Flow(), 0


class _File:
    def progress(self) -> tuple[int, int]:
        return (0, 1)


def _metric_samples() -> list[tuple[str, str, str, list[Sample]]]:
    summary = Summary("run", "r")
    pulse = Pulse("r", "c", heartbeat_at=1.0, progress_at=1.0, backlog=0, pending=0)
    metrics = RunMetrics(Monitor(summary, [_File()], sending=_Sending()), pulse)
    metrics.on_response(201, 0.01)
    return [(m.name, m.type, m.documentation, m.samples) for m in metrics.registry.collect()]


def metrics_reference() -> str:
    lines = ["| metric | type | labels | meaning |", "| --- | --- | --- | --- |"]
    for name, kind, doc, samples in _metric_samples():
        shown = f"{name}_total" if kind == "counter" else name
        labels = sorted({k for s in samples for k in s.labels if k not in ("le",)})
        lines.append(f"| `{shown}` | {kind} | {', '.join(f'`{x}`' for x in labels)} | {doc} |")
    return "\n".join(lines) + "\n"


def ledger_states() -> str:
    return ", ".join(f"`{s.value}`" for s in Status) + "\n"


def ledger_schema() -> str:
    db = sqlite3.connect(":memory:")
    migrate(db, read_only=False)
    sqlite_sql = ";\n".join(
        row[0] for row in db.execute("SELECT sql FROM sqlite_master WHERE sql IS NOT NULL")
    )
    db.close()
    postgres_sql = "\n".join(
        PG_MIGRATIONS[v].strip().format(s="SCHEMA") for v in sorted(PG_MIGRATIONS)
    )
    return (
        "### SQLite\n\n```sql\n" + sqlite_sql + ";\n```\n\n"
        "### PostgreSQL (`SCHEMA`: `public` or the URL's `schema=`), migrations in order\n\n"
        "```sql\n" + postgres_sql + "\n```\n"
    )


GENERATORS: dict[str, Callable[[], str]] = {
    "cli": cli_reference,
    "settings": settings_reference,
    "metrics": metrics_reference,
    "ledger-states": ledger_states,
    "exit-codes": exit_codes_reference,
    "ledger-schema": ledger_schema,
}


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs' hook: each marker becomes the table the code gives now."""

    def generate(found: re.Match[str]) -> str:
        name = found.group(1)
        if name not in GENERATORS:
            raise ValueError(f"unknown reference marker {name!r}")
        return GENERATORS[name]()

    return MARKER.sub(generate, markdown)
