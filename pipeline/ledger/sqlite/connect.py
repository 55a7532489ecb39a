"""Opening the ledger's SQLite file: a writer's connection, a reader's, and what errors mean."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from pipeline.errors import ConfigError, LedgerError, PipelineError


def connect(path: str, *, read_only: bool) -> sqlite3.Connection:
    """The connection the store works through; a writer's file is already locked (lock.py)."""
    target = Path(path)
    try:
        if read_only:
            # A dry run (and ``status``) reads an existing ledger and never writes; with
            # no ledger it works on an empty in-memory one so nothing is created on disk.
            if not target.exists():
                return sqlite3.connect(":memory:", isolation_level=None)
            return _read_only(target)
        # Always a file URI of the resolved path: SQLite never reads the name as one of
        # its special names (":memory:", "" for a temporary database).
        uri = target.resolve().as_uri()
        db = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            # FULL: a claim is on disk before its request leaves, even across a power cut.
            db.execute("PRAGMA synchronous = FULL")
        except BaseException:
            db.close()
            raise
        return db
    except sqlite3.Error as exc:
        raise ledger_error(path, exc) from exc


def _read_only(path: Path) -> sqlite3.Connection:
    """Open an existing ledger without writing anything, even where nothing can be written.

    ``mode=ro`` reads the -wal file too, but needs the -shm file to exist or be creatable. A
    cleanly closed ledger has neither file, and on a read-only mount or another user's file
    SQLite cannot create them ("attempt to write a readonly database"). Then ``immutable=1``
    is exact: with no -wal file, the database file holds every committed write, and no
    writer is running (a WAL writer always has its -wal file). With a -wal file left behind
    (a killed run) that cannot be read, refuse rather than count stale data.
    """
    uri = path.resolve().as_uri()
    db = sqlite3.connect(f"{uri}?mode=ro", uri=True, isolation_level=None)
    try:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return db
    except sqlite3.OperationalError:
        db.close()
        wal = path.with_name(path.name + "-wal")
        if wal.exists() and wal.stat().st_size > 0:
            raise
    return sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None)


def ledger_error(path: str, exc: sqlite3.Error) -> PipelineError:
    """A read-only ledger is a setting to fix (exit 2); anything else makes it unusable."""
    if isinstance(exc, sqlite3.OperationalError) and "readonly" in str(exc):
        return ConfigError(
            f"configuration error: --ledger: {path} is read-only ({exc}); a run writes every "
            "outcome there (status can still read it)"
        )
    return LedgerError(f"ledger {path}: {exc}")
