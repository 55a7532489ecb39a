"""``python -m bench.ledger_cost [N] [POSTGRES_URL]``: what the ledger costs per record.

Claims N records in batches of 500 and records an outcome for each (``sent``), the way a
run does, on an SQLite file and on a PostgreSQL schema (created here, dropped after); prints
the microseconds per record for claim + record, and the PostgreSQL ledger's size on disk
(``pg_total_relation_size`` of its tables and indexes), scaled to a million records.
"""

from __future__ import annotations

import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from pipeline.ledger import open_ledger
from pipeline.models import Accepted, FeedbackRecord, Outcome, Status

BATCH = 500


def _records(n: int) -> list[Accepted]:
    return [
        Accepted.of(
            f"bench.csv:{i + 2}",
            FeedbackRecord(
                assistant_id="aia_asst_bench",
                session_id=f"session-{i}",
                message_id=f"aia_msg_{i}",
                score=(i % 11) / 10,
                text=f"answer {i} was fine",
            ),
        )
        for i in range(n)
    ]


async def _cost(url: str, records: list[Accepted]) -> float:
    """Seconds per record for claim + record (a run's ledger writes), batch by batch."""
    ledger = await open_ledger(url, f"bench-{uuid.uuid4().hex[:8]}", command="run")
    try:
        started = time.perf_counter()
        for i in range(0, len(records), BATCH):
            batch = records[i : i + BATCH]
            await ledger.claim(batch)
            await ledger.record(
                [Outcome(a.key, Status.SENT, 1, 201, f"aia_fdbk_{a.key[:32]}") for a in batch]
            )
        return (time.perf_counter() - started) / len(records)
    finally:
        await ledger.close()


async def _pg_size(server: str, schema: str) -> int:
    conn = await asyncpg.connect(server)
    try:
        size = await conn.fetchval(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = $1 AND c.relkind = 'r'",
            schema,
        )
        return int(size or 0)
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


async def main(n: int, server: str) -> None:
    records = _records(n)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = await _cost(str(Path(tmp) / "ledger.sqlite3"), records)
        sqlite_size = (Path(tmp) / "ledger.sqlite3").stat().st_size
    schema = f"bench_{uuid.uuid4().hex[:10]}"
    try:
        postgres = await _cost(f"{server}?schema={schema}", records)
    finally:
        size = await _pg_size(server, schema)
    per_million = 1_000_000 / n
    print(f"records: {n}, batches of {BATCH}, claim + record(sent) each")
    print(f"  SQLite:     {sqlite * 1e6:7.1f} us/record  ({1 / sqlite:8.0f} records/s), "
          f"file {sqlite_size * per_million / 2**20:.0f} MiB per million")  # fmt: skip
    print(f"  PostgreSQL: {postgres * 1e6:7.1f} us/record  ({1 / postgres:8.0f} records/s), "
          f"tables+indexes {size * per_million / 2**20:.0f} MiB per million")  # fmt: skip


if __name__ == "__main__":
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    url = sys.argv[2] if len(sys.argv) > 2 else "postgresql://postgres@127.0.0.1:5432/postgres"
    asyncio.run(main(count, url))
