"""The shared ledger's reading side: what ``status``, ``failures``, ``retire`` and
reconciliation's waits read, each call bounded through the ledger's link."""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

from pipeline.ledger.base import LedgerRecord, RecordFilter, RunInfo
from pipeline.ledger.lease import HEARTBEAT_S
from pipeline.ledger.postgres import queries, sql
from pipeline.ledger.postgres.link import LedgerParts

#: The database's clock, in seconds since the epoch: hosts' clocks may disagree.
NOW = "extract(epoch FROM clock_timestamp())"


def now_iso() -> str:
    """This host's time for the rows' ``updated_at`` and the runs' start and end."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class PostgresReads(LedgerParts):
    """Reads of the ledger (:class:`pipeline.ledger.postgres.ledger.PostgresLedger` is one)."""

    async def recorded_ids(self, ids: Sequence[str]) -> set[str]:
        if self._empty or not ids:
            return set()
        rows = await self._link.call(
            "looking up feedback ids",
            lambda: self._pool.fetch(
                f"SELECT feedback_id FROM {self._s}.records WHERE state = 'sent' "
                "AND feedback_id = ANY($1::text[])",
                list(ids),
            ),
        )
        return {r["feedback_id"] for r in rows}

    async def last_seen(self, run_ids: Sequence[str]) -> float | None:
        if self._empty or not run_ids:
            return None
        seen: float | None = await self._link.call(
            "reading the runs",
            lambda: self._pool.fetchval(
                f"SELECT max(last_seen) FROM {self._s}.runs WHERE run_id = ANY($1::text[])",
                list(run_ids),
            ),
        )
        return seen

    async def quiet_in(self, run_ids: Sequence[str]) -> float:
        if self._empty or not run_ids:
            return 0.0
        query = sql.QUIET_IN.format(s=self._s, now=NOW, heartbeat=HEARTBEAT_S)
        quiet: float | None = await self._link.call(
            "reading the runs", lambda: self._pool.fetchval(query, list(run_ids))
        )
        return quiet or 0.0

    async def records(
        self, which: RecordFilter, batch_size: int = 500
    ) -> AsyncIterator[list[LedgerRecord]]:
        after = ""
        while not self._empty:
            batch = await self._link.call(
                "reading records",
                functools.partial(
                    queries.select_records, self._pool, self._s, which, after, batch_size
                ),
            )
            if not batch:
                return
            after = batch[-1].key
            yield batch

    async def retire(self, which: RecordFilter, reason: str) -> int:
        if self._read_only:
            return 0
        return await self._link.call(
            "retiring records",
            lambda: queries.retire(self._pool, self._s, which, reason, self.run_id, now_iso()),
        )

    async def runs(self, limit: int) -> list[RunInfo]:
        if self._empty:
            return []
        return await self._link.call(
            "reading the runs", lambda: queries.runs(self._pool, self._s, limit)
        )

    async def holder(self) -> str | None:
        """The workers whose lease is live, e.g. ``workers alive: run-1@host-a, run-2@host-b``."""
        if self._empty:
            return None
        alive = await self._link.call(
            "reading the runs", lambda: queries.alive(self._pool, self._s)
        )
        return f"workers alive: {', '.join(alive)}" if alive else None

    async def counts(self) -> dict[str, int]:
        if self._empty:
            return {}
        rows = await self._link.call(
            "counting records",
            lambda: self._pool.fetch(
                f"SELECT state, count(*) AS n FROM {self._s}.records GROUP BY state"
            ),
        )
        return {r["state"]: r["n"] for r in rows}
