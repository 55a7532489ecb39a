"""A schema-version-2 ledger, written as the program of that version wrote it.

The statements are frozen copies of that version's ``schema.py`` and ``sqlite_store.py`` (the
tables, and the rows of a claim, an outcome, a rejection and a run), so that the migration to
later versions is tested against real old files, not against what today's code would write.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

_V1 = """
CREATE TABLE records (
    key TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    assistant_id TEXT,
    body TEXT,
    location TEXT,
    run_id TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    http_status INTEGER,
    feedback_id TEXT,
    error_code INTEGER,
    error_message TEXT,
    updated_at TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX records_state ON records(state);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    command TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    summary TEXT
);
"""
_V2 = "ALTER TABLE runs ADD COLUMN last_seen REAL;"

_CLAIM = """
INSERT INTO records (key, state, assistant_id, body, location, run_id, attempts, updated_at)
VALUES (?, 'in_flight', ?, ?, ?, ?, 0, ?)
"""
_INVALID = """
INSERT INTO records (key, state, location, run_id, error_message, updated_at)
VALUES (?, 'invalid', ?, ?, ?, ?)
"""
_OUTCOME = """
UPDATE records SET state = ?, attempts = ?, http_status = ?, feedback_id = ?, error_code = ?,
    error_message = ?, body = CASE WHEN ? = 'sent' THEN NULL ELSE body END, updated_at = ?
WHERE key = ?
"""
NOW = "2026-01-01T00:00:00+00:00"


def build_v2_ledger(
    path: Path,
    *,
    failed: list[tuple[str, str, str, int]],
    invalid: list[tuple[str, str, str]],
    version: int = 2,
) -> None:
    """``failed``: (key, assistant, body JSON, http status); ``invalid``: (key, location,
    reason). One finished run ``old`` wrote them all. ``version=1``: as version 1 wrote it
    (no heartbeat column)."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        steps = _V1 if version == 1 else f"{_V1} {_V2}"
        db.executescript(f"BEGIN; {steps} PRAGMA user_version = {version}; COMMIT;")
        db.execute(
            "INSERT INTO runs (run_id, command, started_at, finished_at, summary) "
            "VALUES ('old', 'run', ?, ?, '{\"exit_code\": 1, \"failed\": 1}')",
            (NOW, NOW),
        )
        for n, (key, assistant, body, status) in enumerate(failed):
            db.execute(_CLAIM, (key, assistant, body, f"old.csv:{n + 2}", "old", NOW))
            db.execute(_OUTCOME, ("failed", 1, status, None, 20001, "bad", "failed", NOW, key))
        for key, location, reason in invalid:
            db.execute(_INVALID, (key, location, "old", reason, NOW))
    finally:
        db.close()
