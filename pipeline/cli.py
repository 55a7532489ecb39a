"""Command line: ``feedback-pipeline run|replay|status|fake-server``.

Exit codes: 0 all sent (or no more invalid / failed records than --max-invalid /
--max-failed accept), 1 finished with failed or invalid records (over those thresholds) or
unknown ones, 2 usage or configuration error, 3 aborted (authentication refused, interrupted,
ledger unusable).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from pipeline import __version__, logs
from pipeline.config import DEBUG_ENV, Credentials, Settings
from pipeline.enqueue import enqueue_sources
from pipeline.errors import (
    AuthError,
    ConfigError,
    PipelineError,
    ReconcileError,
    SourceError,
)
from pipeline.live import summary_table
from pipeline.logs import level_for
from pipeline.report import Summary
from pipeline.runner import ledger_counts, reconcile_ledger, replay_failed, run_sources
from pipeline.urls import local_path, mask_url

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_ABORTED = 0, 1, 2, 3
F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str, code: int) -> None:
    click.echo(f"feedback-pipeline: {message}", err=True)
    sys.exit(code)


def _guarded(fn: F) -> F:
    """Turn the package's errors into one line and an exit code, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BaseExceptionGroup as group:
            # Task groups wrap what went wrong; the first real error is the one to name.
            leaf: BaseException = group
            while isinstance(leaf, BaseExceptionGroup):
                leaf = leaf.exceptions[0]
            return _guarded(_raiser(leaf))()
        except (ConfigError, SourceError) as exc:
            _fail(str(exc), EXIT_USAGE)
        except PipelineError as exc:  # the ledger unusable, an abort, ...
            _fail(str(exc), EXIT_ABORTED)
        except KeyboardInterrupt:
            _fail("interrupted", EXIT_ABORTED)
        except Exception as exc:  # noqa: BLE001 - the last line of defence for a clean exit
            if os.environ.get(DEBUG_ENV):
                raise
            _fail(
                f"internal error: {type(exc).__name__}: {exc} "
                "(set FEEDBACK_PIPELINE_DEBUG=1 for the traceback)",
                EXIT_ABORTED,
            )

    return wrapper  # type: ignore[return-value]


def _raiser(exc: BaseException) -> Callable[[], None]:
    def raise_it() -> None:
        raise exc

    return raise_it


def _parse_map(_: click.Context, __: click.Parameter, values: tuple[str, ...]) -> dict[str, str]:
    mapping: dict[str, str] = {}
    for value in values:
        dest, sep, src = value.partition("=")
        if not sep or not dest.strip() or not src.strip():
            raise click.BadParameter(f"{value!r}: expected FIELD=COLUMN, e.g. score=rating")
        mapping[dest.strip()] = src.strip()
    return mapping


def _default(name: str) -> str:
    """A setting's default for a help text, taken from the model (its one place)."""
    value = Settings.model_fields[name].default
    return f"{value:g}" if isinstance(value, float) else str(value)


def _delivery_options(fn: F) -> F:
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
            help=f"Ledger: a path or sqlite:///path [{_default('ledger')}]: the memory of what "
            "was sent. A run with another ledger sends everything again. One run at a time per "
            "ledger file.",
        ),
        click.option("--base-url", metavar="URL", help=f"API base [{_default('base_url')}]."),
        click.option(
            "--concurrency",
            type=int,
            help=f"Requests in flight at most [{_default('concurrency')}].",
        ),
        click.option(
            "--rate",
            type=float,
            help=f"Requests per second at most, 0: no limit [{_default('rate')}].",
        ),
        click.option(
            "--max-attempts",
            type=int,
            help=f"Attempts per record, retries included [{_default('max_attempts')}].",
        ),
        click.option("--timeout", type=float, help=f"Seconds per request [{_default('timeout')}]."),
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
            f"[{_default('settle')}].",
        ),
        click.option(
            "--grace",
            type=float,
            metavar="S",
            help=f"On SIGINT/SIGTERM, seconds to let requests finish [{_default('grace')}].",
        ),
        click.option(
            "--max-outage",
            type=float,
            metavar="S",
            help=f"Abort when the API has failed everything this long [{_default('max_outage')}].",
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
            f"[{_default('log_format')}].",
        ),
        click.option(
            "--log-every",
            type=float,
            metavar="S",
            help="Off a terminal or quiet: log a progress line this often "
            f"[{_default('log_every')}].",
        ),
        click.option(
            "--metrics-port",
            type=int,
            metavar="PORT",
            help="Serve Prometheus metrics on this port (all interfaces) while running.",
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
            help=f"Exit 0, not 1, with up to N invalid records [{_default('max_invalid')}].",
        ),
        click.option(
            "--max-failed",
            type=int,
            metavar="N",
            help=f"Exit 0, not 1, with up to N failed records [{_default('max_failed')}].",
        ),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _load(config_file: str | None, verbose: int = 0, quiet: int = 0, **flags: Any) -> Settings:
    """The settings, with the start-up checks that need the file system, before any work;
    then the log lines are set up as the settings say."""
    settings = Settings.load(
        config_file, quiet=True if quiet else None, log_level=level_for(verbose, quiet), **flags
    )
    settings.check_report()
    logs.setup(settings.log_level, settings.log_format)
    return settings


def _finish(summary: Summary, report: str | None = None) -> None:
    """The summary on stdout (a table on a terminal), the report if not written yet, exit."""
    console = Console()
    if console.is_terminal:
        console.print(summary_table(summary))
    else:
        click.echo(summary.text())
    if report:
        summary.write_json(report)
    sys.exit(summary.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="feedback-pipeline")
def cli() -> None:
    """Submit human-feedback records to the Twilio Assistants Feedback API, exactly once."""


@cli.command()
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
    callback=_parse_map,
    metavar="FIELD=COLUMN",
    help="Read FIELD from COLUMN, e.g. --map score=rating. Repeatable.",
)
@click.option("--dry-run", is_flag=True, help="Read, validate and check the ledger; send nothing.")
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
    help="Queues: take over entries another consumer left pending this long [60].",
)
@click.option(
    "--reconcile-every",
    type=float,
    metavar="S",
    help="Queues: settle this run's unknown outcomes this often while following [15].",
)
@_delivery_options
@_guarded
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
    settings = _load(config_file, format=fmt, columns=columns or None, report=report, **flags)
    auth = None if dry_run else Credentials().basic_auth()
    summary = asyncio.run(run_sources(settings, sources, auth=auth, dry_run=dry_run))
    _finish(summary)  # the report is written by the run itself, however it ended


@cli.command()
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option("--to", "to", required=True, metavar="URL", help="The queue: redis://... amqp://...")
@click.option("--config", "config_file", metavar="FILE", help="TOML settings file.")
@click.option("--assistant-id", metavar="ID", help="For records without an assistant_id.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="Input format.")
@click.option(
    "--map", "columns", multiple=True, callback=_parse_map, metavar="FIELD=COLUMN", help="As run."
)
@click.option("--report", metavar="FILE", help="Write a JSON summary here.")
@_guarded
def enqueue(
    sources: tuple[str, ...],
    to: str,
    config_file: str | None,
    fmt: str | None,
    columns: dict[str, str],
    report: str | None,
    assistant_id: str | None,
) -> None:
    """Validate the records of SOURCE files and publish them, with their key, to a queue."""
    settings = Settings.load(
        config_file, format=fmt, columns=columns or None, assistant_id=assistant_id, progress=False
    )
    logs.setup(settings.log_level, settings.log_format)
    summary = asyncio.run(enqueue_sources(settings, sources, to))
    _finish(summary, report or settings.report)


@cli.command()
@_delivery_options
@_guarded
def replay(config_file: str | None, report: str | None, **flags: Any) -> None:
    """Send again the records the ledger holds as failed (no source file needed)."""
    settings = _load(config_file, report=report, **flags)
    _require_ledger(settings.ledger)
    summary = asyncio.run(replay_failed(settings, auth=Credentials().basic_auth()))
    _finish(summary)


@cli.command()
@click.option("--config", "config_file", metavar="FILE", help="TOML settings file.")
@click.option(
    "--ledger", metavar="URL", help="Ledger: a path or sqlite:///path [feedback-ledger.sqlite3]."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_guarded
def status(config_file: str | None, ledger: str | None, as_json: bool) -> None:
    """Count the ledger's records in each state."""
    settings = Settings.load(config_file, ledger=ledger)
    _require_ledger(settings.ledger)
    counts = asyncio.run(ledger_counts(settings.ledger))
    states = ("sent", "failed", "invalid", "in_flight", "unknown")
    result = {state: counts.get(state, 0) for state in states}
    result["total"] = sum(counts.values())
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"ledger {mask_url(settings.ledger)}")
    for name, count in result.items():
        click.echo(f"  {name:<10}{count:>10}")


@cli.command()
@click.option("--config", "config_file", metavar="FILE", help="TOML settings file.")
@click.option(
    "--ledger", metavar="URL", help=f"Ledger: a path or sqlite:///path [{_default('ledger')}]."
)
@click.option("--base-url", metavar="URL", help=f"API base [{_default('base_url')}].")
@click.option(
    "--settle",
    type=float,
    metavar="S",
    help=f"Seconds the API may take to store [{_default('settle')}].",
)
@click.option(
    "--max-attempts", type=int, help=f"Attempts per list page [{_default('max_attempts')}]."
)
@click.option("--timeout", type=float, help=f"Seconds per request [{_default('timeout')}].")
@_guarded
def reconcile(config_file: str | None, **flags: Any) -> None:
    """Settle records left in flight or unknown, using the API's List endpoint."""
    settings = Settings.load(config_file, **flags)
    _require_ledger(settings.ledger)
    try:
        settled = asyncio.run(reconcile_ledger(settings, auth=Credentials().basic_auth()))
    except ReconcileError as exc:
        _fail(f"reconcile: {exc}; the uncertain records stay as they were", EXIT_PROBLEMS)
        return
    except AuthError as exc:
        _fail(f"authentication refused by the API ({exc})", EXIT_ABORTED)
        return
    click.echo(
        f"reconcile: {settled.total} uncertain records: {settled.found} were stored by the API "
        f"(now sent), {settled.missing} were not (now failed; replay or a rerun sends them)"
    )


def _require_ledger(url: str) -> None:
    path = local_path(url)  # None: a server ledger, which says itself whether it exists
    if path is not None and not Path(path).is_file():
        raise ConfigError(f"ledger: no ledger at {path} (pass --ledger PATH)")


@cli.command("fake-server")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--fail-rate", default=0.0, type=float, help="Share of POSTs answered 503.")
@click.option("--throttle-rps", type=float, help="Token-bucket limit: 429 + Retry-After beyond.")
@click.option("--latency-ms", default=0.0, type=float, help="Added to every answer.")
@click.option(
    "--reset-rate",
    default=0.0,
    type=float,
    help="Share of POSTs stored and then answered with a connection reset.",
)
@click.option(
    "--hostile",
    metavar="MODE|JSON",
    help="A misbehaviour: portal, unconfirmed, redirect, repeat_cursor, endless_cursor, "
    "relative_cursor, drip, huge, store_late; or a JSON object with its parameters.",
)
@_guarded
def fake_server(host: str, port: int, **faults: Any) -> None:
    """Run the fake Feedback API (for demos, tests and benchmarks)."""
    from pipeline.fake import FakeState, Faults, serve

    try:
        state = FakeState(faults=Faults(**faults))
    except ValueError as exc:
        raise ConfigError(f"fake-server: {exc}") from None
    try:
        asyncio.run(serve(state, host, port))
    except OSError as exc:
        raise ConfigError(f"fake-server: cannot listen on {host}:{port}: {exc.strerror}") from None


def main() -> None:
    cli(prog_name="feedback-pipeline")
