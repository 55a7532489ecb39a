"""The Ledger protocol: the durable memory of what happened to every record."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from enum import StrEnum
from typing import Protocol

from pipeline.models import Accepted, Outcome, Rejection


class Decision(StrEnum):
    """What the ledger says to do with a record of the input."""

    SEND = "send"  # claimed: durably in_flight, the request may now go out
    SKIP = "skipped"  # already sent by an earlier run
    DUPLICATE = "duplicate"  # the same key came earlier in this run
    INVALID = "invalid"  # a rejection, recorded
    UNCERTAIN = "unknown"  # an earlier run may have sent it and reconciliation did not settle it


class Ledger(Protocol):
    async def claim(self, batch: Sequence[Accepted | Rejection]) -> list[Decision]:
        """Decide each item of ``batch`` (same order) and make the decision durable.

        Records to send are marked ``in_flight`` and committed before this returns, so a crash
        afterwards leaves an exact list of records whose request may have gone out.
        """
        ...

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        """Store delivery outcomes, in one commit."""
        ...

    def failed(self, batch_size: int = 500) -> AsyncIterator[list[Accepted]]:
        """Records in ``failed``, in batches, for ``replay``."""
        ...

    async def uncertain(self, this_run: bool) -> list[tuple[Accepted, str]]:
        """(record, run id) of records whose request may have reached the API."""
        ...

    async def recorded_ids(self, ids: Sequence[str]) -> set[str]:
        """The feedback ids among ``ids`` that some ``sent`` record already holds."""
        ...

    async def heartbeat(self) -> None:
        """Note that this run is alive (reconciliation of a dead run waits on it)."""
        ...

    async def last_seen(self, run_ids: Sequence[str]) -> float | None:
        """When the latest of these runs was last alive, in seconds since the epoch."""
        ...

    async def counts(self) -> dict[str, int]:
        """Number of records in each state."""
        ...

    async def close(self, summary: str | None = None) -> None: ...
