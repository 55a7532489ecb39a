"""The shared ledger: one PostgreSQL database that many workers on many hosts write at once.

Ownership: every claimed row names its owner (``run_id``), and every run holds a lease
(``runs.lease_until``, on the database's clock) that its heartbeat renews every second.

- A claim is one ``INSERT ... ON CONFLICT DO UPDATE ... WHERE`` per batch: it takes a record
  only if it is new, or ``failed``/``retired`` by another run. PostgreSQL locks the conflicting
  row and re-checks the condition on its newest version, so of two runs claiming the same key
  at once exactly one gets SEND.
- A record another run holds ``in_flight`` (alive or not) or left ``unknown`` is UNCERTAIN
  for this run: it is neither sent nor acked (a queue entry stays pending), because its owner
  finishes it, or, once its lease expired, reconciliation settles it. Only this run's own
  repeats are DUPLICATE (acked as final: the record is handled by this very run).
- Reconciliation (:meth:`uncertain`) sees only the records of owners whose lease expired;
  a live worker's in-flight records are never touched.
- ``replay`` takes its failed records with ``FOR UPDATE SKIP LOCKED`` (:meth:`failed`): two
  replays at once split them, and each is sent once.
"""

from __future__ import annotations

import contextlib
import json
import socket
from collections.abc import AsyncIterator, Iterator, Sequence
from datetime import UTC, datetime

import asyncpg
import orjson

from pipeline.errors import LedgerError
from pipeline.ledger import postgres_queries as queries
from pipeline.ledger import postgres_schema as schema_
from pipeline.ledger import postgres_sql as sql
from pipeline.ledger.base import Decision, LedgerRecord, RecordFilter, RunInfo
from pipeline.ledger.sqlite_queries import RETRYABLE
from pipeline.models import Accepted, FeedbackRecord, Outcome, Rejection, Status, invalid_key

_NOW = "extract(epoch FROM clock_timestamp())"
#: What asyncpg raises when the server or the connection fails.
_DRIVER_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)


@contextlib.contextmanager
def _guard(shown: str, what: str) -> Iterator[None]:
    """A server error is the ledger's (the run stops with one line), never a traceback."""
    try:
        yield
    except _DRIVER_ERRORS as exc:
        raise LedgerError(f"ledger {shown}: {what} failed: {exc}") from exc


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class PostgresLedger:
    def __init__(
        self,
        pool: asyncpg.Pool,
        target: schema_.Target,
        run_id: str,
        *,
        read_only: bool,
        empty: bool,
    ) -> None:
        self._pool = pool
        self._t = target
        self._s = target.schema
        self.run_id = run_id
        self._read_only = read_only
        self._empty = empty  # read-only on a database with no ledger yet: reads as empty
        self._taken: set[str] = set()  # failed records replay took, not yet claimed
        self._dry: set[str] = set()  # what a dry run would have claimed

    @classmethod
    async def open(
        cls, url: str, run_id: str, *, command: str, read_only: bool = False
    ) -> PostgresLedger:
        target = schema_.parse(url)
        try:
            pool = await asyncpg.create_pool(target.dsn, min_size=1, max_size=4)
        except _DRIVER_ERRORS as exc:
            raise LedgerError(f"ledger {target.shown}: cannot connect: {exc}") from exc
        try:
            async with pool.acquire() as conn:
                if read_only:
                    empty = not await schema_.exists(conn, target.schema)
                else:
                    await schema_.migrate(conn, target.schema)
                    empty = False
            ledger = cls(pool, target, run_id, read_only=read_only, empty=empty)
            if not read_only:
                await ledger._begin(command)
        except BaseException:
            await pool.close()
            raise
        return ledger

    async def _begin(self, command: str) -> None:
        await self._pool.execute(
            f"INSERT INTO {self._s}.runs (run_id, command, host, started_at, last_seen, "
            f"lease_until) VALUES ($1, $2, $3, $4, {_NOW}, {_NOW} + $5)",
            self.run_id,
            command,
            socket.gethostname(),
            _now(),
            self._t.lease,
        )

    # --- claims and outcomes -----------------------------------------------------------------

    async def claim(self, batch: Sequence[Accepted | Rejection]) -> list[Decision]:
        first: dict[str, Accepted] = {}
        for item in batch:
            if isinstance(item, Accepted):
                first.setdefault(item.key, item)
        with _guard(self._t.shown, "claim"):
            if self._read_only:
                taken = await self._dry_claim(list(first))
            else:
                taken = await self._write_claims(batch, first)
            return await self._decide(batch, first, taken)

    async def sent_earlier(self, records: Sequence[tuple[str, str]]) -> set[str]:
        if self._empty or not records:
            return set()
        with _guard(self._t.shown, "looking up what was sent"):
            rows = await self._pool.fetch(
                f"SELECT key FROM {self._s}.records WHERE key = ANY($1::text[]) "
                "AND state = 'sent' AND run_id <> $2",
                [key for key, _ in records],
                self.run_id,
            )
            found = {r["key"] for r in rows}
            fixed = [invalid_key(loc) for key, loc in records if loc and key in found]
            if fixed and not self._read_only:  # as in a claim
                await self._pool.execute(sql.DROP_FIXED.format(s=self._s), fixed)
        return found

    async def _write_claims(
        self, batch: Sequence[Accepted | Rejection], first: dict[str, Accepted]
    ) -> set[str]:
        # In key order: two runs lock the rows they both claim in the same order, so they
        # wait on each other instead of deadlocking.
        items = sorted(first.values(), key=lambda a: a.key)
        rejections = [i for i in batch if isinstance(i, Rejection)]
        now = _now()
        async with self._pool.acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                sql.CLAIM.format(s=self._s),
                [i.key for i in items],
                [i.record.assistant_id for i in items],
                [orjson.dumps(i.record.body()).decode() for i in items],
                [i.location for i in items],
                self.run_id,
                now,
                list(self._taken & first.keys()),
            )
            if rejections:
                await conn.execute(
                    sql.INVALID.format(s=self._s),
                    [r.key for r in rejections],
                    [r.location for r in rejections],
                    [r.reason for r in rejections],
                    [
                        None if r.fields is None else json.dumps(r.fields, default=str)
                        for r in rejections
                    ],
                    self.run_id,
                    now,
                )
            # A row that was invalid once and is fixed now: its location-keyed row goes.
            fixed = [invalid_key(i.location) for i in items if i.location]
            if fixed:
                await conn.execute(sql.DROP_FIXED.format(s=self._s), fixed)
        taken = {r["key"] for r in rows}
        self._taken -= taken
        return taken

    async def _dry_claim(self, keys: list[str]) -> set[str]:
        known = await self._states(keys)
        taken = {
            k
            for k in keys
            if k not in self._dry and (k not in known or known[k][0] in ("failed", "retired"))
        }
        self._dry |= taken
        return taken

    async def _states(self, keys: list[str]) -> dict[str, tuple[str, str]]:
        if self._empty or not keys:
            return {}
        rows = await self._pool.fetch(
            f"SELECT key, state, run_id FROM {self._s}.records WHERE key = ANY($1::text[])", keys
        )
        return {r["key"]: (r["state"], r["run_id"]) for r in rows}

    async def _decide(
        self, batch: Sequence[Accepted | Rejection], first: dict[str, Accepted], taken: set[str]
    ) -> list[Decision]:
        known = await self._states([k for k in first if k not in taken])
        decisions: list[Decision] = []
        seen: set[str] = set()
        for item in batch:
            if isinstance(item, Rejection):
                decisions.append(Decision.INVALID)
            elif item.key in seen or (item.key in self._dry and item.key not in taken):
                decisions.append(Decision.DUPLICATE)
            elif item.key in taken:
                decisions.append(Decision.SEND)
            else:
                decisions.append(self._verdict(known.get(item.key)))
            seen.add(item.key)
        return decisions

    def _verdict(self, known: tuple[str, str] | None) -> Decision:
        if known is None:
            # Not taken, yet not there: only a read-only ledger ends here (see _dry_claim).
            return Decision.DUPLICATE
        state, owner = known
        if owner == self.run_id:
            return Decision.DUPLICATE
        if state == Status.SENT:
            return Decision.SKIP
        # In flight in another worker (alive: it finishes it; dead: reconciliation settles
        # it), or unknown: never sent twice, never acked here.
        return Decision.UNCERTAIN

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        # Only the owner writes an outcome, or anyone once the owner's lease expired
        # (reconciliation): a worker that lost its lease never overwrites a new owner's row.
        if not self._read_only and outcomes:
            await self._write(sql.OUTCOMES, outcomes)

    async def settle(self, outcomes: Sequence[Outcome], *, this_run: bool) -> set[str]:
        if self._read_only or not outcomes:
            return set()
        rows = await self._write(sql.SETTLE, outcomes, this_run)
        return {r["key"] for r in rows}

    async def _write(
        self, statement: str, outcomes: Sequence[Outcome], *extra: object
    ) -> list[asyncpg.Record]:
        outcomes = sorted(outcomes, key=lambda o: o.key)  # lock order, as in claim
        with _guard(self._t.shown, "writing outcomes"):
            rows: list[asyncpg.Record] = await self._pool.fetch(
                statement.format(s=self._s, now=_NOW),
                [o.key for o in outcomes],
                [o.status.value for o in outcomes],
                [o.attempts for o in outcomes],
                [o.http_status for o in outcomes],
                [o.feedback_id for o in outcomes],
                [o.error_code for o in outcomes],
                [o.error_message for o in outcomes],
                _now(),
                self.run_id,
                *extra,
            )
            return rows

    # --- replay --------------------------------------------------------------------------------

    async def failed(
        self, batch_size: int = 500, *, retryable_only: bool = False
    ) -> AsyncIterator[list[Accepted]]:
        """Take failed records, a batch at a time, so that no other replay takes them too:
        each batch becomes this run's ``in_flight`` in one statement (rows another replay is
        taking right now are skipped, not waited for). ``claim`` then sends them."""
        retryable = f"AND {RETRYABLE}" if retryable_only else ""
        while not self._empty:
            rows = await self._pool.fetch(
                sql.TAKE_FAILED.format(s=self._s, retryable=retryable)
                if not self._read_only
                else f"SELECT key, assistant_id, body, location FROM {self._s}.records "
                f"WHERE state = 'failed' AND run_id <> $1 {retryable} "
                "AND NOT key = ANY($3::text[]) ORDER BY key LIMIT $2",
                self.run_id,
                batch_size,
                *([list(self._dry)] if self._read_only else []),
            )
            if not rows:
                return
            batch = sorted(
                (
                    Accepted(
                        r["location"],
                        FeedbackRecord(assistant_id=r["assistant_id"], **json.loads(r["body"])),
                        r["key"],
                    )
                    for r in rows
                ),
                key=lambda a: a.key,
            )
            if self._read_only:
                self._dry |= {a.key for a in batch}
            else:
                self._taken |= {a.key for a in batch}
            yield batch

    # --- reconciliation ------------------------------------------------------------------------

    async def uncertain(self, this_run: bool) -> list[tuple[Accepted, str]]:
        if self._empty:
            return []
        if this_run:
            query = (
                f"SELECT key, assistant_id, body, location, run_id FROM {self._s}.records "
                "WHERE state = 'unknown' AND run_id = $1"
            )
        else:
            query = sql.LEFTOVERS.format(s=self._s, now=_NOW)
        rows = await self._pool.fetch(query, self.run_id)
        return [
            (
                Accepted(
                    r["location"],
                    FeedbackRecord(assistant_id=r["assistant_id"], **json.loads(r["body"])),
                    r["key"],
                ),
                r["run_id"],
            )
            for r in rows
        ]

    async def recorded_ids(self, ids: Sequence[str]) -> set[str]:
        if self._empty or not ids:
            return set()
        rows = await self._pool.fetch(
            f"SELECT feedback_id FROM {self._s}.records WHERE state = 'sent' "
            "AND feedback_id = ANY($1::text[])",
            list(ids),
        )
        return {r["feedback_id"] for r in rows}

    async def heartbeat(self) -> None:
        if not self._read_only:
            with _guard(self._t.shown, "heartbeat"):
                await self._pool.execute(
                    f"UPDATE {self._s}.runs SET last_seen = {_NOW}, lease_until = {_NOW} + $2 "
                    "WHERE run_id = $1",
                    self.run_id,
                    self._t.lease,
                )

    async def last_seen(self, run_ids: Sequence[str]) -> float | None:
        if self._empty or not run_ids:
            return None
        seen: float | None = await self._pool.fetchval(
            f"SELECT max(last_seen) FROM {self._s}.runs WHERE run_id = ANY($1::text[])",
            list(run_ids),
        )
        return seen

    # --- reading -------------------------------------------------------------------------------

    async def records(
        self, which: RecordFilter, batch_size: int = 500
    ) -> AsyncIterator[list[LedgerRecord]]:
        after = ""
        while not self._empty:
            batch = await queries.select_records(self._pool, self._s, which, after, batch_size)
            if not batch:
                return
            after = batch[-1].key
            yield batch

    async def retire(self, which: RecordFilter, reason: str) -> int:
        if self._read_only:
            return 0
        return await queries.retire(self._pool, self._s, which, reason, self.run_id, _now())

    async def runs(self, limit: int) -> list[RunInfo]:
        return [] if self._empty else await queries.runs(self._pool, self._s, limit)

    async def holder(self) -> str | None:
        """The workers whose lease is live, e.g. ``workers alive: run-1@host-a, run-2@host-b``."""
        if self._empty:
            return None
        alive = await queries.alive(self._pool, self._s)
        return f"workers alive: {', '.join(alive)}" if alive else None

    async def counts(self) -> dict[str, int]:
        if self._empty:
            return {}
        rows = await self._pool.fetch(
            f"SELECT state, count(*) AS n FROM {self._s}.records GROUP BY state"
        )
        return {r["state"]: r["n"] for r in rows}

    async def close(self, summary: str | None = None) -> None:
        try:
            if not self._read_only:
                if self._taken:  # taken by failed() but never claimed (replay --limit)
                    await self._pool.execute(
                        f"UPDATE {self._s}.records SET state = 'failed' WHERE run_id = $1 "
                        "AND state = 'in_flight' AND key = ANY($2::text[])",
                        self.run_id,
                        list(self._taken),
                    )
                await self._pool.execute(
                    f"UPDATE {self._s}.runs SET finished_at = $2, summary = $3, "
                    "lease_until = NULL WHERE run_id = $1",
                    self.run_id,
                    _now(),
                    summary,
                )
        finally:
            await self._pool.close()


async def open_ledger(
    url: str, run_id: str, *, command: str, read_only: bool = False
) -> PostgresLedger:
    """The registry's entry point: ``url`` is ``postgresql://...``."""
    return await PostgresLedger.open(url, run_id, command=command, read_only=read_only)


__all__ = ["PostgresLedger", "open_ledger"]
