"""``status``: the ledger's counts by state, its last runs, and whether a run is alive now.

A run is alive when it still holds the ledger (its lock) and its heartbeat is recent: the
lock alone would also be held by a run stuck for good, and a recent heartbeat alone by a run
killed a moment ago. A run with no end and no live heartbeat ended without a summary
(killed, or the machine went down): its uncertain records are reconciled by the next run.
"""

from __future__ import annotations

import asyncio
import json
import time
from datetime import datetime
from typing import Any

import click

from pipeline.commands.common import config_option, epilog, guarded, ledger_option
from pipeline.commands.failures import reading
from pipeline.config import Settings
from pipeline.lease import HEARTBEAT_S
from pipeline.ledger.base import RunInfo
from pipeline.urls import mask_url

STATES = ("sent", "failed", "invalid", "in_flight", "unknown", "retired")
#: A heartbeat older than this says the run is no longer alive.
ALIVE_WITHIN_S = max(10.0, 5 * HEARTBEAT_S)
_COUNTS = ("read", "sent", "skipped", "invalid", "failed", "unknown")

_EXITS = "\b\nExit codes: 0 shown, 2 no ledger there (or a bad setting), 3 the ledger is unusable."


@click.command(epilog=epilog("feedback-pipeline status --runs 10 --json", _EXITS))
@config_option
@ledger_option
@click.option(
    "--runs",
    "limit",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="How many of the last runs to show.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@guarded
def status(config_file: str | None, ledger: str | None, limit: int, as_json: bool) -> None:
    """Count the ledger's records in each state, and show the last runs.

    Counts: sent, failed, invalid, in_flight, unknown, retired (closed by `retire`), total.
    Each run: command, start, end, counts, exit code, and whether it is running now.
    """
    settings = Settings.load(config_file, ledger=ledger)
    result = asyncio.run(collect(settings.ledger, limit))
    if as_json:
        click.echo(json.dumps(result))
        return
    click.echo(f"ledger {mask_url(settings.ledger)}")
    for name in (*STATES, "total"):
        click.echo(f"  {name:<10}{result[name]:>10}")
    if result["runs"]:
        click.echo("runs (newest first):")
    for run in result["runs"]:
        click.echo("  " + _run_line(run))


async def collect(url: str, limit: int) -> dict[str, Any]:
    async with reading(url, "status") as ledger:
        counts = await ledger.counts()
        runs = await ledger.runs(limit)
        holder = await ledger.holder()
    result: dict[str, Any] = {state: counts.get(state, 0) for state in STATES}
    result["total"] = sum(counts.values())
    now = time.time()
    result["runs"] = [_run(run, holder, now) for run in runs]
    return result


def _run(run: RunInfo, holder: str | None, now: float) -> dict[str, Any]:
    summary = run.summary or {}
    seen = run.last_seen if run.last_seen is not None else _epoch(run.started_at)
    if run.finished_at is not None:
        state = "finished"
    elif holder is not None and seen is not None and now - seen <= ALIVE_WITHIN_S:
        state = "running"
    else:
        state = "ended without a summary"
    return {
        "run_id": run.run_id,
        "command": run.command,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "last_seen": seen,
        "state": state,
        "alive": state == "running",
        "holder": holder if state == "running" else None,
        "exit_code": summary.get("exit_code"),
        "counts": {k: summary[k] for k in (*_COUNTS, "retired") if k in summary},
        "aborted": summary.get("aborted"),
    }


def _epoch(stamp: str | None) -> float | None:
    try:
        return datetime.fromisoformat(stamp).timestamp() if stamp else None
    except ValueError:
        return None


def _run_line(run: dict[str, Any]) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in run["counts"].items())
    if run["state"] == "running":
        end = f"RUNNING now ({run['holder']}, last seen {time.time() - run['last_seen']:.0f}s ago)"
    elif run["state"] == "finished":
        end = f"ended {run['finished_at']}, exit {run['exit_code']}"
    else:
        end = "ended without a summary (killed?); the next run reconciles what it left"
    line = f"{run['started_at']}  {run['command']:<9} {end}"
    if counts:
        line += f"; {counts}"
    if run["aborted"]:
        line += f"; aborted: {run['aborted']}"
    return line
