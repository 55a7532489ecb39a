"""``replay``: send again the failed records the API may still take."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from pipeline.cli.common import (
    epilog,
    guarded,
    require_ledger,
)
from pipeline.cli.options import delivery_options, finish, load_settings
from pipeline.cli.replay_plan import plan as replay_plan
from pipeline.credentials import Credentials
from pipeline.engine.runner import replay_failed


@click.command(
    epilog=epilog(
        "feedback-pipeline replay --dry-run && feedback-pipeline replay",
        "\b\nExit codes: 0 every record replayed was sent (or --dry-run: nothing to do but\n"
        "show); 1 some are still failed or unknown; 2 usage or configuration error (no\n"
        "ledger), nothing sent; 3 aborted (authentication refused, interrupted, outage, ledger\n"
        "unusable or in use).",
    )
)
@click.option(
    "--include-rejected", is_flag=True, help="Send permanent 4xx rejections too (they need a fix)."
)
@click.option("--dry-run", is_flag=True, help="Show what would be sent; send nothing.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Send at most N records.")
@delivery_options
@guarded
def replay(
    config_file: str | None,
    report: str | None,
    include_rejected: bool,
    dry_run: bool,
    limit: int | None,
    **flags: Any,
) -> None:
    """Send again the failed records the API may still take (no source file needed).

    Not sent by default: permanent rejections (400, 404, 413, 422 and other 4xx but 408 and
    429), which fail again until fixed: export them with `failures`, fix, `run` the file.
    """
    settings = load_settings(config_file, report=report, **flags)
    require_ledger(settings.ledger)
    todo = asyncio.run(replay_plan(settings.ledger, include_rejected=include_rejected, limit=limit))
    for line in todo.lines(dry_run=dry_run):
        click.echo(line, err=not dry_run)
    if dry_run:
        return
    auth = Credentials().basic_auth()
    retryable_only = not include_rejected
    summary = asyncio.run(
        replay_failed(settings, auth=auth, retryable_only=retryable_only, limit=limit)
    )
    finish(summary)  # the report is written by the run itself, however it ended
