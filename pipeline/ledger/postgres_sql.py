"""The PostgreSQL ledger's writing statements ({s}: the schema, {now}: the database's clock).

Each takes whole batches as arrays (``unnest``): one round trip per batch, whatever its size.
"""

from __future__ import annotations

#: Take a record only if it is new, or failed/retired by another run, or one this run took
#: for replay (``TAKE_FAILED``). PostgreSQL locks a conflicting row and re-checks the WHERE on
#: its newest version, so of two runs claiming one key at once exactly one gets it back.
CLAIM = """
INSERT INTO {s}.records AS r (key, state, assistant_id, body, location, run_id, attempts,
    updated_at)
SELECT k, 'in_flight', a, b, l, $5, 0, $6
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(k, a, b, l) ORDER BY k
ON CONFLICT (key) DO UPDATE SET
    state = 'in_flight', assistant_id = excluded.assistant_id, body = excluded.body,
    location = excluded.location, run_id = excluded.run_id, attempts = 0,
    http_status = NULL, feedback_id = NULL, error_code = NULL, error_message = NULL,
    fields = NULL, retired_from = NULL, retired_reason = NULL, updated_at = excluded.updated_at
WHERE (r.state IN ('failed', 'retired') AND r.run_id <> excluded.run_id)
   OR (r.key = ANY($7::text[]) AND r.run_id = excluded.run_id AND r.state = 'in_flight')
RETURNING r.key
"""

INVALID = """
INSERT INTO {s}.records AS r (key, state, location, run_id, error_message, fields, updated_at)
SELECT k, 'invalid', l, $5, e, f, $6
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(k, l, e, f)
ON CONFLICT (key) DO UPDATE SET
    state = 'invalid', location = excluded.location, run_id = excluded.run_id,
    error_message = excluded.error_message, fields = excluded.fields,
    retired_from = NULL, retired_reason = NULL, updated_at = excluded.updated_at
"""

_SET_OUTCOMES = """
UPDATE {s}.records AS r SET state = u.state, attempts = u.attempts,
    http_status = u.http, feedback_id = u.fid, error_code = u.code, error_message = u.msg,
    body = CASE WHEN u.state = 'sent' THEN NULL ELSE r.body END, updated_at = $8
FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::text[], $6::int[], $7::text[])
    AS u(key, state, attempts, http, fid, code, msg)
WHERE r.key = u.key"""
_LEASE_EXPIRED = (
    "NOT EXISTS (SELECT 1 FROM {s}.runs o WHERE o.run_id = r.run_id AND o.lease_until >= {now})"
)

#: Only the owner writes an outcome, or anyone once the owner's lease expired
#: (reconciliation): a worker that lost its lease never overwrites a new owner's row.
OUTCOMES = f"{_SET_OUTCOMES} AND (r.run_id = $9 OR {_LEASE_EXPIRED})"

#: Reconciliation's outcomes ($10: this run's own unknowns, else other runs' leftovers), only
#: for rows still as LEFTOVERS (or the own unknowns) selected them: between that read and this
#: write, another worker may have settled a row (its judgment stands: ours could be wrong, as
#: the feedback id it found is now taken) or a worker, this one too, claimed it again.
SETTLE = f"""{_SET_OUTCOMES} AND CASE WHEN $10 THEN r.state = 'unknown' AND r.run_id = $9
    ELSE r.state IN ('in_flight', 'unknown') AND r.run_id <> $9 AND {_LEASE_EXPIRED} END
RETURNING r.key"""

#: Failed records become this run's in_flight, a batch at a time; rows another replay is
#: taking right now are skipped, not waited for ({retryable}: the filter, or nothing).
TAKE_FAILED = """
UPDATE {s}.records AS r SET state = 'in_flight', run_id = $1
FROM (SELECT key FROM {s}.records WHERE state = 'failed' AND run_id <> $1 {retryable}
      ORDER BY key LIMIT $2 FOR UPDATE SKIP LOCKED) AS f
WHERE r.key = f.key
RETURNING r.key, r.assistant_id, r.body, r.location
"""

#: What reconciliation may settle: records of owners whose lease expired (or ended).
LEFTOVERS = """
SELECT r.key, r.assistant_id, r.body, r.location, r.run_id FROM {s}.records r
LEFT JOIN {s}.runs o ON o.run_id = r.run_id
WHERE r.state IN ('in_flight', 'unknown') AND r.run_id <> $1
  AND coalesce(o.lease_until, 0) < {now}"""

#: A row that was invalid once and is fixed now: its location-keyed row goes.
DROP_FIXED = """DELETE FROM {s}.records WHERE key = ANY($1::text[])
AND state IN ('invalid', 'retired')"""
