"""The statements a run writes per record, each with a form that takes a whole batch at once.

A batch goes in as one JSON array (``json_each``) where SQLite can read one: the statement is
then one step, all of it done without the GIL. Row by row (``executemany``), the ledger's
thread takes the GIL back from the event loop's thread at every row; with the loop busy
sending, each row waited for a forced switch, and a batch of 500 took seconds of wall time
and three times the CPU.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Write:
    rows: str  # one row per execution: ``?`` parameters
    batch: str  # every row at once: the rows as a JSON array of arrays, the one parameter


def _columns(names: str) -> str:
    """``json_extract(value, '$[i]') AS name`` for each name: one JSON row's fields."""
    return ", ".join(
        f"json_extract(value, '$[{i}]') AS {name.strip()}"
        for i, name in enumerate(names.split(","))
    )


# Claiming a record: in flight now, whatever an earlier run left (the decision was made).
_CLAIM_INTO = (
    "INSERT INTO records (key, state, assistant_id, body, location, run_id, attempts, updated_at)"
)
_CLAIM_SET = """
ON CONFLICT (key) DO UPDATE SET
    state = 'in_flight', assistant_id = excluded.assistant_id, body = excluded.body,
    location = excluded.location, run_id = excluded.run_id, attempts = 0,
    http_status = NULL, feedback_id = NULL, error_code = NULL, error_message = NULL,
    fields = NULL, retired_from = NULL, retired_reason = NULL, updated_at = excluded.updated_at
"""
_CLAIMED = "key, assistant_id, body, location, run_id, at"
#: Rows of (key, assistant_id, body, location, run_id, updated_at).
CLAIM = Write(
    f"{_CLAIM_INTO} VALUES (?, 'in_flight', ?, ?, ?, ?, 0, ?) {_CLAIM_SET}",
    # "WHERE true": an upsert's SELECT needs a WHERE, or its ON would be read as a join's.
    f"{_CLAIM_INTO} SELECT key, 'in_flight', assistant_id, body, location, run_id, 0, at "
    f"FROM (SELECT {_columns(_CLAIMED)} FROM json_each(?)) WHERE true {_CLAIM_SET}",
)

# The body is dropped once the API holds the record: it is only needed to send it again.
_OUTCOMES = "state, attempts, http_status, feedback_id, error_code, error_message, _, at, key"
#: Rows of (state, attempts, http_status, feedback_id, error_code, error_message, state again,
#: updated_at, key).
OUTCOME = Write(
    """
UPDATE records SET state = ?, attempts = ?, http_status = ?, feedback_id = ?, error_code = ?,
    error_message = ?, body = CASE WHEN ? = 'sent' THEN NULL ELSE body END, updated_at = ?
WHERE key = ?
""",
    f"""
UPDATE records SET state = o.state, attempts = o.attempts, http_status = o.http_status,
    feedback_id = o.feedback_id, error_code = o.error_code, error_message = o.error_message,
    body = CASE WHEN o.state = 'sent' THEN NULL ELSE records.body END, updated_at = o.at
FROM (SELECT {_columns(_OUTCOMES)} FROM json_each(?)) AS o
WHERE records.key = o.key
""",
)


def batch_writes(json_ok: bool) -> bool:
    """Whether this SQLite takes the batch forms: JSON, and ``UPDATE ... FROM`` (3.33)."""
    return json_ok and sqlite3.sqlite_version_info >= (3, 33, 0)


def write(db: sqlite3.Connection, batch: bool, statement: Write, rows: Sequence[object]) -> None:
    """``statement`` for every row: in one step where ``batch``, else row by row."""
    if not rows:
        return
    if batch:
        # Not ASCII-escaped: a lone surrogate fails here as it would when bound as text.
        text = json.dumps(rows, ensure_ascii=False)
        # SQLite's JSON ends a string at an escaped NUL (an API's error text may hold one).
        if "\\u0000" not in text:
            db.execute(statement.batch, (text,))
            return
    db.executemany(statement.rows, rows)  # type: ignore[arg-type]


#: A rejection recorded: invalid, with its reason and its fields (for `failures`).
INVALID = """
INSERT INTO records (key, state, location, run_id, error_message, fields, updated_at)
VALUES (?, 'invalid', ?, ?, ?, ?, ?)
ON CONFLICT (key) DO UPDATE SET
    state = 'invalid', location = excluded.location, run_id = excluded.run_id,
    error_message = excluded.error_message, fields = excluded.fields,
    retired_from = NULL, retired_reason = NULL, updated_at = excluded.updated_at
"""


def fields_json(fields: dict[str, object]) -> str:
    # ASCII escapes: a lone surrogate (an undecodable byte) cannot be stored as UTF-8 text.
    return json.dumps(fields, ensure_ascii=True, default=str)
