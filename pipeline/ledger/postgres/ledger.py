"""The shared ledger: one PostgreSQL database that many workers on many hosts write at once.

Ownership: every claimed row names its owner (``run_id``) and carries the claim's fencing
token (``fence``); every run holds a lease (``runs.lease_until``, on the database's clock)
that its heartbeat renews every second while it holds, never once it ran out
(pipeline.ledger.lease).

- An outcome is written only over the claim it belongs to (owner, token, still in flight): a
  worker that lost its lease never writes over what another settled; the refused keys come
  back to it, counted.
- Every call is bounded in time (:mod:`pipeline.ledger.postgres.link`): a stalled or cut
  ledger is a :class:`LedgerError` naming it, never a hang.

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

import functools
import socket
from collections.abc import AsyncIterator, Sequence

import asyncpg

from pipeline.ledger.base import readable
from pipeline.ledger.postgres import schema as schema_
from pipeline.ledger.postgres import sql
from pipeline.ledger.postgres.claims import PostgresClaims
from pipeline.ledger.postgres.fleet import PostgresFleet
from pipeline.ledger.postgres.link import CLOSE_S, Link
from pipeline.ledger.postgres.reads import NOW, PostgresReads, now_iso
from pipeline.ledger.sqlite.queries import RETRYABLE
from pipeline.models import Accepted, Outcome

__all__ = ["PostgresLedger", "open_ledger"]


class PostgresLedger(PostgresClaims, PostgresReads, PostgresFleet):
    def __init__(
        self,
        link: Link,
        target: schema_.Target,
        run_id: str,
        *,
        read_only: bool,
        empty: bool,
    ) -> None:
        self._link = link
        self._pool = link.pool
        self._t = target
        self._s = target.schema
        self.run_id = run_id
        self.lease: float | None = None if read_only else target.lease
        self._read_only = read_only
        self._empty = empty  # read-only on a database with no ledger yet: reads as empty
        self._taken: set[str] = set()  # failed records replay took, not yet claimed
        self._dry: set[str] = set()  # what a dry run would have claimed
        # Fencing tokens: of this run's claims until their outcome is written, and of the
        # uncertain rows reconciliation read, until it settles them.
        self._fences: dict[str, int] = {}
        self._read_fences: dict[str, int] = {}

    @property
    def missing(self) -> bool:
        """Opened to read where no ledger is (no worker created its tables there)."""
        return self._empty

    @classmethod
    async def open(
        cls,
        url: str,
        run_id: str,
        *,
        command: str,
        read_only: bool = False,
        request_bound: float = 0.0,
    ) -> PostgresLedger:
        target = schema_.parse(url)
        link, conn = await Link.connect(target.dsn, target.shown)
        try:
            try:
                if read_only:
                    empty = not await link.call(
                        "opening", lambda: schema_.exists(conn, target.schema)
                    )
                else:
                    await link.call("opening", lambda: schema_.migrate(conn, target.schema))
                    empty = False
            finally:
                if not link.broken:
                    await link.pool.release(conn)
            ledger = cls(link, target, run_id, read_only=read_only, empty=empty)
            if not read_only:
                await ledger._begin(command, request_bound)
        except BaseException:
            await link.close(broken=True)
            raise
        return ledger

    async def _begin(self, command: str, request_bound: float) -> None:
        await self._link.call(
            "starting the run",
            lambda: self._pool.execute(
                f"INSERT INTO {self._s}.runs (run_id, command, host, started_at, last_seen, "
                f"lease_until, request_bound) VALUES ($1, $2, $3, $4, {NOW}, {NOW} + $5, $6)",
                self.run_id,
                command,
                socket.gethostname(),
                now_iso(),
                self._t.lease,
                request_bound,
            ),
        )

    # --- outcomes -------------------------------------------------------------------------------

    async def record(self, outcomes: Sequence[Outcome]) -> set[str]:
        if self._read_only or not outcomes:
            return set()
        fences = self._fences
        mine = [o for o in outcomes if o.key in fences]
        written = {r["key"] for r in await self._write(sql.OUTCOMES, mine, fences)}
        for outcome in mine:
            fences.pop(outcome.key, None)
        # Refused: the claim is no longer this run's (another settled or took the record).
        return {o.key for o in outcomes} - written

    async def settle(self, outcomes: Sequence[Outcome], *, this_run: bool) -> set[str]:
        if self._read_only or not outcomes:
            return set()
        read = self._read_fences
        rows = await self._write(sql.SETTLE, outcomes, read, this_run)
        for outcome in outcomes:
            read.pop(outcome.key, None)
        return {r["key"] for r in rows}

    async def _write(
        self,
        statement: str,
        outcomes: Sequence[Outcome],
        fences: dict[str, int],  # the claims' tokens (none: a settle of a row it did not read)
        *extra: object,
    ) -> list[asyncpg.Record]:
        if not outcomes:
            return []
        outcomes = sorted(outcomes, key=lambda o: o.key)  # lock order, as in claim
        rows: list[asyncpg.Record] = await self._link.call(
            "writing outcomes",
            lambda: self._pool.fetch(
                statement.format(s=self._s, now=NOW),
                [o.key for o in outcomes],
                [o.status.value for o in outcomes],
                [o.attempts for o in outcomes],
                [o.http_status for o in outcomes],
                [o.feedback_id for o in outcomes],
                [o.error_code for o in outcomes],
                [o.error_message for o in outcomes],
                now_iso(),
                self.run_id,
                [fences.get(o.key) for o in outcomes],
                *extra,
            ),
        )
        return rows

    # --- replay and reconciliation -------------------------------------------------------------

    async def failed(
        self, batch_size: int = 500, *, retryable_only: bool = False
    ) -> AsyncIterator[list[Accepted]]:
        """Take failed records, a batch at a time, so that no other replay takes them too:
        each batch becomes this run's ``in_flight`` in one statement (rows another replay is
        taking right now are skipped, not waited for). ``claim`` then sends them."""
        retryable = f"AND {RETRYABLE}" if retryable_only else ""
        query = (
            f"SELECT key, assistant_id, body, location FROM {self._s}.records "
            f"WHERE state = 'failed' AND run_id <> $1 {retryable} "
            "AND NOT key = ANY($3::text[]) ORDER BY key LIMIT $2"
            if self._read_only
            else sql.TAKE_FAILED.format(s=self._s, retryable=retryable)
        )
        while not self._empty:
            dry = [list(self._dry)] if self._read_only else []
            rows = await self._link.call(
                "reading failed records",
                functools.partial(self._pool.fetch, query, self.run_id, batch_size, *dry),
            )
            if not rows:
                return
            if self._read_only:
                self._dry |= {r["key"] for r in rows}
            else:
                self._taken |= {r["key"] for r in rows}
            batch = sorted(_readable(rows, "replayed"), key=lambda a: a.key)
            if batch:
                yield batch

    async def uncertain(self, this_run: bool) -> list[tuple[Accepted, str]]:
        if self._empty:
            return []
        if this_run:
            query = (
                f"SELECT key, assistant_id, body, location, run_id, fence FROM {self._s}.records "
                "WHERE state = 'unknown' AND run_id = $1"
            )
        else:
            query = sql.LEFTOVERS.format(s=self._s, now=NOW)
        rows = await self._link.call(
            "reading uncertain records", lambda: self._pool.fetch(query, self.run_id)
        )
        owners = {r["key"]: r["run_id"] for r in rows}
        self._read_fences.update((r["key"], r["fence"]) for r in rows)
        return [(item, owners[item.key]) for item in _readable(rows, "reconciled")]

    # --- the lease -------------------------------------------------------------------------------

    async def heartbeat(self) -> bool:
        if self._read_only:
            return True
        renewed = await self._link.call(
            "renewing the lease",
            lambda: self._pool.fetchval(
                sql.RENEW.format(s=self._s, now=NOW), self.run_id, self._t.lease
            ),
        )
        return renewed is not None

    async def close(self, summary: str | None = None) -> None:
        """Write the run's end (its lease with it), then close; bounded. A ledger that cannot
        take it leaves the run's lease to run out, which is what a killed run leaves too."""
        try:
            if not self._read_only and not self._link.broken:
                await self._link.call(
                    "recording the run's end", lambda: self._end(summary), CLOSE_S
                )
        finally:
            await self._link.close()

    async def _end(self, summary: str | None) -> None:
        if self._taken:  # taken by failed() but never claimed (replay --limit)
            await self._pool.execute(
                f"UPDATE {self._s}.records SET state = 'failed' WHERE run_id = $1 "
                "AND state = 'in_flight' AND key = ANY($2::text[])",
                self.run_id,
                list(self._taken),
            )
        await self._pool.execute(
            f"UPDATE {self._s}.runs SET finished_at = $2, summary = $3, last_seen = {NOW}, "
            "lease_until = NULL WHERE run_id = $1",
            self.run_id,
            now_iso(),
            summary,
        )


def _readable(rows: Sequence[asyncpg.Record], what: str) -> list[Accepted]:
    return readable([(r["key"], r["location"], r["assistant_id"], r["body"]) for r in rows], what)


async def open_ledger(
    url: str, run_id: str, *, command: str, read_only: bool = False, request_bound: float = 0.0
) -> PostgresLedger:
    """The registry's entry point: ``url`` is ``postgresql://...``."""
    return await PostgresLedger.open(
        url, run_id, command=command, read_only=read_only, request_bound=request_bound
    )
