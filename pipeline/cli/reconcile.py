"""``reconcile``: settle the records whose request may have reached the API."""

from __future__ import annotations

import asyncio
from typing import Any

import click

from pipeline.cli.common import (
    EXIT_ABORTED,
    EXIT_PROBLEMS,
    LEDGER_FORMS,
    epilog,
    fail,
    guarded,
    require_ledger,
)
from pipeline.cli.options import default
from pipeline.config import Settings
from pipeline.credentials import Credentials
from pipeline.engine.runner import reconcile_ledger
from pipeline.errors import (
    AuthError,
    ReconcileError,
)


@click.command(
    epilog=epilog(
        "feedback-pipeline reconcile --ledger nightly.sqlite3",
        "\b\nExit codes: 0 settled, 1 the List endpoint could not be read (records stay as\n"
        "they were), 2 usage or configuration error, 3 credentials refused or ledger unusable.",
    )
)
@click.option("--config", "config_file", metavar="FILE", help="TOML settings file.")
@click.option(
    "--ledger",
    metavar="URL",
    help=f"Ledger: {LEDGER_FORMS} [{default('ledger')}].",
)
@click.option("--base-url", metavar="URL", help=f"API base [{default('base_url')}].")
@click.option(
    "--settle",
    type=float,
    metavar="S",
    help=f"Seconds the API may take to store [{default('settle')}].",
)
@click.option(
    "--max-attempts", type=int, help=f"Attempts per list page [{default('max_attempts')}]."
)
@click.option("--timeout", type=float, help=f"Seconds per request [{default('timeout')}].")
@click.option("--rate", type=float, help=f"List requests per second [{default('rate')}].")
@click.option("--rate-scope", metavar="URL", help="Share --rate through this Redis (see run).")
@guarded
def reconcile(config_file: str | None, **flags: Any) -> None:
    """Settle records left in flight or unknown, using the API's List endpoint."""
    settings = Settings.load(config_file, **flags)
    require_ledger(settings.ledger)
    try:
        settled = asyncio.run(reconcile_ledger(settings, auth=Credentials().basic_auth()))
    except ReconcileError as exc:
        fail(f"reconcile: {exc}; the uncertain records stay as they were", EXIT_PROBLEMS)
        return
    except AuthError as exc:
        fail(f"authentication refused by the API ({exc})", EXIT_ABORTED)
        return
    click.echo(
        f"reconcile: {settled.total} uncertain records: {settled.found} were stored by the API "
        f"(now sent), {settled.missing} were not (now failed; replay or a rerun sends them)"
    )
