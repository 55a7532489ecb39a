"""The PostgreSQL ledger's URL, schema and migrations.

``postgresql://USER@HOST:PORT/DB[?schema=NAME][&lease=SECONDS]``: ``schema`` (default
``public``) holds the tables, so several ledgers can share one database; ``lease`` (default
:data:`LEASE_S`) is how long a run's claims stay its own after its last heartbeat.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg

from pipeline.errors import ConfigError, LedgerError
from pipeline.urls import mask_url

SCHEMA_VERSION = 3

#: A run's claims are its own this long after its last heartbeat (every second): long enough
#: for a busy event loop or a GC pause, short enough that a dead worker's records are
#: reconciled soon.
LEASE_S = 15.0

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

_V1 = """
CREATE TABLE {s}.records (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    assistant_id TEXT,
    body TEXT,
    location TEXT,
    run_id TEXT NOT NULL,          -- the owner: the run that last claimed or changed the row
    attempts INTEGER NOT NULL DEFAULT 0,
    http_status INTEGER,
    feedback_id TEXT,
    error_code INTEGER,
    error_message TEXT,
    fields TEXT,
    retired_from TEXT,
    retired_reason TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX records_state ON {s}.records (state, key);
-- what reconciliation looks for: the records a (dead) owner left uncertain
CREATE INDEX records_open ON {s}.records (run_id) WHERE state IN ('in_flight', 'unknown');
CREATE INDEX records_feedback ON {s}.records (feedback_id) WHERE feedback_id IS NOT NULL;
CREATE TABLE {s}.runs (
    seq BIGSERIAL,
    run_id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    host TEXT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    summary TEXT,
    last_seen DOUBLE PRECISION,    -- the database's clock: hosts' clocks may disagree
    lease_until DOUBLE PRECISION   -- NULL once the run ended
);
"""

#: Fencing: every claim gets a new token (``fence``) from one sequence, and an outcome is
#: written only over the claim it belongs to; a run records how long one of its requests may
#: take (``request_bound``: its --timeout), which reconciliation waits out after its lease.
_V2 = """
CREATE SEQUENCE {s}.fences;
ALTER TABLE {s}.records ADD COLUMN fence BIGINT NOT NULL DEFAULT 0;
ALTER TABLE {s}.runs ADD COLUMN request_bound DOUBLE PRECISION;
"""

#: The fleet view (``status``, ``stop``): who each run is (its process, its queue consumer,
#: its job), what it has done so far (its counts as of its last heartbeat, so a killed run's
#: are not lost with it), when a record of it last settled (a stuck worker from a slow one),
#: and a request to stop that its heartbeat reads (``stop``).
_V3 = """
ALTER TABLE {s}.runs ADD COLUMN pid INTEGER;
ALTER TABLE {s}.runs ADD COLUMN consumer TEXT;
ALTER TABLE {s}.runs ADD COLUMN job TEXT;
ALTER TABLE {s}.runs ADD COLUMN source TEXT;
ALTER TABLE {s}.runs ADD COLUMN progress TEXT;
ALTER TABLE {s}.runs ADD COLUMN last_progress DOUBLE PRECISION;
ALTER TABLE {s}.runs ADD COLUMN stop_requested TEXT;
CREATE INDEX runs_job ON {s}.runs (job) WHERE job IS NOT NULL;
"""

#: Version -> the statements that bring the previous version to it ({s}: the schema).
MIGRATIONS: dict[int, str] = {1: _V1, 2: _V2, 3: _V3}


@dataclass(frozen=True, slots=True)
class Target:
    dsn: str  # the URL without our own parameters, for asyncpg
    schema: str
    lease: float
    shown: str  # the URL with its password masked, for messages


def parse(url: str) -> Target:
    parts = urlsplit(url)
    params = dict(parse_qsl(parts.query))
    schema = params.pop("schema", "public")
    shown = mask_url(url)
    if not _NAME.match(schema):
        raise ConfigError(
            f"configuration error: --ledger: {shown}: schema must be a lower-case SQL name"
        )
    try:
        lease = float(params.pop("lease", LEASE_S))
    except ValueError:
        lease = -1.0
    if not 2.0 <= lease <= 3600.0:
        raise ConfigError(
            f"configuration error: --ledger: {shown}: lease must be 2 to 3600 seconds"
        )
    dsn = urlunsplit(parts._replace(scheme="postgresql", query=urlencode(params)))
    return Target(dsn, schema, lease, shown)


async def migrate(conn: asyncpg.Connection, schema: str) -> None:
    """Create or upgrade the ledger's tables; many workers may start at once (advisory lock)."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext($1))", f"ledger:{schema}")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {schema}")
        await conn.execute(f"CREATE TABLE IF NOT EXISTS {schema}.ledger_version (version INT)")
        version = await conn.fetchval(f"SELECT max(version) FROM {schema}.ledger_version") or 0
        if version > SCHEMA_VERSION:
            raise LedgerError(
                f"ledger schema version {version} is newer than this program's "
                f"({SCHEMA_VERSION}); upgrade feedback-pipeline"
            )
        for step in range(version + 1, SCHEMA_VERSION + 1):
            await conn.execute(MIGRATIONS[step].format(s=schema))
        if version < SCHEMA_VERSION:
            await conn.execute(f"DELETE FROM {schema}.ledger_version")
            await conn.execute(f"INSERT INTO {schema}.ledger_version VALUES ($1)", SCHEMA_VERSION)


async def exists(conn: asyncpg.Connection, schema: str) -> bool:
    """Whether the ledger's tables are there (a reader never creates them)."""
    found = await conn.fetchval("SELECT to_regclass($1)", f"{schema}.ledger_version")
    return found is not None
