"""Housekeeping of a run that reads a queue: a following run may go on for days, and a
``--drain`` run may wait for what a killed worker left.

- Every ``reconcile_every`` seconds, a following run's own ``unknown`` outcomes are settled
  (their queue entries are acked once found stored), instead of only at the end of the run.
- As often, in every queue run, other runs' uncertain records are settled once their owner's
  lease expired (a worker killed mid-run): the entries of those records that this run
  released come back sent (skipped and acked) or not stored (sent), instead of waiting for a
  restart that reconciles them.

(The progress line every ``log_every`` seconds is every run's, see :mod:`pipeline.monitor`.)

It ends once ``ended`` is set (after its current step), and runs as a
:meth:`RunControl.background` task: a failure ends the run with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
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


async def settle_leftovers_periodically(
    ended: asyncio.Event,
    every: float,
    settle_leftovers: Callable[[], Awaitable[Settled]],
    summary: Summary,
    problem: Callable[[str], None],
    give_up: Callable[[], None] | None = None,
) -> None:
    """``give_up`` (a ``--drain`` run): called when the API's list failed, after its retries.
    A job must end rather than wait, pass after pass, on entries it cannot settle; a service
    tries again next time."""
    while not await _wait(ended, every):
        try:
            settled = await settle_leftovers()
        except AbortedError:  # the run stopped during the settle wait: nothing was settled
            return
        except ReconcileError as exc:
            problem(f"reconcile: {exc}; uncertain records are not sent again")
            if give_up is not None:
                give_up()
                return
            continue
        summary.reconciled_found += settled.found
        summary.reconciled_missing += settled.missing
