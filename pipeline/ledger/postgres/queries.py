"""The PostgreSQL ledger's reading side for people: records by state, retire, run history.

The same filters as the SQLite ledger (pipeline.ledger.sqlite.queries), with numbered
parameters and arrays instead of ``IN (?, ?, ...)``.
"""

from __future__ import annotations

from typing import Any

import asyncpg

from pipeline.ledger.base import LedgerRecord, RecordFilter, RunInfo, parse_summary
from pipeline.ledger.sqlite.queries import RETIRABLE, RETRYABLE

_COLUMNS = (
    "key, state, location, http_status, error_code, error_message, attempts, assistant_id, "
    "body, fields, updated_at, retired_from, retired_reason"
)


def where(which: RecordFilter, params: list[Any]) -> str:
    """The filter as SQL; appends its values to ``params`` (numbered from there)."""

    def arg(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    clauses = [f"state = ANY({arg(list(which.states))}::text[])"]
    if which.keys:
        clauses.append(f"key = ANY({arg(list(which.keys))}::text[])")
    if which.locations:
        clauses.append(f"location = ANY({arg(list(which.locations))}::text[])")
    if which.location_prefix is not None:
        prefix = which.location_prefix
        clauses.append(f"substr(location, 1, {arg(len(prefix))}) = {arg(prefix)}")
    if which.retryable_only:
        clauses.append(RETRYABLE)
    return " AND ".join(clauses)


async def select_records(
    pool: asyncpg.Pool, schema: str, which: RecordFilter, after: str, limit: int
) -> list[LedgerRecord]:
    if not which.states:
        return []
    params: list[Any] = []
    clause = where(which, params)
    rows = await pool.fetch(
        f"SELECT {_COLUMNS} FROM {schema}.records WHERE {clause} "
        f"AND key > ${len(params) + 1} ORDER BY key LIMIT ${len(params) + 2}",
        *params,
        after,
        limit,
    )
    return [_record(row) for row in rows]


def _record(row: Any) -> LedgerRecord:
    return LedgerRecord(
        key=row["key"],
        state=row["state"],
        location=row["location"],
        http_status=row["http_status"],
        error_code=row["error_code"],
        reason=row["error_message"],
        attempts=row["attempts"],
        assistant_id=row["assistant_id"],
        body=parse_summary(row["body"]),  # a JSON object, or None (a row without a usable one)
        fields=parse_summary(row["fields"]),
        updated_at=row["updated_at"],
        retired_from=row["retired_from"],
        retired_reason=row["retired_reason"],
    )


async def retire(
    pool: asyncpg.Pool, schema: str, which: RecordFilter, reason: str, run_id: str, now: str
) -> int:
    states = tuple(s for s in which.states if s in RETIRABLE)
    if not states:
        return 0
    params: list[Any] = [reason, run_id, now]
    clause = where(
        RecordFilter(
            states, which.keys, which.location_prefix, which.retryable_only, which.locations
        ),
        params,
    )
    status: str = await pool.execute(
        f"UPDATE {schema}.records SET retired_from = state, state = 'retired', "
        f"retired_reason = $1, run_id = $2, updated_at = $3 WHERE {clause}",
        *params,
    )
    return int(status.rsplit(" ", 1)[-1])


async def runs(pool: asyncpg.Pool, schema: str, limit: int) -> list[RunInfo]:
    rows = await pool.fetch(
        f"SELECT run_id, command, started_at, finished_at, last_seen, summary "
        f"FROM {schema}.runs ORDER BY seq DESC LIMIT $1",
        limit,
    )
    return [
        RunInfo(
            r["run_id"],
            r["command"],
            r["started_at"],
            r["finished_at"],
            r["last_seen"],
            parse_summary(r["summary"]),
        )
        for r in rows
    ]


async def alive(pool: asyncpg.Pool, schema: str) -> list[str]:
    """The runs whose lease has not expired: the workers alive now."""
    rows = await pool.fetch(
        f"SELECT run_id, host FROM {schema}.runs WHERE lease_until >= "
        "extract(epoch FROM clock_timestamp()) ORDER BY seq"
    )
    return [f"{r['run_id']}@{r['host']}" for r in rows]
