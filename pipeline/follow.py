"""Housekeeping of a run that follows a queue (no ``--drain``): it may go on for days.

- Every ``reconcile_every`` seconds, this run's own ``unknown`` outcomes are settled (their
  queue entries are acked once found stored), instead of only at the end of the run.
- Every ``log_every`` seconds, one summary line goes to the notice channel.

Both end once ``ended`` is set (after their current step), and run as
:meth:`RunControl.background` tasks: a failure ends the run with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable

from pipeline.acks import Acks
from pipeline.errors import AbortedError, ReconcileError
from pipeline.reconcile import Settled
from pipeline.report import Summary


async def _wait(ended: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds``; True once ``ended`` is set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(ended.wait(), seconds)
    return ended.is_set()


async def settle_periodically(
    ended: asyncio.Event,
    every: float,
    settle_own: Callable[[], Awaitable[Settled]],
    summary: Summary,
    acks: Acks,
    problem: Callable[[str], None],
) -> None:
    while not await _wait(ended, every):
        if not summary.unknown:
            continue
        try:
            settled = await settle_own()
        except AbortedError:  # the run stopped during the settle wait: nothing was settled
            return
        except ReconcileError as exc:  # the API's list failed: try again next time
            problem(f"reconcile: {exc}; uncertain records are not sent again")
            continue
        summary.settled_own(settled.found, settled.missing)
        await acks.settled(settled.found_keys, settled.missing_keys)


async def log_periodically(
    ended: asyncio.Event, every: float, summary: Summary, notice: Callable[[str], None]
) -> None:
    started = time.monotonic()
    while not await _wait(ended, every):
        notice(f"{summary.line()} ({time.monotonic() - started:.0f}s)")
