"""``enqueue``: publish records to a queue, validated, for workers to ``run``."""

from __future__ import annotations

import asyncio

import click

from pipeline import logs
from pipeline.cli.common import (
    epilog,
    guarded,
    parse_map,
)
from pipeline.cli.options import finish
from pipeline.config import Settings
from pipeline.engine.enqueue import enqueue_sources


@click.command(
    epilog=epilog(
        "feedback-pipeline enqueue ratings.csv --to 'redis://localhost/0?stream=feedback'",
        "\b\nExit codes: 0 all published, 1 some records invalid (not published), 2 usage or\n"
        "configuration error, 3 the queue failed.",
    )
)
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option(
    "--to",
    "to",
    required=True,
    metavar="URL",
    help="The queue: redis://... amqp://... nats://... sqs://...",
)
@click.option("--config", "config_file", metavar="FILE", help="TOML settings file.")
@click.option("--assistant-id", metavar="ID", help="For records without an assistant_id.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="Input format.")
@click.option(
    "--map", "columns", multiple=True, callback=parse_map, metavar="FIELD=COLUMN", help="As run."
)
@click.option("--ignore-extra-columns", flag_value=True, default=None, help="As run.")
@click.option("--report", metavar="FILE", help="Write a JSON summary here.")
@guarded
def enqueue(
    sources: tuple[str, ...],
    to: str,
    config_file: str | None,
    fmt: str | None,
    columns: dict[str, str],
    report: str | None,
    assistant_id: str | None,
    ignore_extra_columns: bool | None,
) -> None:
    """Validate the records of SOURCE files and publish them, with their key, to a queue."""
    settings = Settings.load(
        config_file,
        format=fmt,
        columns=columns or None,
        assistant_id=assistant_id,
        progress=False,
        ignore_extra_columns=ignore_extra_columns,
    )
    logs.setup(settings.log_level, settings.log_format)
    summary = asyncio.run(enqueue_sources(settings, sources, to))
    finish(summary, report or settings.report)
