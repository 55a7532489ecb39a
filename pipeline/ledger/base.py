"""The Ledger protocol: the durable memory of what happened to every record."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from pydantic import ValidationError

from pipeline.logs import event
from pipeline.models import Accepted, FeedbackRecord, Outcome, Rejection


class Decision(StrEnum):
    """What the ledger says to do with a record of the input."""

    SEND = "send"  # claimed: durably in_flight, the request may now go out
    SKIP = "skipped"  # already sent by an earlier run
    DUPLICATE = "duplicate"  # the same key came earlier in this run
    INVALID = "invalid"  # a rejection, recorded
    UNCERTAIN = "unknown"  # an earlier run may have sent it and reconciliation did not settle it


#: The record's own columns, in the order ``failures`` writes them (``run`` reads them back).
RECORD_COLUMNS = ("assistant_id", "session_id", "message_id", "score", "text", "key")
#: States a person can act on: export them, replay them, retire them.
OPEN_PROBLEMS = ("failed", "invalid", "unknown")


@dataclass(frozen=True, slots=True)
class RecordFilter:
    """Which ledger records a listing or a retire is about; all given conditions hold.

    ``retryable_only``: leave out ``failed`` records the API rejected for good (a 4xx other
    than 408 and 429): sending them again fails again until they are fixed.
    """

    states: tuple[str, ...]
    keys: tuple[str, ...] = ()
    location_prefix: str | None = None
    retryable_only: bool = False
    locations: tuple[str, ...] = ()  # exact locations (``file.csv:12``); at most 500


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """One ledger row as ``failures`` shows it: where it came from, what went wrong, and the
    record itself (the request ``body`` of a valid record, the source ``fields`` of an
    invalid one)."""

    key: str
    state: str
    location: str | None
    http_status: int | None
    error_code: int | None
    reason: str | None
    attempts: int
    assistant_id: str | None
    body: dict[str, Any] | None
    fields: dict[str, Any] | None
    updated_at: str
    retired_from: str | None = None
    retired_reason: str | None = None

    def columns(self) -> dict[str, Any]:
        """The record's own columns, as ``run`` reads them back (absent ones empty).

        A valid record keeps its idempotency key, so the fixed row replaces this one in the
        ledger; an invalid record's ledger key names its location, not the record, so only a
        ``key`` of its own source row is given."""
        if self.body is not None:
            values: dict[str, Any] = {**self.body, "assistant_id": self.assistant_id}
            values["key"] = self.key
        else:
            values = dict(self.fields or {})
            if self.state != "invalid":  # a row without its body: its key still names it
                values["key"] = self.key
        return {name: values.get(name) for name in RECORD_COLUMNS}


@dataclass(frozen=True, slots=True)
class RunInfo:
    """One run of the ledger's history; ``summary`` is the run's JSON summary (with its
    counts and exit code) once it ended, None while it runs or if it was killed."""

    run_id: str
    command: str
    started_at: str
    finished_at: str | None
    last_seen: float | None
    summary: dict[str, Any] | None


def parse_summary(text: str | None) -> dict[str, Any] | None:
    """A stored JSON object (a run's summary, a record's body or fields), or None when it is
    absent or not a JSON object."""
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def read_record(
    key: str, location: str | None, assistant_id: str | None, body: str | None
) -> Accepted | None:
    """A stored record as it can be sent again, or None when its row cannot give it back (no
    body: a row an older version wrote over; a body that is not a record). Such a row is
    skipped by replay and reconciliation, never a crash; ``failures`` shows it."""
    if not body or not assistant_id:
        return None
    try:
        fields = json.loads(body)
        if not isinstance(fields, dict):
            return None
        return Accepted(location, FeedbackRecord(assistant_id=assistant_id, **fields), key)
    except (ValueError, TypeError, ValidationError):
        return None


def readable(
    rows: Sequence[tuple[str, str | None, str | None, str | None]], what: str
) -> list[Accepted]:
    """The records of these (key, location, assistant id, body) rows that can be sent again;
    the others are skipped, and said so in one line (``what``: what they were read for)."""
    items = [read_record(*row) for row in rows]
    skipped = [row[0] for row, item in zip(rows, items, strict=True) if item is None]
    if skipped:
        event(
            logging.WARNING,
            f"notice: ledger: {len(skipped)} records cannot be {what}: their rows hold no "
            f"usable request body (e.g. key {skipped[0]}); `failures` lists them",
            "notice",
        )
    return [item for item in items if item is not None]


class Ledger(Protocol):
    async def claim(self, batch: Sequence[Accepted | Rejection]) -> list[Decision]:
        """Decide each item of ``batch`` (same order) and make the decision durable.

        Records to send are marked ``in_flight`` and committed before this returns, so a crash
        afterwards leaves an exact list of records whose request may have gone out.
        """
        ...

    async def sent_earlier(self, records: Sequence[tuple[str, str]]) -> set[str]:
        """The keys among these (key, location) records that an earlier run holds as sent.

        A rerun skips those records without validating them again. As a claim of them would,
        it drops the invalid row an earlier run left at one of their locations (the row was
        fixed since): one input record, one state."""
        ...

    async def record(self, outcomes: Sequence[Outcome]) -> set[str]:
        """Store delivery outcomes, in one commit; returns the keys whose outcome it refused.

        Each outcome is written only over this run's own claim of the record, as it made it
        (a shared ledger fences it with the claim's token): a record reconciled or claimed by
        another run since, or already settled, keeps its state."""
        ...

    def failed(
        self, batch_size: int = 500, *, retryable_only: bool = False
    ) -> AsyncIterator[list[Accepted]]:
        """Records in ``failed``, in batches, for ``replay`` (see :class:`RecordFilter`)."""
        ...

    def records(
        self, which: RecordFilter, batch_size: int = 500
    ) -> AsyncIterator[list[LedgerRecord]]:
        """The records ``which`` selects, in batches, in key order (``failures``)."""
        ...

    async def retire(self, which: RecordFilter, reason: str) -> int:
        """Close the ``failed``/``invalid`` records ``which`` selects: state ``retired``,
        with ``reason`` and the state they had; returns how many. A retired record that
        comes in again is handled as a new one (validated, and sent if valid)."""
        ...

    async def runs(self, limit: int) -> list[RunInfo]:
        """The latest ``limit`` runs, newest first."""
        ...

    async def holder(self) -> str | None:
        """Which process holds the ledger for a run now (e.g. ``pid 123``), None if none."""
        ...

    async def uncertain(self, this_run: bool) -> list[tuple[Accepted, str]]:
        """(record, run id) of records whose request may have reached the API."""
        ...

    async def settle(self, outcomes: Sequence[Outcome], *, this_run: bool) -> set[str]:
        """Store reconciliation's outcomes, in one commit, only for records still uncertain
        as :meth:`uncertain` (``this_run``) selects them: since they were read, another
        worker may have settled one or a worker (this one too) claimed it again, and its
        state then stands. Returns the keys written."""
        ...

    async def recorded_ids(self, ids: Sequence[str]) -> set[str]:
        """The feedback ids among ``ids`` that some ``sent`` record already holds."""
        ...

    #: Seconds a run's claims stay its own after its last renewal; None: the ledger has no
    #: leases (one process holds it), so a run's claims are its own until it ends.
    lease: float | None

    async def heartbeat(self) -> bool:
        """Note that this run is alive and renew its lease; False if the ledger refused (the
        lease had run out: other runs may be settling this run's records)."""
        ...

    async def last_seen(self, run_ids: Sequence[str]) -> float | None:
        """When the latest of these runs was last alive, in seconds since the epoch."""
        ...

    async def quiet_in(self, run_ids: Sequence[str]) -> float:
        """Seconds from now until no request these runs started can still be on its way (0
        if none can): a run that ended, at its end; one whose lease ran out, at the lease's
        end plus its request time bound. Reconciliation judges their records only then."""
        ...

    async def counts(self) -> dict[str, int]:
        """Number of records in each state."""
        ...

    async def close(self, summary: str | None = None) -> None: ...
