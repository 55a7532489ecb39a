"""``status``: the ledger's counts by state, its workers (the last runs), the queue's backlog,
and whether the job is complete. Each run's state is :mod:`pipeline.cli.fleet_view`'s.

A shared (PostgreSQL) ledger knows each run's host, pid, queue consumer and job, and its
counts as of its last heartbeat (a killed run's too); an SQLite ledger knows its runs' ends
and heartbeats, and which process holds its lock.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import click

from pipeline.cli import fleet_view as view_
from pipeline.cli.common import EXIT_PROBLEMS, config_option, epilog, guarded, ledger_option
from pipeline.cli.failures import reading
from pipeline.config import Settings
from pipeline.errors import ConfigError, SourceError
from pipeline.ledger.fleet import FleetLedger, FleetView
from pipeline.sources import is_broker
from pipeline.sources.queue_depth import Depth, depth
from pipeline.urls import mask_url, scheme

STATES = ("sent", "failed", "invalid", "in_flight", "unknown", "retired")
#: How often ``--wait`` reads the ledger (and the queue) again.
POLL_S = 1.0
#: Brokers whose URL names one worker's consumer (Redis: the group is the queue); on NATS the
#: consumer is the durable every worker shares, part of what the queue is.
_ONE_WORKER_CONSUMER = ("redis", "rediss")

_EXITS = (
    "\b\nExit codes: 0 shown (with --wait: the job is complete), 1 --wait ran out before\n"
    "the job was complete, 2 no ledger there (or a bad setting), 3 the ledger is unusable."
)


@click.command(
    epilog=epilog("feedback-pipeline status --job backfill-1 --wait 3600 --json", _EXITS)
)
@config_option
@ledger_option
@click.option(
    "--runs",
    "limit",
    type=click.IntRange(min=0),
    default=5,
    show_default=True,
    help="How many of the last runs (workers) to show.",
)
@click.option("--job", metavar="NAME", help="Only the runs of this --job, and their records.")
@click.option(
    "--queue",
    metavar="URL",
    help="The queue to read the backlog of [the one the shown runs read, if its URL has no "
    "password].",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0, max=7 * 86400),
    metavar="S",
    help="Wait up to S seconds for the job to be complete; exit 1 if it is not by then.",
)
@click.option(
    "--stalled-after",
    type=click.FloatRange(min=1, max=86400),
    default=60.0,
    show_default=True,
    metavar="S",
    help="A worker with records in flight and none settled for this long is 'stalled'.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@guarded
def status(
    config_file: str | None,
    ledger: str | None,
    limit: int,
    job: str | None,
    queue: str | None,
    wait: float | None,
    stalled_after: float,
    as_json: bool,
) -> None:
    """Count the ledger's records in each state, show its workers, and say whether the job
    is complete.

    Counts: sent, failed, invalid, in_flight (claimed, not settled yet: on the wire or about
    to be), unknown, retired, total. Each run: who (run, host:pid, consumer), its state
    (running, stopping, stalled, ended, lease lost, killed, paused), when it last settled a
    record, and its counts. With a queue: its backlog and pending entries.
    """
    settings = Settings.load(config_file, ledger=ledger)
    result = asyncio.run(_collect_until(settings.ledger, limit, job, queue, stalled_after, wait))
    if as_json:
        click.echo(json.dumps(result))
    else:
        for line in _text(result, settings.ledger):
            click.echo(line)
    if wait is not None and not result["complete"]:
        raise SystemExit(EXIT_PROBLEMS)


async def _collect_until(
    url: str, limit: int, job: str | None, queue: str | None, stalled: float, wait: float | None
) -> dict[str, Any]:
    deadline = time.monotonic() + (wait or 0.0)
    while True:
        result = await collect(url, limit, job=job, queue=queue, stalled_after=stalled)
        if wait is None or result["complete"] or time.monotonic() >= deadline:
            return result
        await asyncio.sleep(min(POLL_S, max(0.0, deadline - time.monotonic())))


async def collect(
    url: str,
    limit: int,
    *,
    job: str | None = None,
    queue: str | None = None,
    stalled_after: float = 60.0,
) -> dict[str, Any]:
    async with reading(url, "status") as ledger:
        if isinstance(ledger, FleetLedger):
            view = await ledger.fleet(job, limit)
        elif job is not None:
            raise ConfigError("status --job: only a shared (PostgreSQL) ledger keeps jobs")
        else:
            counts = await ledger.counts()
            holder = await ledger.holder()
            pid = int(holder.split()[-1]) if holder and holder.split()[-1].isdigit() else None
            view = view_.from_runs(await ledger.runs(limit), pid, counts)
    found = queue or _queue_of(view)
    queue_depth: Depth | None = None
    unread: str | None = None
    if found:
        try:
            queue_depth = await depth(found)
        except (ConfigError, SourceError) as exc:
            if queue is not None:
                raise  # asked for by name: its error is the answer
            unread = f"{exc}; pass --queue URL"  # the stored one: the counts still matter
    result = _result(view, job, queue_depth, stalled_after)
    if unread is not None:
        # Not known to be empty, so not known to be complete.
        result.update(queue_error=unread, complete=False)
    return result


def _queue_of(view: FleetView) -> str | None:
    """The queue the shown runs read (the newest first), if its stored URL can be used: a
    password is stored masked, so such a queue needs ``--queue``."""
    for run in view.runs:
        for source in (run.source or "").split():
            if is_broker(source) and ":***@" not in source:
                one_worker = scheme(source) in _ONE_WORKER_CONSUMER
                return _without_consumer(source) if one_worker else source
    return None


def _result(
    view: FleetView, job: str | None, queue: Depth | None, stalled_after: float
) -> dict[str, Any]:
    result: dict[str, Any] = {state: view.counts.get(state, 0) for state in STATES}
    result["total"] = sum(view.counts.values())
    result["failed_unsent"] = view.failed_unsent
    result["job"] = job
    result["now"] = view_.iso(view.now)
    runs = [view_.worker(run, view.now, stalled_after) for run in view.runs]
    result["runs"] = runs
    result["holder"] = [
        {"run_id": r["run_id"], "host": r["host"], "pid": r["pid"]} for r in runs if r["alive"]
    ]
    result["queue"] = queue.as_dict() if queue is not None else None
    result["complete"] = view_.complete(view, [r["state"] for r in runs], queue)
    result["done_fraction"] = _done(result, queue)
    return result


def _done(result: dict[str, Any], queue: Depth | None) -> float | None:
    """The job's share done: its settled records over those plus what its queue still holds
    (an entry pending is on its way, counted once with its in-flight record); None without a
    queue's counts (a file job's size is not in the ledger)."""
    if result["complete"]:
        return 1.0
    if queue is None or queue.backlog is None or queue.pending is None:
        return None
    settled = result["total"] - result["in_flight"] - result["unknown"]
    whole = settled + queue.backlog + queue.pending
    return round(settled / whole, 4) if whole else None


def _text(result: dict[str, Any], ledger: str) -> list[str]:
    job = f", job {result['job']}" if result["job"] else ""
    lines = [f"ledger {mask_url(ledger)}{job}"]
    lines += [
        f"  {name:<10}{result[name]:>10}{_meaning(name, result)}" for name in (*STATES, "total")
    ]
    queue = result["queue"]
    if queue is not None:

        def shown(n: int | None) -> str:
            return "unknown" if n is None else str(n)

        lines.append(
            f"queue {queue['source']}: {shown(queue['backlog'])} waiting, "
            f"{shown(queue['pending'])} pending (handed out, not acked)"
        )
    if result.get("queue_error"):
        lines.append(f"queue: cannot be read: {result['queue_error']}")
    if result["runs"]:
        lines.append("runs (newest first):")
    now = view_.epoch(result["now"]) or time.time()
    lines += ["  " + view_.worker_line(run, now) for run in result["runs"]]
    lines.append(_verdict(result))
    return lines


def _meaning(name: str, result: dict[str, Any]) -> str:
    """What a count is, where its name alone misleads."""
    if name == "in_flight" and result[name]:
        return "  (claimed, not settled: on the wire, at most --concurrency per worker, or next)"
    if name == "failed" and result["failed_unsent"]:
        return (
            f"  ({result['failed_unsent']} never sent: found not stored or released at a "
            "stop; the next worker to read them, or replay, sends them)"
        )
    return ""


def _verdict(result: dict[str, Any]) -> str:
    if result["complete"]:
        rest = "nothing left on the queue" if result["queue"] else "no worker alive"
        return f"complete: every record settled, {rest}"
    alive = len(result["holder"])
    left = result["in_flight"] + result["unknown"]
    queue = result["queue"]
    waiting = f", {queue['backlog']} waiting on the queue" if queue and queue["backlog"] else ""
    done = result["done_fraction"]
    share = f"about {done:.0%} done: " if done is not None else ""
    return f"not complete: {share}{alive} workers alive, {left} records not settled{waiting}"


def _without_consumer(url: str) -> str:
    """The queue, not one worker's consumer of it."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "consumer"]
    return urlunsplit(parts._replace(query=urlencode(query)))
