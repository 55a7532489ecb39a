"""The ledger's reading side for people: list records by state, retire them, the run history.

Plain SQL (``IN``, ``substr``, ``LIMIT``, keyset paging on the primary key) that any SQL
ledger can say the same way. Used from the ledger's one thread, like the store.
"""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, cast

from pipeline.ledger.base import LedgerRecord, RecordFilter, RunInfo, parse_summary
from pipeline.ledger.sqlite.schema import LATER_COLUMNS

#: Keys per ``IN (...)``: under SQLite's oldest limit of 999 parameters, with room for the rest.
_CHUNK = 500

#: A 4xx is the API saying no for good, except 408 (timeout) and 429 (too many requests).
RETRYABLE = (
    "(state != 'failed' OR http_status IS NULL OR http_status NOT BETWEEN 400 AND 499 "
    "OR http_status IN (408, 429))"
)

#: Only what is still a problem can be retired: never sent, unknown or in-flight records.
RETIRABLE = ("failed", "invalid")

_COLUMNS = (
    "key, state, location, http_status, error_code, error_message, attempts, assistant_id, "
    "body, {fields}, updated_at, {retired_from}, {retired_reason}"
)


def present_columns(db: sqlite3.Connection) -> frozenset[str]:
    return frozenset(row[1] for row in db.execute("PRAGMA table_info(records)"))


def _select_list(present: frozenset[str]) -> str:
    # An older ledger opened read-only is never migrated: its missing columns read as NULL.
    return _COLUMNS.format(**{c: c if c in present else f"NULL AS {c}" for c in LATER_COLUMNS})


def _where(which: RecordFilter, keys: list[str]) -> tuple[str, list[Any]]:
    clauses = [f"state IN ({','.join('?' * len(which.states))})"]
    params: list[Any] = list(which.states)
    if keys:
        clauses.append(f"key IN ({','.join('?' * len(keys))})")
        params.extend(keys)
    if which.locations:
        clauses.append(f"location IN ({','.join('?' * len(which.locations))})")
        params.extend(which.locations)
    if which.location_prefix is not None:
        clauses.append("substr(location, 1, ?) = ?")
        params.extend([len(which.location_prefix), which.location_prefix])
    if which.retryable_only:
        clauses.append(RETRYABLE)
    return " AND ".join(clauses), params


def _key_chunks(which: RecordFilter, after: str) -> Iterator[list[str]]:
    """The filter's keys after ``after`` in chunks; one empty chunk when it names none."""
    if not which.keys:
        yield []
        return
    keys = sorted({k for k in which.keys if k > after})
    for i in range(0, len(keys), _CHUNK):
        yield keys[i : i + _CHUNK]


def select_records(
    db: sqlite3.Connection, which: RecordFilter, after: str, limit: int, present: frozenset[str]
) -> list[LedgerRecord]:
    """Up to ``limit`` records after key ``after``, in key order."""
    if not which.states:
        return []
    for keys in _key_chunks(which, after):
        where, params = _where(which, keys)
        rows = db.execute(
            f"SELECT {_select_list(present)} FROM records WHERE {where} AND key > ? "
            "ORDER BY key LIMIT ?",
            [*params, after, limit],
        ).fetchall()
        if rows:
            return [_record(row) for row in rows]
    return []


def _record(row: tuple[Any, ...]) -> LedgerRecord:
    (key, state, location, status, code, reason, attempts, assistant, body, fields) = row[:10]
    return LedgerRecord(
        key=key,
        state=state,
        location=location,
        http_status=status,
        error_code=code,
        reason=reason,
        attempts=attempts,
        assistant_id=assistant,
        body=parse_summary(body),  # a JSON object, or None (a row without a usable one)
        fields=parse_summary(fields),
        updated_at=row[10],
        retired_from=row[11],
        retired_reason=row[12],
    )


def retire(db: sqlite3.Connection, which: RecordFilter, reason: str, run_id: str, now: str) -> int:
    """Retire what ``which`` selects among ``failed``/``invalid`` records, in one commit."""
    states = tuple(s for s in which.states if s in RETIRABLE)
    if not states:
        return 0
    narrowed = dataclasses.replace(which, states=states)
    retired = 0
    db.execute("BEGIN IMMEDIATE")
    try:
        for keys in _key_chunks(narrowed, ""):
            where, params = _where(narrowed, keys)
            cursor = db.execute(
                "UPDATE records SET retired_from = state, state = 'retired', retired_reason = ?, "
                f"run_id = ?, updated_at = ? WHERE {where}",
                [reason, run_id, now, *params],
            )
            retired += cursor.rowcount
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return retired


def runs(db: sqlite3.Connection, limit: int) -> list[RunInfo]:
    present = frozenset(row[1] for row in db.execute("PRAGMA table_info(runs)"))
    seen = "last_seen" if "last_seen" in present else "NULL"
    rows = db.execute(
        f"SELECT run_id, command, started_at, finished_at, {seen}, summary FROM runs "
        "ORDER BY rowid DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [
        RunInfo(run_id, command, started, finished, last_seen, parse_summary(summary))
        for run_id, command, started, finished, last_seen, summary in rows
    ]


def has_json(db: sqlite3.Connection) -> bool:
    """Whether this SQLite has its JSON functions (3.38 on always; most builds before)."""
    try:
        db.execute("SELECT json_group_array(json_array(1))").fetchone()
    except sqlite3.OperationalError:
        return False
    return True


def select_all(
    db: sqlite3.Connection, json_ok: bool, columns: str, source: str, params: Sequence[object]
) -> list[Any]:
    """``SELECT columns FROM source``, every row at once.

    As one JSON array where SQLite has JSON: a query is then one step, all of it done
    without the GIL. Row by row, each row waits to take the GIL back from the event loop's
    thread, which made a rerun's lookups take twice as long as SQLite's own work."""
    select = f"SELECT {columns} FROM {source}"
    if not json_ok:
        return db.execute(select, params).fetchall()
    query = f"SELECT json_group_array(json_array({columns})) FROM ({select})"
    (rows,) = db.execute(query, params).fetchone()
    return cast(list[Any], json.loads(rows))


#: A row that needs its request body (to be sent again, or looked up) and has none: what an
#: older version left when it wrote an outcome over another run's sent row.
BODILESS = "(body IS NULL AND state IN ('failed', 'in_flight', 'unknown'))"
#: Such a row gets its body back from the input that brings the record again, as ``unknown``
#: (it may be stored): reconciliation then settles it.
HEAL = (
    f"UPDATE records SET body = ?, assistant_id = ?, state = 'unknown' WHERE key = ? AND {BODILESS}"
)


def last_seen(db: sqlite3.Connection, run_ids: Sequence[str]) -> float | None:
    """When the latest of these runs was last known alive (seconds since the epoch)."""
    latest: float | None = None
    for run_id in run_ids:
        row = db.execute(
            "SELECT last_seen, started_at FROM runs WHERE run_id = ?", (run_id,)
        ).fetchone()
        if row is None:
            continue
        seen = row[0] if row[0] is not None else datetime.fromisoformat(row[1]).timestamp()
        latest = seen if latest is None else max(latest, seen)
    return latest
