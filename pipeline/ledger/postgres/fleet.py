"""The shared ledger's fleet view (:mod:`pipeline.ledger.fleet`): who each run is, its counts
as of its last heartbeat, and the ``stop`` request its heartbeat reads."""

from __future__ import annotations

import json
from typing import Any

from pipeline.ledger.base import parse_summary
from pipeline.ledger.fleet import FleetRun, FleetView, Identity
from pipeline.ledger.postgres.link import LedgerParts
from pipeline.ledger.postgres.reads import NOW

#: A run's row as JSON: a ledger of an older schema version (``status`` never migrates) has no
#: fleet columns, and reads as having none of their values.
_RUNS = """SELECT to_jsonb(o) AS run, {now} AS now FROM {s}.runs o
WHERE $1::text IS NULL OR to_jsonb(o)->>'job' = $1 ORDER BY o.seq DESC LIMIT $2"""

_OPEN = """SELECT run_id, count(*) AS n FROM {s}.records
WHERE state IN ('in_flight', 'unknown') AND run_id = ANY($1::text[]) GROUP BY run_id"""

#: By state; ``failed_unsent``: failed rows never sent (attempts 0: found not stored by
#: reconciliation, or released at a stop), which a worker or ``replay`` sends again.
_COUNTS = """SELECT r.state, count(*) AS n,
    count(*) FILTER (WHERE r.state = 'failed' AND r.attempts = 0) AS unsent FROM {s}.records r
WHERE $1::text IS NULL
   OR r.run_id IN (SELECT run_id FROM {s}.runs o WHERE to_jsonb(o)->>'job' = $1)
GROUP BY r.state"""

#: A heartbeat's counts; the last-progress time moves only when a record settled since.
_BEAT = """UPDATE {s}.runs SET progress = $2,
    last_progress = CASE WHEN $3 OR last_progress IS NULL THEN {now} ELSE last_progress END
WHERE run_id = $1 RETURNING stop_requested"""

#: Only runs still alive (an unexpired lease) are asked: a dead one cannot hear it.
_STOP = """UPDATE {s}.runs o SET stop_requested = $1
WHERE finished_at IS NULL AND lease_until >= {now} AND ($2::text IS NULL OR job = $2)
RETURNING to_jsonb(o) AS run, {now} AS now"""


class PostgresFleet(LedgerParts):
    """The fleet side of :class:`pipeline.ledger.postgres.ledger.PostgresLedger`."""

    async def introduce(self, who: Identity) -> None:
        if self._read_only:
            return
        await self._link.call(
            "recording the run",
            lambda: self._pool.execute(
                f"UPDATE {self._s}.runs SET pid = $2, consumer = $3, job = $4, source = $5 "
                "WHERE run_id = $1",
                self.run_id,
                who.pid,
                who.consumer,
                who.job,
                who.source,
            ),
        )

    async def beat(self, progress: dict[str, int], settled: bool) -> str | None:
        if self._read_only:
            return None
        query = _BEAT.format(s=self._s, now=NOW)
        stop: str | None = await self._link.call(
            "writing the run's progress",
            lambda: self._pool.fetchval(query, self.run_id, json.dumps(progress), settled),
        )
        return stop

    async def request_stop(self, reason: str, job: str | None) -> list[FleetRun]:
        if self._empty:
            return []
        query = _STOP.format(s=self._s, now=NOW)
        rows = await self._link.call(
            "asking the runs to stop", lambda: self._pool.fetch(query, reason, job)
        )
        return [_run(json.loads(r["run"]), {}) for r in rows]

    async def fleet(self, job: str | None, limit: int) -> FleetView:
        if self._empty:
            return FleetView(now=0.0, runs=[])
        s = self._s

        async def read() -> FleetView:
            async with self._pool.acquire() as conn, conn.transaction(readonly=True):
                rows = await conn.fetch(_RUNS.format(s=s, now=NOW), job, limit)
                runs = [json.loads(r["run"]) for r in rows]
                ids = [run["run_id"] for run in runs]
                open_ = {r["run_id"]: r["n"] for r in await conn.fetch(_OPEN.format(s=s), ids)}
                tally = await conn.fetch(_COUNTS.format(s=s), job)
                counts = {r["state"]: r["n"] for r in tally}
                unsent = sum(r["unsent"] for r in tally)
                now = rows[0]["now"] if rows else await conn.fetchval(f"SELECT {NOW}")
            return FleetView(float(now), [_run(run, open_) for run in runs], counts, unsent)

        return await self._link.call("reading the fleet", read)


def _run(row: dict[str, Any], open_: dict[str, int]) -> FleetRun:
    summary = parse_summary(row.get("summary"))
    counts = summary if summary is not None else parse_summary(row.get("progress")) or {}
    return FleetRun(
        run_id=row["run_id"],
        command=row["command"],
        host=row.get("host"),
        pid=row.get("pid"),
        consumer=row.get("consumer"),
        job=row.get("job"),
        source=row.get("source"),
        started_at=row["started_at"],
        finished_at=row.get("finished_at"),
        last_seen=row.get("last_seen"),
        last_progress=row.get("last_progress"),
        lease_until=row.get("lease_until"),
        stop_requested=row.get("stop_requested"),
        counts=counts,
        summary=summary,
        open_records=open_.get(row["run_id"], 0),
    )
