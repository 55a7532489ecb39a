"""The PostgreSQL ledger's writing statements ({s}: the schema, {now}: the database's clock).

Each takes whole batches as arrays (``unnest``): one round trip per batch, whatever its size.
"""

from __future__ import annotations

#: Take a record only if it is new, or failed/retired by another run, or one this run took
#: for replay (``TAKE_FAILED``). PostgreSQL locks a conflicting row and re-checks the WHERE on
#: its newest version, so of two runs claiming one key at once exactly one gets it back. Each
#: claim gets a new fencing token (``fence``): the outcome of this claim is written only over
#: it (OUTCOMES).
CLAIM = """
INSERT INTO {s}.records AS r (key, state, assistant_id, body, location, run_id, attempts,
    updated_at, fence)
SELECT k, 'in_flight', a, b, l, $5, 0, $6, nextval('{s}.fences')
FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) AS t(k, a, b, l) ORDER BY k
ON CONFLICT (key) DO UPDATE SET
    state = 'in_flight', assistant_id = excluded.assistant_id, body = excluded.body,
    location = excluded.location, run_id = excluded.run_id, attempts = 0,
    fence = excluded.fence,
    http_status = NULL, feedback_id = NULL, error_code = NULL, error_message = NULL,
    fields = NULL, retired_from = NULL, retired_reason = NULL, updated_at = excluded.updated_at
WHERE (r.run_id <> excluded.run_id
       AND (r.state = 'retired' OR (r.state = 'failed' AND r.body IS NOT NULL)))
   OR (r.key = ANY($7::text[]) AND r.run_id = excluded.run_id AND r.state = 'in_flight')
RETURNING r.key, r.fence
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
    body = CASE WHEN u.state = 'sent' THEN NULL ELSE r.body END, updated_at = $8{fence}
FROM unnest($1::text[], $2::text[], $3::int[], $4::int[], $5::text[], $6::int[], $7::text[],
            $10::bigint[]) AS u(key, state, attempts, http, fid, code, msg, fence)
WHERE r.key = u.key"""

#: A delivery outcome is written only over the claim it belongs to: this run's, with the
#: token the claim returned, still in flight. A record another run reconciled or claimed
#: since (this run's lease ran out) keeps its state, whatever this run says; the keys written
#: come back, so the run counts what was refused.
OUTCOMES = (
    _SET_OUTCOMES.replace("{fence}", "")
    + """ AND r.run_id = $9 AND r.fence = u.fence AND r.state = 'in_flight'
RETURNING r.key"""
)

_LEASE_EXPIRED = (
    "NOT EXISTS (SELECT 1 FROM {s}.runs o WHERE o.run_id = r.run_id AND o.lease_until >= {now})"
)

#: Reconciliation's outcomes ($11: this run's own unknowns, else other runs' leftovers), only
#: for rows still as LEFTOVERS (or the own unknowns) selected them, with the token read then
#: ($10; none for a row it did not read): between that read and this write, another worker
#: may have settled a row (its judgment stands: ours could be wrong, as the feedback id it
#: found is now taken) or a worker, this one too, claimed it again. A settled row gets a new
#: token, so a late outcome of the old claim changes nothing.
SETTLE = (
    _SET_OUTCOMES.replace("{fence}", ", fence = nextval('{s}.fences')")
    + f""" AND coalesce(r.fence = u.fence, true)
    AND CASE WHEN $11 THEN r.state = 'unknown' AND r.run_id = $9
    ELSE r.state IN ('in_flight', 'unknown') AND r.run_id <> $9 AND {_LEASE_EXPIRED} END
RETURNING r.key"""
)

#: Failed records become this run's in_flight, a batch at a time; rows another replay is
#: taking right now are skipped, not waited for ({retryable}: the filter, or nothing). A row
#: without its request body cannot be sent: replay says so and leaves it failed at its end.
TAKE_FAILED = """
UPDATE {s}.records AS r SET state = 'in_flight', run_id = $1
FROM (SELECT key FROM {s}.records WHERE state = 'failed' AND run_id <> $1 {retryable}
      ORDER BY key LIMIT $2 FOR UPDATE SKIP LOCKED) AS f
WHERE r.key = f.key
RETURNING r.key, r.assistant_id, r.body, r.location
"""

#: What reconciliation may settle: records of owners whose lease expired (or ended).
LEFTOVERS = """
SELECT r.key, r.assistant_id, r.body, r.location, r.run_id, r.fence FROM {s}.records r
LEFT JOIN {s}.runs o ON o.run_id = r.run_id
WHERE r.state IN ('in_flight', 'unknown') AND r.run_id <> $1
  AND coalesce(o.lease_until, 0) < {now}"""

#: Renew this run's lease, only while it holds: a lease that ran out is lost for good (others
#: may be settling this run's records); no row comes back then.
RENEW = """UPDATE {s}.runs SET last_seen = {now}, lease_until = {now} + $2
WHERE run_id = $1 AND lease_until >= {now} RETURNING run_id"""

#: Seconds from now until no request of these runs can still be on its way: a run that ended
#: (no lease), a heartbeat after its last seen; one with a lease, its end plus the run's
#: request time bound.
QUIET_IN = """SELECT greatest(0, max(CASE WHEN lease_until IS NULL
    THEN coalesce(last_seen, 0) + {heartbeat}
    ELSE lease_until + coalesce(request_bound, 0) END) - {now})
FROM {s}.runs WHERE run_id = ANY($1::text[])"""

#: A row that needs its request body and has none (an older version wrote an outcome over
#: another run's sent row): the record may be stored, so it is never claimed as failed; its
#: body comes back from the input that brings the record again, as ``unknown``, and
#: reconciliation settles it.
BODILESS = "(body IS NULL AND state IN ('failed', 'in_flight', 'unknown'))"
HEAL = """UPDATE {s}.records AS r SET body = t.b, assistant_id = t.a, state = 'unknown'
FROM unnest($1::text[], $2::text[], $3::text[]) AS t(k, a, b)
WHERE r.key = t.k AND r.body IS NULL AND r.state IN ('failed', 'in_flight', 'unknown')"""

#: A row that was invalid once and is fixed now: its location-keyed row goes.
DROP_FIXED = """DELETE FROM {s}.records WHERE key = ANY($1::text[])
AND state IN ('invalid', 'retired')"""
