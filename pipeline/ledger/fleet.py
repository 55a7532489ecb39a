"""What a shared ledger knows of its fleet of workers: who each run is, what it has done so
far, whether it is alive, and a request to stop (``status``, ``stop``).

Only a ledger many workers share (PostgreSQL) keeps this: its runs renew a lease, and each
heartbeat also writes the run's counts so far and reads whether ``stop`` asked it to end.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True, slots=True)
class Identity:
    """Who a run is, as ``status`` shows it: its process, its queue consumer (the Redis
    consumer name it reads as), its job label (``--job``) and its sources (passwords masked)."""

    pid: int
    consumer: str | None = None
    job: str | None = None
    source: str | None = None


@dataclass(frozen=True, slots=True)
class FleetRun:
    """One run as the ledger holds it; times are seconds since the epoch on the database's
    clock (``now`` is that clock as the view was read), None where not known."""

    run_id: str
    command: str
    host: str | None
    pid: int | None
    consumer: str | None
    job: str | None
    source: str | None
    started_at: str
    finished_at: str | None
    last_seen: float | None
    last_progress: float | None
    lease_until: float | None
    stop_requested: str | None
    counts: dict[str, Any]  # the summary's once ended, else the last heartbeat's
    summary: dict[str, Any] | None
    open_records: int  # records it still owns in flight or unknown


@dataclass(frozen=True, slots=True)
class FleetView:
    """The runs (newest first), the record counts by state (of the job's runs, with a job),
    and the database's clock as it was read."""

    now: float
    runs: Sequence[FleetRun]
    counts: dict[str, int] = field(default_factory=dict)
    failed_unsent: int = 0  # of ``failed``: never sent (found not stored, or released)


@runtime_checkable
class FleetLedger(Protocol):
    """A ledger that keeps the fleet view (the shared one); others have none of it."""

    async def introduce(self, who: Identity) -> None:
        """Record who this run is (once, as it starts)."""
        ...

    async def beat(self, progress: dict[str, int], settled: bool) -> str | None:
        """Write the run's counts so far (``settled``: a record settled since the last beat:
        its last-progress time is now); returns why ``stop`` asked it to end, if it did."""
        ...

    async def request_stop(self, reason: str, job: str | None) -> list[FleetRun]:
        """Ask every live run (of ``job``, if given) to end gracefully; the runs asked."""
        ...

    async def fleet(self, job: str | None, limit: int) -> FleetView:
        """The last ``limit`` runs (of ``job``) and the records' counts (of ``job``'s runs)."""
        ...
