"""The ledger's SQLite schema and its migrations, applied in order inside one transaction."""

from __future__ import annotations

import sqlite3
from typing import Literal

from pipeline.errors import LedgerError

SCHEMA_VERSION = 3

# A rowid table (ledgers made before this change are WITHOUT ROWID: the same SQL, the same
# answers). Keys are hashes, so rows kept in key order put each record of a batch on a page
# of its own: every outcome commit rewrote about one table page and one state-index page per
# record. In rowid order the records claimed together share pages (and the state index,
# ordered by (state, rowid), too); only the key index is written at random, once, at the
# claim. Claim + record(sent) costs half the CPU this way (bench.ledger_cost).
_V1 = """
CREATE TABLE records (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    assistant_id TEXT,
    body TEXT,              -- the validated request; kept until the record is sent
    location TEXT,          -- file:line it was last read from
    run_id TEXT NOT NULL,   -- the run that last changed the row
    attempts INTEGER NOT NULL DEFAULT 0,
    http_status INTEGER,
    feedback_id TEXT,
    error_code INTEGER,
    error_message TEXT,
    updated_at TEXT NOT NULL
);
CREATE INDEX records_state ON records(state);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    summary TEXT
);
"""

#: Version -> the statements that bring the previous version to it.
MIGRATIONS: dict[int, str] = {
    1: _V1,
    # 2: runs record when they were last alive, so that the records a dead run left
    # in flight are reconciled only once any request it sent must have been answered.
    2: "ALTER TABLE runs ADD COLUMN last_seen REAL;",
    # 3: what a person needs to fix a record (``failures``): an invalid record's source
    # fields (JSON); and ``retire``: the state a retired record had, and why it was retired.
    3: (
        "ALTER TABLE records ADD COLUMN fields TEXT; "
        "ALTER TABLE records ADD COLUMN retired_from TEXT; "
        "ALTER TABLE records ADD COLUMN retired_reason TEXT;"
    ),
}

#: Columns added after version 1, by table: an older ledger opened read-only (``status``,
#: ``failures``, dry runs never migrate) reads them as NULL.
LATER_COLUMNS = ("fields", "retired_from", "retired_reason")


def migrate(db: sqlite3.Connection, *, read_only: bool) -> Literal["ok", "empty-read-only"]:
    version = db.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise LedgerError(
            f"ledger schema version {version} is newer than this program's "
            f"({SCHEMA_VERSION}); upgrade feedback-pipeline"
        )
    if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
        raise LedgerError("the file is an SQLite database but not a feedback-pipeline ledger")
    if version == SCHEMA_VERSION:
        return "ok"
    if read_only:
        # Older ledgers read fine; only a writer migrates them.
        return "empty-read-only" if version == 0 else "ok"
    steps = " ".join(MIGRATIONS[v] for v in range(version + 1, SCHEMA_VERSION + 1))
    db.executescript(f"BEGIN; {steps} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;")
    return "ok"
