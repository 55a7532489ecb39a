"""``failures``: export what needs a person, in a form ``run`` reads back (``retire`` closes
what was dealt with: :mod:`pipeline.cli.retire`).

An export has the record's own columns first (``assistant_id, session_id, message_id, score,
text, key``), then what went wrong (``state, location, http_status, error_code, reason``):
fix a row and ``run`` the file; ``run`` ignores the extra columns. A failed record keeps its
idempotency key in ``key``, so the fixed row replaces it in the ledger and is sent once.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import sys
from collections.abc import AsyncIterator, Iterator
from typing import IO, Any

import click

from pipeline.cli.common import (
    EXIT_USAGE,
    config_option,
    epilog,
    fail,
    guarded,
    ledger_option,
    require_ledger,
)
from pipeline.config import Settings
from pipeline.engine.columns import PROBLEM_COLUMNS
from pipeline.errors import ConfigError
from pipeline.ledger import Ledger, open_ledger
from pipeline.ledger.base import OPEN_PROBLEMS, RECORD_COLUMNS, LedgerRecord, RecordFilter
from pipeline.urls import mask_url

#: What went wrong, after the record's own columns.
COLUMNS = RECORD_COLUMNS + PROBLEM_COLUMNS
#: Records ``failures`` sorts into file order at most (held in memory to sort them).
SORTED_AT_MOST = 200_000
#: Records ``retire --dry-run`` (and ``retire``) print one line each, at most.
SHOWN = 20

_EXPORT_EXITS = "\b\nExit codes: 0 exported (also when there is nothing to export), 2 usage error."


def row_of(record: LedgerRecord) -> dict[str, Any]:
    return {
        **record.columns(),
        "state": record.state,
        "location": record.location,
        "http_status": record.http_status,
        "error_code": record.error_code,
        "reason": record.reason,
    }


@contextlib.asynccontextmanager
async def reading(url: str, command: str) -> AsyncIterator[Ledger]:
    """The ledger opened to read (no lock: works beside a run, and on a read-only file)."""
    require_ledger(url)
    ledger = await open_ledger(url, command, command=command, read_only=True)
    if getattr(ledger, "missing", False):  # a server ledger no worker created there
        await ledger.close()
        raise ConfigError(f"ledger: no ledger at {mask_url(url)} (no worker created it there)")
    try:
        yield ledger
    finally:
        await ledger.close()


@click.command(
    epilog=epilog(
        "feedback-pipeline failures --state failed --output fix.csv\n"
        "  # fix the rows in fix.csv, then:  feedback-pipeline run fix.csv",
        _EXPORT_EXITS,
    )
)
@config_option
@ledger_option
@click.option(
    "--state",
    "states",
    multiple=True,
    type=click.Choice(OPEN_PROBLEMS),
    help="Only records in this state; repeatable [all three].",
)
@click.option(
    "--format", "fmt", type=click.Choice(["csv", "jsonl"]), help="[from --output's name, else csv]"
)
@click.option("--output", metavar="FILE", help="Write here instead of standard output.")
@guarded
def failures(
    config_file: str | None,
    ledger: str | None,
    states: tuple[str, ...],
    fmt: str | None,
    output: str | None,
) -> None:
    """Export failed, invalid and unknown records to fix and feed back to `run`.

    Columns: assistant_id, session_id, message_id, score, text, key (the record, as `run`
    reads it), then state, location, http_status, error_code, reason.
    """
    settings = Settings.load(config_file, ledger=ledger)
    fmt = fmt or ("jsonl" if output and output.endswith((".jsonl", ".ndjson")) else "csv")
    which = RecordFilter(states or OPEN_PROBLEMS)
    with _opened(output) as stream:
        counts = asyncio.run(_export(settings.ledger, which, fmt, stream))
    shown = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "nothing"
    click.echo(f"failures: {sum(counts.values())} records ({shown})", err=True)


@contextlib.contextmanager
def _opened(output: str | None) -> Iterator[IO[str]]:
    if output is None:
        reconfigure = getattr(sys.stdout, "reconfigure", None)
        if reconfigure is not None:
            # An undecodable byte of the source (a lone surrogate) is shown, not a crash.
            reconfigure(errors="backslashreplace")
        yield sys.stdout
        return
    try:
        # backslashreplace: an undecodable byte of the source is shown, not a crash.
        with open(output, "w", newline="", encoding="utf-8", errors="backslashreplace") as fh:
            yield fh
    except OSError as exc:
        fail(f"--output: cannot write {output}: {exc.strerror}", EXIT_USAGE)


async def _export(url: str, which: RecordFilter, fmt: str, stream: IO[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    writer = csv.DictWriter(stream, fieldnames=COLUMNS) if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    async with reading(url, "failures") as ledger:
        async for batch in _in_file_order(ledger.records(which)):
            for record in batch:
                counts[record.state] = counts.get(record.state, 0) + 1
                row = row_of(record)
                if writer is not None:
                    writer.writerow(row)
                else:
                    stream.write(json.dumps(row, ensure_ascii=False) + "\n")
    return counts


async def _in_file_order(
    batches: AsyncIterator[list[LedgerRecord]],
) -> AsyncIterator[list[LedgerRecord]]:
    """The records in file order (file, then line: what a person fixing them reads along),
    up to :data:`SORTED_AT_MOST` of them; past that, in the ledger's order as they come, so
    that an export of millions does not hold them all in memory."""
    held: list[LedgerRecord] = []
    sorting = True
    async for batch in batches:
        if not sorting:
            yield batch
            continue
        held.extend(batch)
        if len(held) > SORTED_AT_MOST:
            sorting = False
            yield held
    if sorting and held:
        yield sorted(held, key=_file_order)


def _file_order(record: LedgerRecord) -> tuple[str, int, str]:
    where, _, line = (record.location or "").rpartition(":")
    if where and line.isdigit():
        return where, int(line), ""
    return record.location or "", 0, record.key
