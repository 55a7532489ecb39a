"""Housekeeping of a run that reads a queue: a following run may go on for days, and a
``--drain`` run may wait for what a killed worker left.

- Every ``reconcile_every`` seconds, a queue run's own ``unknown`` outcomes are settled (their
  entries are acked once found stored, given back to be sent once found not stored), instead
  of only at the end of the run: a following run may never end, and a ``--drain`` run may be
  waiting for another worker that is itself waiting for this one (each holds entries the
  other must see settled: the same record enqueued twice, or entries taken over), so settling
  only after the source ended would wait forever.
- As often, in every queue run, other runs' uncertain records are settled once their owner's
  lease expired (a worker killed mid-run): the entries of those records that this run
  released come back sent (skipped and acked) or not stored (sent), instead of waiting for a
  restart that reconciles them.

(The progress line every ``log_every`` seconds is every run's, see :mod:`pipeline.observe.monitor`.)

It ends once ``ended`` is set (after its current step), and runs as a
:meth:`RunControl.background` task: a failure ends the run with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable

from pipeline.engine.acks import Acks
from pipeline.engine.control import RunControl
from pipeline.engine.reconcile import Reconciler, Settled
from pipeline.engine.stages import Stages
from pipeline.errors import AbortedError, ReconcileError
from pipeline.observe.problems import Progress
from pipeline.observe.summary import Summary


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


@contextlib.asynccontextmanager
async def housekeeping(
    control: RunControl,
    reconcilers: Callable[..., Reconciler],
    pipeline: Stages,
    summary: Summary,
    progress: Progress,
    every: float,
    follow: bool,
    leftovers: bool,
) -> AsyncIterator[None]:
    """While the stages run: this run's unknowns settled periodically while following
    (``follow``) or draining a queue (``leftovers``), other runs' leftovers in both.
    ``reconcilers(sleep=, notice=)`` makes a reconciler of the run.

    They end (after their current step) when the stages do, before the final reconcile."""

    async def sleep(seconds: float) -> None:
        # A stop during the settle wait must not reconcile early (that could call a record
        # "not stored" that is still being stored): it ends this pass instead.
        await control.pause(seconds)
        control.check()

    def problem(message: str) -> None:
        progress.problem(None, message)

    ended: asyncio.Event = asyncio.Event()
    tasks = []
    if follow or leftovers:
        own = reconcilers(sleep=sleep).settle_own
        work = functools.partial(
            settle_periodically, ended, every, own, summary, pipeline.acks, problem
        )
        tasks.append(control.background("periodic reconcile", work))
    if leftovers:
        # Rare (a worker died), and the run may wait on them: say so when there are some.
        others = reconcilers(sleep=sleep, notice=progress.notice).settle_leftovers
        give_up = None if follow else pipeline.stop_releasing
        work = functools.partial(
            settle_leftovers_periodically, ended, every, others, summary, problem, give_up
        )
        tasks.append(control.background("periodic reconcile of other runs", work))
    try:
        yield
    finally:
        ended.set()
        await asyncio.gather(*tasks)
