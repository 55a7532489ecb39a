"""A worker's part in the fleet view (a shared ledger, :mod:`pipeline.ledger.fleet`).

As it starts, the run says who it is (pid, queue consumer, job, sources); every heartbeat it
writes its counts so far, and when a record last settled, and reads whether ``stop`` asked it
to end. Asked, it ends as a following run ends on SIGTERM: it takes no new record, lets the
requests on the wire finish (``--grace`` at most), and leaves the entries it had not sent
unacked on their queue (Redis: pending, taken over by another consumer or the next start;
RabbitMQ: requeued as the channel closes), their records ``failed`` "not sent", which any
worker claims and sends again.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Sequence

from pipeline.config import Settings
from pipeline.engine.control import RunControl
from pipeline.errors import LedgerError
from pipeline.ledger.fleet import FleetLedger, Identity
from pipeline.ledger.lease import HEARTBEAT_S
from pipeline.observe.summary import Summary

#: The counts a heartbeat writes (the summary's names).
PROGRESS = (
    "read", "sent", "skipped", "duplicate", "invalid", "failed", "unknown", "released",
    "fenced", "reconciled_found", "reconciled_missing",
)  # fmt: skip


def identity(job: str | None, sources: Sequence[object]) -> Identity:
    """This process as ``status`` shows it: a source's ``consumer`` (a Redis consumer name)
    and ``name`` (its URL, password masked)."""
    consumers = [c for s in sources if (c := getattr(s, "consumer", None))]
    names = [n for s in sources if isinstance(n := getattr(s, "name", None), str)]
    return Identity(
        pid=os.getpid(),
        consumer=", ".join(consumers) or None,
        job=job,
        source=" ".join(names) or None,
    )


async def introduce(ledger: object, job: str | None, sources: Sequence[object]) -> Identity:
    """Who this run is, recorded where the ledger keeps the fleet view."""
    who = identity(job, sources)
    if isinstance(ledger, FleetLedger):
        await ledger.introduce(who)
    return who


def join_fleet(
    ledger: object,
    settings: Settings,
    summary: Summary,
    control: RunControl,
    notice: Callable[[str], None],
    *,
    shared: bool,
) -> None:
    """A worker of a shared ledger (``shared``: its ledger has leases): a word on a --rate
    that is its own budget, not the fleet's; its counts in the fleet view, and ``stop``
    heard (a ledger that keeps the fleet view)."""
    if shared and settings.rate and not settings.rate_scope:
        notice(
            f"--rate {settings.rate:g} is this worker's own budget: N workers on this shared "
            f"ledger send up to N x {settings.rate:g} requests/s together; give them all "
            "--rate-scope redis://... to make --rate their total"
        )
    if isinstance(ledger, FleetLedger):
        report = keep_reporting(ledger, summary, control, HEARTBEAT_S, notice)
        control.background("fleet", lambda: report)


def progress(summary: Summary) -> dict[str, int]:
    counts = {name: int(getattr(summary, name)) for name in PROGRESS}
    counts["in_flight"] = summary.in_flight
    return counts


async def keep_reporting(
    ledger: FleetLedger,
    summary: Summary,
    control: RunControl,
    every: float,
    notice: Callable[[str], None],
) -> None:
    """Write the run's counts every ``every`` seconds until the run stops; end the run
    gracefully once ``stop`` asked.

    One write at a time, never awaited past ``every``: on a stalled ledger it is left to end
    (or fail) on its own, as the lease's renewal is, and no second one piles up behind it (the
    lease is what judges the ledger; this only shows). A write that failed is tried again."""
    settled_before = -1
    asked = False
    beat: asyncio.Future[str | None] | None = None
    try:
        while not control.stopped:
            if beat is None:
                settled = summary.read - summary.in_flight
                beat = asyncio.ensure_future(
                    ledger.beat(progress(summary), settled != settled_before)
                )
                settled_before = settled
            await asyncio.wait({beat}, timeout=every)
            if beat.done():
                failed = beat.exception()
                if failed is not None and not isinstance(failed, LedgerError):
                    raise failed  # a bug: the run ends with it (control.background)
                stop = None if failed is not None else beat.result()
                beat = None
                if stop and not asked:
                    asked = True
                    notice(
                        f"stop requested ({stop}): taking no new records, finishing the "
                        "requests on the wire; what was not sent stays on the queue for the "
                        "other workers"
                    )
                    control.end(f"stopped by request ({stop})")
                    return
                await control.pause(every)
    finally:
        if beat is not None and not beat.done():
            beat.cancel()
