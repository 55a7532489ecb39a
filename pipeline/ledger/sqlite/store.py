"""The synchronous SQLite side of the ledger. Only ever used from the ledger's one thread."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.errors import LedgerError
from pipeline.ledger.base import Decision, LedgerRecord, RecordFilter, RunInfo, readable
from pipeline.ledger.sqlite import queries as sqlite_queries
from pipeline.ledger.sqlite import writes as sqlite_writes
from pipeline.ledger.sqlite.connect import connect, ledger_error
from pipeline.ledger.sqlite.schema import migrate
from pipeline.ledger.sqlite.writes import CLAIM, INVALID, OUTCOME, Write, fields_json
from pipeline.models import Accepted, Outcome, Rejection, Status, invalid_key

#: The state a claim reads for a row without the body it needs (see sqlite_queries.HEAL).
_BODILESS = "bodiless"


def _chunks(values: Sequence[str]) -> Iterator[tuple[list[str], str]]:
    """``values`` 900 at a time (under SQLite's oldest limit of 999 parameters), each with
    its ``?,?,...`` for an ``IN``."""
    for i in range(0, len(values), 900):
        chunk = list(values[i : i + 900])
        yield chunk, ",".join("?" * len(chunk))


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class SqliteStore:
    def __init__(self, path: str, run_id: str, *, dry_run: bool = False) -> None:
        self.run_id = run_id
        self._dry_run = dry_run
        self._path = path
        self.path = path
        self._db = connect(path, read_only=dry_run)
        try:
            self._migrate()
            self._present = sqlite_queries.present_columns(self._db)
            self._json = sqlite_queries.has_json(self._db)
            self._batch = sqlite_writes.batch_writes(self._json)
            self._had_invalid = self._has_invalid()
            if dry_run:
                # What a dry run would claim, so that a repeat in a later batch is still a
                # duplicate; a TEMP table spills to a temporary file, not to memory.
                self._db.execute(
                    "CREATE TEMP TABLE dry_claims (key TEXT PRIMARY KEY) WITHOUT ROWID"
                )
        except BaseException as exc:
            self._db.close()
            if isinstance(exc, sqlite3.Error):
                raise ledger_error(path, exc) from exc
            raise

    def _migrate(self) -> None:
        if migrate(self._db, read_only=self._dry_run) == "empty-read-only":
            # An empty file opened read-only: read it as the empty ledger it is.
            self._db.close()
            self._db = sqlite3.connect(":memory:", isolation_level=None)
            migrate(self._db, read_only=False)

    def _has_invalid(self) -> bool:
        # Retired rows count: a retired invalid row replaced by a fixed record must go too.
        row = self._db.execute(
            "SELECT 1 FROM records WHERE state IN ('invalid', 'retired') LIMIT 1"
        )
        return row.fetchone() is not None

    def begin_run(self, command: str) -> None:
        self._write(
            "INSERT INTO runs (run_id, command, started_at) VALUES (?, ?, ?)",
            (self.run_id, command, _now()),
        )

    def end_run(self, summary: str | None) -> None:
        self._write(
            "UPDATE runs SET finished_at = ?, summary = ? WHERE run_id = ?",
            (_now(), summary, self.run_id),
        )

    def _write(self, sql: str, params: tuple[object, ...]) -> None:
        if not self._dry_run:
            try:
                self._db.execute(sql, params)
            except sqlite3.Error as exc:
                raise ledger_error(self._path, exc) from exc

    def _states(self, keys: list[str]) -> dict[str, tuple[str, str]]:
        found: dict[str, tuple[str, str]] = {}
        for chunk, marks in _chunks(keys):
            where = f"records WHERE key IN ({marks})"
            rows = self._rows(
                "key, state, run_id, gone",
                f"(SELECT *, {sqlite_queries.BODILESS} AS gone FROM {where})",
                chunk,
            )
            # A row that needs its request body and has none (an older version wrote it over
            # a sent row): the record may be stored, so it is uncertain, never sent blindly.
            found.update((k, (_BODILESS if gone else s, r)) for k, s, r, gone in rows)
            if self._dry_run:
                rows = self._rows("key", f"temp.dry_claims WHERE key IN ({marks})", chunk)
                found.update((k, (Status.IN_FLIGHT, self.run_id)) for (k,) in rows)
        return found

    def _rows(self, columns: str, source: str, params: Sequence[object]) -> list[Any]:
        return sqlite_queries.select_all(self._db, self._json, columns, source, params)

    def claim(self, batch: Sequence[Accepted | Rejection]) -> list[Decision]:
        known = self._states([item.key for item in batch if isinstance(item, Accepted)])
        decisions: list[Decision] = []
        claims: list[tuple[object, ...]] = []
        invalid: list[tuple[object, ...]] = []
        heal: list[tuple[object, ...]] = []
        now = _now()
        for item in batch:
            if isinstance(item, Rejection):
                fields = None if item.fields is None else fields_json(item.fields)
                invalid.append((item.key, item.location, self.run_id, item.reason, fields, now))
                decisions.append(Decision.INVALID)
                continue
            key = item.key
            decision = self._decide(known.get(key))
            if known.get(key, ("", ""))[0] == _BODILESS:
                # Its body from the input, so that reconciliation can settle the row.
                body = orjson.dumps(item.record.body()).decode()
                heal.append((body, item.record.assistant_id, key))
            if decision is Decision.SEND:
                known[key] = (Status.IN_FLIGHT, self.run_id)
                body = orjson.dumps(item.record.body()).decode()
                claims.append(
                    (key, item.record.assistant_id, body, item.location, self.run_id, now)
                )
            decisions.append(decision)
        # A row that was invalid in an earlier run and has been fixed in place since: its
        # location-keyed "invalid" row must go, or one input record would hold two states.
        if self._dry_run:
            self._db.executemany("INSERT INTO temp.dry_claims VALUES (?)", [c[:1] for c in claims])
        fixed: list[tuple[object, ...]] = [
            (invalid_key(item.location),)
            for item in batch
            if self._had_invalid and isinstance(item, Accepted) and item.location
        ]
        self._commit_many(
            (CLAIM, claims),
            (INVALID, invalid),
            ("DELETE FROM records WHERE key = ?", fixed),
            (sqlite_queries.HEAL, heal),
        )
        return decisions

    def sent_earlier(self, records: Sequence[tuple[str, str]]) -> set[str]:
        found: set[str] = set()
        for chunk, marks in _chunks([key for key, _ in records]):
            # "+state": by key, never by the state index (which would walk every sent row).
            where = f"records WHERE key IN ({marks}) AND +state = 'sent' AND run_id != ?"
            found.update(key for (key,) in self._rows("key", where, [*chunk, self.run_id]))
        if self._had_invalid:  # as in claim
            fixed: list[tuple[object, ...]] = [
                (invalid_key(loc),) for key, loc in records if loc and key in found
            ]
            self._commit_many(("DELETE FROM records WHERE key = ?", fixed))
        return found

    def _decide(self, known: tuple[str, str] | None) -> Decision:
        if known is None:
            return Decision.SEND
        state, run_id = known
        if run_id == self.run_id:
            return Decision.DUPLICATE
        if state == Status.SENT:
            return Decision.SKIP
        if state in (Status.FAILED, Status.RETIRED):
            # A retired record that comes in again was put there by a person: send it.
            return Decision.SEND
        # in_flight or unknown from an earlier run: the API may hold it. Reconciliation settles
        # it first; if it could not, sending again might duplicate it.
        return Decision.UNCERTAIN

    def _commit_many(self, *statements: tuple[str | Write, list[tuple[object, ...]]]) -> None:
        if self._dry_run or not any(rows for _, rows in statements):
            return
        try:
            self._db.execute("BEGIN IMMEDIATE")
            for sql, rows in statements:
                if isinstance(sql, Write):
                    sqlite_writes.write(self._db, self._batch, sql, rows)
                elif rows:
                    self._db.executemany(sql, rows)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            if self._db.in_transaction:
                self._db.execute("ROLLBACK")
            raise LedgerError(f"ledger write failed: {exc}") from exc

    def record(self, outcomes: Sequence[Outcome]) -> None:
        now = _now()
        rows: list[tuple[object, ...]] = [
            (
                o.status.value,
                o.attempts,
                o.http_status,
                o.feedback_id,
                o.error_code,
                o.error_message,
                o.status.value,
                now,
                o.key,
            )
            for o in outcomes
        ]
        self._commit_many((OUTCOME, rows))

    def failed_after(self, after: str, limit: int, retryable_only: bool = False) -> list[Accepted]:
        retryable = f"AND {sqlite_queries.RETRYABLE} " if retryable_only else ""
        rows = self._db.execute(
            "SELECT key, assistant_id, body, location FROM records "
            # Rows this run already handled are not read again (they may have failed again).
            f"WHERE state = 'failed' AND key > ? AND run_id != ? {retryable}"
            "ORDER BY key LIMIT ?",
            (after, self.run_id, limit),
        ).fetchall()
        return readable(
            [(key, loc, assistant, body) for key, assistant, body, loc in rows], "replayed"
        )

    def uncertain(self, this_run: bool) -> list[tuple[Accepted, str]]:
        """Records whose request may have reached the API: this run's ``unknown`` ones, or
        the ``in_flight``/``unknown`` ones other (dead: the lock says so) runs left."""
        rows = self._uncertain_rows(this_run)
        owners = {key: run for key, _, _, _, run in rows}
        items = readable([(key, loc, a, body) for key, a, body, loc, run in rows], "reconciled")
        return [(item, owners[item.key]) for item in items]

    def _uncertain_rows(self, this_run: bool) -> list[Any]:
        if this_run:
            where, params = "state = 'unknown' AND run_id = ?", (self.run_id,)
        else:
            where, params = "state IN ('in_flight', 'unknown') AND run_id != ?", (self.run_id,)
        return self._db.execute(
            f"SELECT key, assistant_id, body, location, run_id FROM records WHERE {where}", params
        ).fetchall()

    def settle(self, outcomes: Sequence[Outcome], this_run: bool) -> set[str]:
        """Reconciliation's outcomes, for the records still uncertain (as it read them)."""
        still = {row[0] for row in self._uncertain_rows(this_run)}
        kept = [o for o in outcomes if o.key in still]
        self.record(kept)
        return {o.key for o in kept}

    def recorded_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of these feedback ids the ledger already holds for some record."""
        found: set[str] = set()
        for chunk, marks in _chunks(ids):
            where = f"records WHERE state = 'sent' AND feedback_id IN ({marks})"
            found.update(fid for (fid,) in self._rows("feedback_id", where, chunk))
        return found

    def heartbeat(self) -> None:
        self._write("UPDATE runs SET last_seen = ? WHERE run_id = ?", (time.time(), self.run_id))

    def last_seen(self, run_ids: Sequence[str]) -> float | None:
        return sqlite_queries.last_seen(self._db, run_ids)

    def records_after(self, which: RecordFilter, after: str, limit: int) -> list[LedgerRecord]:
        return sqlite_queries.select_records(self._db, which, after, limit, self._present)

    def retire(self, which: RecordFilter, reason: str) -> int:
        if self._dry_run:
            return 0
        try:
            return sqlite_queries.retire(self._db, which, reason, self.run_id, _now())
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger write failed: {exc}") from exc

    def runs(self, limit: int) -> list[RunInfo]:
        return sqlite_queries.runs(self._db, limit)

    def counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT state, count(*) FROM records GROUP BY state")
        return dict(rows.fetchall())

    def close(self) -> None:
        self._db.close()
