"""The machine's PostgreSQL for tests: each test gets a schema of its own, dropped after.

Outside CI a missing server skips its tests; with ``CI=true`` it fails them (redis_helpers.py).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from redis_helpers import unavailable

PG_URL = os.environ.get(
    "FEEDBACK_PIPELINE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres"
)


class PgSchema:
    """A uniquely named schema; ``url()`` is the ledger URL that uses it."""

    def __init__(self) -> None:
        self.name = f"test_{uuid.uuid4().hex[:12]}"

    def url(self, **extra: str) -> str:
        query = "".join(f"&{k}={v}" for k, v in extra.items())
        return f"{PG_URL}?schema={self.name}{query}"

    async def fetch(self, sql: str, *args: object) -> list[asyncpg.Record]:
        conn = await asyncpg.connect(PG_URL)
        try:
            rows: list[asyncpg.Record] = await conn.fetch(sql.format(s=self.name), *args)
            return rows
        finally:
            await conn.close()


@pytest.fixture
async def pg_schema() -> AsyncIterator[PgSchema]:
    try:
        conn = await asyncpg.connect(PG_URL, timeout=5)
    except (OSError, asyncpg.PostgresError):
        unavailable(f"PostgreSQL at {PG_URL}")
        raise AssertionError("unreachable") from None
    schema = PgSchema()
    try:
        yield schema
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema.name} CASCADE")
        await conn.close()
