"""Command line: ``feedback-pipeline run|replay|status|fake-server``.

Exit codes: 0 all sent (or no more invalid / failed records than --max-invalid /
--max-failed accept), 1 finished with failed or invalid records (over those thresholds) or
unknown ones, 2 usage or configuration error, 3 aborted (authentication refused, interrupted,
ledger unusable).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
from rich.console import Console

from pipeline import __version__, logs
from pipeline.cli import failures, history, preflight, retire, settings_view, stop
from pipeline.cli.common import (
    EXIT_ABORTED,
    EXIT_PROBLEMS,
    LEDGER_FORMS,
    epilog,
)
from pipeline.cli.common import fail as _fail
from pipeline.cli.common import guarded as _guarded
from pipeline.cli.common import parse_map as _parse_map
from pipeline.cli.common import require_ledger as _require_ledger
from pipeline.cli.replay import plan as replay_plan
from pipeline.config import Credentials, Settings
from pipeline.engine.enqueue import enqueue_sources
from pipeline.engine.runner import reconcile_ledger, replay_failed, run_sources
from pipeline.errors import (
    AuthError,
    ConfigError,
    ReconcileError,
)
from pipeline.logs import level_for
from pipeline.observe.live import summary_table
from pipeline.observe.summary import Summary

F = TypeVar("F", bound=Callable[..., Any])


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
            help=f"Ledger: {LEDGER_FORMS} [{_default('ledger')}]: the memory of what "
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
            "--rate-scope",
            metavar="URL",
            help="redis://HOST:PORT/DB[?key=NAME]: --rate is the total of every worker with "
            "this scope (default key: the account SID); no sending while it is unreachable.",
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
            help="Serve Prometheus metrics on this port (see --metrics-address) while running.",
        ),
        click.option(
            "--metrics-address",
            metavar="ADDRESS",
            help="The address --metrics-port listens on, e.g. 127.0.0.1 "
            f"[{_default('metrics_address')}: every interface].",
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


_COMPLETION = (
    "\b\nShell completion (bash; zsh_source and fish_source likewise):\n"
    '  eval "$(_FEEDBACK_PIPELINE_COMPLETE=bash_source feedback-pipeline)"\n\n'
    "Run `feedback-pipeline COMMAND --help` for a command's example and exit codes."
)


@click.group(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=_COMPLETION,
)
@click.version_option(__version__, prog_name="feedback-pipeline")
def cli() -> None:
    """Submit human-feedback records to the Twilio Assistants Feedback API, exactly once."""


@cli.command(
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
    callback=_parse_map,
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


@cli.command(
    epilog=epilog(
        "feedback-pipeline enqueue ratings.csv --to 'redis://localhost/0?stream=feedback'",
        "\b\nExit codes: 0 all published, 1 some records invalid (not published), 2 usage or\n"
        "configuration error, 3 the queue failed.",
    )
)
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option("--to", "to", required=True, metavar="URL", help="The queue: redis://... amqp://...")
@click.option("--config", "config_file", metavar="FILE", help="TOML settings file.")
@click.option("--assistant-id", metavar="ID", help="For records without an assistant_id.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="Input format.")
@click.option(
    "--map", "columns", multiple=True, callback=_parse_map, metavar="FIELD=COLUMN", help="As run."
)
@click.option("--ignore-extra-columns", flag_value=True, default=None, help="As run.")
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
    _finish(summary, report or settings.report)


@cli.command(
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
@_delivery_options
@_guarded
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
    settings = _load(config_file, report=report, **flags)
    _require_ledger(settings.ledger)
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
    _finish(summary)  # the report is written by the run itself, however it ended


@cli.command(
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
    help=f"Ledger: {LEDGER_FORMS} [{_default('ledger')}].",
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
@click.option("--rate", type=float, help=f"List requests per second [{_default('rate')}].")
@click.option("--rate-scope", metavar="URL", help="Share --rate through this Redis (see run).")
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


@cli.command(
    "fake-server",
    epilog=epilog(
        "feedback-pipeline fake-server --port 8080 --fail-rate 0.05",
        "\b\nExit codes: 0 stopped, 2 bad option or the port cannot be listened on.",
    ),
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option(
    "--assistant",
    "assistants",
    multiple=True,
    metavar="ID",
    help="An assistant that exists (repeatable); the others are not found (404). Default: any.",
)
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
    "--slow-rate", default=0.0, type=float, help="Share of POSTs stored, then answered late."
)
@click.option("--slow-ms", default=2000.0, type=float, help="How late --slow-rate answers.")
@click.option("--max-inflight", type=int, help="Requests in flight beyond this get 429 (20429).")
@click.option("--shed-above", type=int, help="Requests in flight beyond this get 503 at once.")
@click.option(
    "--stall-above", type=int, help="Requests beyond this many at work are answered late."
)
@click.option("--stall-ms", default=2000.0, type=float, help="How late --stall-above answers.")
@click.option("--rate-limit", type=float, help="Requests per second beyond which POSTs get 429.")
@click.option("--burst-ms", default=1000.0, type=float, help="Token bucket burst, in ms of rate.")
@click.option("--window", type=click.Choice(["bucket", "fixed", "sliding"]), default="bucket")
@click.option("--retry-after", type=click.Choice(["present", "zero", "absent"]), default="present")
@click.option("--latency-jitter-ms", default=0.0, type=float, help="Random extra latency, 0..N.")
@click.option(
    "--hostile",
    metavar="MODE|JSON",
    help="A misbehaviour: portal, unconfirmed, redirect, repeat_cursor, endless_cursor, "
    "relative_cursor, drip, huge, store_late; or a JSON object with its parameters.",
)
@_guarded
def fake_server(host: str, port: int, assistants: tuple[str, ...], **options: Any) -> None:
    """Run the fake Feedback API (for demos, tests and benchmarks). Stop it with Ctrl-C or
    SIGTERM (exit 0)."""
    from pipeline.fake import FakeState, Faults, Limits, serve

    limit_names = (
        *("max_inflight", "rate_limit", "burst_ms", "window", "retry_after"),
        *("shed_above", "stall_above", "stall_ms", "latency_jitter_ms"),
    )
    limits = {name: options.pop(name) for name in limit_names}
    try:
        known = set(assistants) if assistants else None
        state = FakeState(faults=Faults(**options), limits=Limits(**limits), known_assistants=known)
    except ValueError as exc:
        raise ConfigError(f"fake-server: {exc}") from None
    try:
        asyncio.run(serve(state, host, port))
    except OSError as exc:
        raise ConfigError(f"fake-server: cannot listen on {host}:{port}: {exc.strerror}") from None


# Commands in modules of their own (this package): registered here, in one place.
for _command in (
    failures.failures,
    retire.retire,
    history.status,
    stop.stop,
    preflight.validate,
    preflight.check,
    settings_view.config,
):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="feedback-pipeline")
