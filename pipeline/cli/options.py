"""The options the delivering commands share, and what every command does with them: settings
loaded (defaults from the settings model, their one place), the summary printed, the exit."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from pipeline import logs
from pipeline.cli.common import (
    LEDGER_FORMS,
)
from pipeline.config import Settings
from pipeline.logs import level_for
from pipeline.observe.live import summary_table
from pipeline.observe.summary import Summary

F = TypeVar("F", bound=Callable[..., Any])


def default(name: str) -> str:
    """A setting's default for a help text, taken from the model (its one place)."""
    value = Settings.model_fields[name].default
    return f"{value:g}" if isinstance(value, float) else str(value)


def delivery_options(fn: F) -> F:
    options = [
        click.option(
            "--config",
            "config_file",
            metavar="FILE",
            help="TOML settings file (default: $FEEDBACK_PIPELINE_CONFIG).",
        ),
        click.option(
            "--ledger",
            metavar="URL",
            help=f"Ledger: {LEDGER_FORMS} [{default('ledger')}]: the memory of what "
            "was sent. A run with another ledger sends everything again. One run at a time per "
            "ledger file.",
        ),
        click.option("--base-url", metavar="URL", help=f"API base [{default('base_url')}]."),
        click.option(
            "--concurrency",
            type=int,
            help=f"Requests in flight at most [{default('concurrency')}].",
        ),
        click.option(
            "--rate",
            type=float,
            help=f"Requests per second at most, 0: no limit [{default('rate')}].",
        ),
        click.option(
            "--rate-scope",
            metavar="URL",
            help="redis://HOST:PORT/DB[?key=NAME]: --rate is the total of every worker with "
            "this scope (default key: the account SID); no sending while it is unreachable.",
        ),
        click.option(
            "--max-attempts",
            type=int,
            help=f"Attempts per record, retries included [{default('max_attempts')}].",
        ),
        click.option("--timeout", type=float, help=f"Seconds per request [{default('timeout')}]."),
        click.option(
            "--no-reconcile",
            "reconcile",
            flag_value=False,
            default=None,
            help="Do not settle uncertain records first (they are then not sent).",
        ),
        click.option(
            "--settle",
            type=float,
            metavar="S",
            help=f"Seconds the API may take to store a request, for reconcile "
            f"[{default('settle')}].",
        ),
        click.option(
            "--grace",
            type=float,
            metavar="S",
            help=f"On SIGINT/SIGTERM, seconds to let requests finish [{default('grace')}].",
        ),
        click.option(
            "--max-outage",
            type=float,
            metavar="S",
            help=f"Abort when the API has failed everything this long [{default('max_outage')}].",
        ),
        click.option(
            "--report",
            metavar="FILE",
            help="Write a JSON summary here (a name ending in .html: a page with charts), "
            "also when the run aborts or is interrupted.",
        ),
        click.option(
            "--no-progress",
            "progress",
            flag_value=False,
            default=None,
            help="No live display (it only shows on a terminal anyway); as --quiet.",
        ),
        click.option(
            "-q",
            "--quiet",
            count=True,
            help="No live display: a progress log line every --log-every seconds instead. "
            "-qq: warnings only, -qqq: errors only.",
        ),
        click.option("-v", "--verbose", count=True, help="Debug log lines too."),
        click.option(
            "--log-format",
            type=click.Choice(["text", "json"]),
            help="Log lines on stderr: text, or one JSON object per event "
            f"[{default('log_format')}].",
        ),
        click.option(
            "--log-every",
            type=float,
            metavar="S",
            help="Off a terminal or quiet: log a progress line this often "
            f"[{default('log_every')}].",
        ),
        click.option(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="Serve Prometheus metrics on this port (see --metrics-address) while running.",
        ),
        click.option(
            "--metrics-address",
            metavar="ADDRESS",
            help="The address --metrics-port listens on, e.g. 127.0.0.1 "
            f"[{default('metrics_address')}: every interface].",
        ),
        click.option(
            "--metrics-textfile",
            metavar="FILE",
            help="Write Prometheus metrics here when the run ends (node_exporter textfile).",
        ),
        click.option(
            "--max-invalid",
            type=int,
            metavar="N",
            help=f"Exit 0, not 1, with up to N invalid records [{default('max_invalid')}].",
        ),
        click.option(
            "--max-failed",
            type=int,
            metavar="N",
            help=f"Exit 0, not 1, with up to N failed records [{default('max_failed')}].",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def load_settings(
    config_file: str | None, verbose: int = 0, quiet: int = 0, **flags: Any
) -> Settings:
    """The settings, with the start-up checks that need the file system, before any work;
    then the log lines are set up as the settings say."""
    settings = Settings.load(
        config_file, quiet=True if quiet else None, log_level=level_for(verbose, quiet), **flags
    )
    settings.check_report()
    logs.setup(settings.log_level, settings.log_format)
    return settings


def finish(summary: Summary, report: str | None = None) -> None:
    """The summary on stdout (a table on a terminal), the report if not written yet, exit."""
    console = Console()
    if console.is_terminal:
        console.print(summary_table(summary))
    else:
        click.echo(summary.text())
    if report:
        summary.write_json(report)
    sys.exit(summary.exit_code)
