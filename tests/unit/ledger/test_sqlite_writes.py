"""The per-record writes in one step (a JSON array through ``json_each``) leave exactly the rows
that the same writes row by row leave: claims over earlier states, every outcome state, odd
text. Two real SQLite files, compared column by column."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ledger.sqlite import writes as sqlite_writes
from pipeline.ledger.sqlite.schema import migrate
from pipeline.ledger.sqlite.writes import CLAIM, OUTCOME

_TEXT = st.text(
    st.characters(exclude_categories=["Cs"]),  # a lone surrogate is no UTF-8 text
    max_size=30,
)
_CLAIMS = st.lists(
    st.tuples(
        st.sampled_from([f"k{i}" for i in range(12)]),
        _TEXT,  # assistant id
        _TEXT,  # body
        st.none() | _TEXT,  # location
        st.sampled_from(["run-a", "run-b"]),
        _TEXT,  # updated_at
    ),
    max_size=12,
    unique_by=lambda row: row[0],
)
_OUTCOMES = st.lists(
    st.tuples(
        st.sampled_from(["sent", "failed", "unknown"]),
        st.integers(0, 2**40),
        st.none() | st.integers(100, 599),
        st.none() | _TEXT,
        st.none() | st.integers(-(2**62), 2**62),
        st.none() | _TEXT,
        _TEXT,
        st.sampled_from([f"k{i}" for i in range(14)]),  # some never claimed: no row
    ),
    max_size=12,
    unique_by=lambda row: row[-1],
)


def _ledger(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None)
    migrate(db, read_only=False)
    # An earlier run's states, which a claim overwrites.
    db.execute(
        "INSERT INTO records (key, state, run_id, attempts, http_status, error_message, "
        "fields, updated_at) VALUES ('k1', 'failed', 'run-0', 3, 503, 'busy', '{}', 'then')"
    )
    return db


def _rows(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
    return db.execute("SELECT * FROM records ORDER BY key").fetchall()


@settings(max_examples=60, deadline=None)
@given(claims=_CLAIMS, outcomes=_OUTCOMES)
def test_one_step_writes_what_row_by_row_writes(
    tmp_path_factory: Any, claims: list[tuple[object, ...]], outcomes: list[Any]
) -> None:
    tmp = tmp_path_factory.mktemp("writes")
    batch, rows = _ledger(tmp / "batch.sqlite3"), _ledger(tmp / "rows.sqlite3")
    assert sqlite_writes.batch_writes(True)  # this SQLite has both forms
    # The outcome rows carry the state twice (the body is dropped on "sent").
    outcome_rows = [(*o[:6], o[0], o[6], o[7]) for o in outcomes]
    for db, one_step in ((batch, True), (rows, False)):
        sqlite_writes.write(db, one_step, CLAIM, claims)
        sqlite_writes.write(db, one_step, OUTCOME, outcome_rows)
    assert _rows(batch) == _rows(rows)
    assert len(_rows(batch)) == len({c[0] for c in claims} | {"k1"})
    batch.close()
    rows.close()
