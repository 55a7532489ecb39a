"""``run``: send every valid record of files or queues."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from pipeline.cli.common import (
    epilog,
    guarded,
    parse_map,
)
from pipeline.cli.options import delivery_options, finish, load_settings
from pipeline.credentials import Credentials
from pipeline.engine.runner import run_sources


@click.command(
    epilog=epilog("feedback-pipeline run ratings.csv --assistant-id aia_asst_123 --report run.json")
)
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option("--assistant-id", metavar="ID", help="For records without an assistant_id.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl"]),
    help="Input format (default: from the file name; required for stdin).",
)
@click.option(
    "--map",
    "columns",
    multiple=True,
    callback=parse_map,
    metavar="FIELD=COLUMN",
    help="Read FIELD from COLUMN, e.g. --map score=rating. Repeatable.",
)
@click.option(
    "--ignore-extra-columns",
    flag_value=True,
    default=None,
    help="Leave out columns no record field is read from (else they are an error, exit 2: "
    "their values would not be sent).",
)
@click.option("--dry-run", is_flag=True, help="Read, validate and check the ledger; send nothing.")
@click.option(
    "--ledger-must-exist",
    flag_value=True,
    default=None,
    help="Refuse to start (exit 2) when the ledger does not exist or holds no record: for "
    "scheduled jobs, where a mistyped ledger would send everything again.",
)
@click.option(
    "--new-ledger",
    type=click.Choice(["check", "adopt", "send"]),
    help="A new ledger's first records found at the API: check stops before sending (exit 2), "
    "adopt records them as sent and sends the rest, send sends them again [check].",
)
@click.option(
    "--drain",
    flag_value=True,
    default=None,
    help="Queues: exit once no new and no pending entries are left (default: follow).",
)
@click.option(
    "--claim-idle",
    type=float,
    metavar="S",
    help="Queues: take over entries another consumer left pending this long; offer again "
    "this long after an entry whose record another worker holds [60].",
)
@click.option(
    "--reconcile-every",
    type=float,
    metavar="S",
    help="Queues: settle this run's unknown outcomes (following) and what killed workers "
    "left (every queue run) this often [15].",
)
@click.option(
    "--job",
    metavar="NAME",
    help="A label for the workers of one backfill (shared ledger): `status --job NAME` "
    "counts its records alone and says when it is complete; `stop --job NAME` ends them.",
)
@delivery_options
@guarded
def run(
    sources: tuple[str, ...],
    config_file: str | None,
    report: str | None,
    dry_run: bool,
    fmt: str | None,
    columns: dict[str, str],
    **flags: Any,
) -> None:
    """Send every valid record of SOURCE files (CSV, JSONL, .gz; - for stdin) or queue URLs."""
    settings = load_settings(
        config_file, format=fmt, columns=columns or None, report=report, **flags
    )
    auth = None if dry_run else Credentials().basic_auth()
    summary = asyncio.run(run_sources(settings, sources, auth=auth, dry_run=dry_run))
    finish(summary)  # the report is written by the run itself, however it ended
