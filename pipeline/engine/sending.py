"""A delivering run: the HTTP session, the ``--rate-scope`` budget, delivery and the stages,
reconciliation before and after sending, the background beats (heartbeat or lease, fleet row,
metrics), and the figures flow control converged on, for the summary. The runner
(:mod:`pipeline.engine.runner`) opens and closes the run around this."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp

from pipeline.config import Settings
from pipeline.delivery.client import FeedbackClient
from pipeline.delivery.delivery import Delivery, Sending
from pipeline.engine import fresh_ledger
from pipeline.engine.control import RunControl
from pipeline.engine.fleet import join_fleet
from pipeline.engine.housekeeping import housekeeping
from pipeline.engine.reconcile import Reconciler, Settled
from pipeline.engine.spares import Spares
from pipeline.engine.stages import Batches, Stages
from pipeline.errors import (
    AbortedError,
    AuthError,
    BaseUrlError,
    ReconcileError,
    SettleInterruptedError,
)
from pipeline.flow.budget import RateBudget, both, shared_rate
from pipeline.flow.compose import FlowControl
from pipeline.flow.slots import most_open
from pipeline.ledger import Ledger
from pipeline.ledger.lease import HEARTBEAT_S, NO_LEASE, Lease, LeaseGate
from pipeline.observe.monitor import observed_client
from pipeline.observe.observer import Observer
from pipeline.observe.problems import Progress
from pipeline.observe.summary import Summary
from pipeline.version import __version__

#: Makes the batches of a run once its ledger is open (replay reads them from the ledger).
BatchesOf = Callable[[Ledger, RunControl], Batches]


@dataclass(frozen=True)
class Run:
    """What every part of one delivering run shares."""

    settings: Settings
    ledger: Ledger
    control: RunControl
    sending: Sending
    spares: Spares  # the workers (flow control starts a spare one for a slot it frees)
    summary: Summary
    progress: Progress
    observer: Observer
    fresh: bool  # the ledger holds no record: its first batch is looked up at the API


def _beat(run: Run, lease: Lease | None) -> None:
    """The run's background beats: its heartbeat (or lease), its fleet row, its metrics."""
    ledger, control, summary, progress = run.ledger, run.control, run.summary, run.progress
    if lease is None:
        control.heartbeat(ledger.heartbeat, HEARTBEAT_S)
    else:
        control.background("lease", functools.partial(lease.keep, HEARTBEAT_S))
    join_fleet(ledger, run.settings, summary, control, progress.notice, shared=lease is not None)
    if run.observer.metrics is not None:
        control.background("pulse", functools.partial(run.observer.beating, HEARTBEAT_S))


async def deliver(
    run: Run, auth: tuple[str, str], batches: BatchesOf, *, follow: bool, queue: bool
) -> None:
    settings, ledger, control, summary, progress = (
        run.settings,
        run.ledger,
        run.control,
        run.summary,
        run.progress,
    )
    lease = _lease(ledger, control, progress)
    async with (
        session(settings, auth) as http,
        scope_budget(settings, auth, control, progress.notice) as shared,
    ):
        client = observed_client(
            http, settings.base_url, run.observer.listeners, lease.check if lease else None
        )
        spares = run.spares
        delivery = _delivery(run, client, lease or NO_LEASE, shared, spares.waiting)
        reconcilers = functools.partial(
            Reconciler,
            client,
            ledger,
            settle=settings.settle,
            max_attempts=settings.max_attempts,
            stopped=lambda: control.stopped,
            acquire=_both(delivery),  # List requests count against --rate like POSTs
        )
        # Stop-aware, so a signal does not hang in the settle wait; the reconciler then
        # judges nothing (see Reconciler), and the run ends with the records uncertain.
        reconciler = reconcilers(sleep=control.pause, notice=progress.notice)
        # A queue run settles other runs' uncertain records periodically, so the entries of
        # those records are given back to be offered again, not left with this run.
        leftovers = queue and settings.reconcile
        pipeline = Stages(
            ledger,
            delivery,
            control,
            summary,
            progress,
            settings.concurrency,
            release=leftovers,
            spares=spares,
        )

        async def body() -> None:
            _beat(run, lease)
            # Before anything is sent: what earlier runs left uncertain becomes sent or failed,
            # so that nothing they may have delivered is delivered again.
            if settings.reconcile:
                earlier = await _settle(reconciler.settle_leftovers, control, progress)
                summary.reconciled_found = earlier.found
                summary.reconciled_missing = earlier.missing
            control.check()
            stream = batches(ledger, control)
            if run.fresh and settings.new_ledger != "send":
                stream = await _looked_up(run, stream, client, _both(delivery))
            every = settings.reconcile_every
            async with housekeeping(
                control, reconcilers, pipeline, summary, progress, every, follow, leftovers
            ):
                await pipeline.run(stream)
            if settings.reconcile and summary.unknown and not control.stopped:
                own = await _settle(reconciler.settle_own, control, progress)
                _settled_own(own, summary, progress)
                await pipeline.acks.settled(own.found_keys, own.missing_keys)

        task = asyncio.create_task(body())
        with control.signals(task):
            try:
                await task
            except AbortedError:
                pass  # the reason is the control's, and goes into the summary
            except asyncio.CancelledError:
                if not control.stopped:
                    raise
                control.reason = (
                    f"{control.reason}; requests still unanswered were cut off and stay "
                    "in flight until reconciled"
                )
            finally:
                await control.cancel_background()
        summary.retries = delivery.retries
        summary.aborted = control.reason
        if control.lease_lost:
            summary.aborted = (
                f"{control.reason}; it stopped sending and left {summary.in_flight} claimed "
                "records in flight for the other workers to settle"
            )
        summary.stopped = control.ended
        _flow_figures(summary, delivery.flow)


def _flow_figures(summary: Summary, flow: FlowControl) -> None:
    """What flow control converged on, for the summary and its advice for next time."""
    summary.concurrency = flow.limit
    summary.concurrency_range = (flow.lowest, flow.highest)
    summary.pauses = flow.pauses
    summary.rate_cap = flow.cap
    summary.rate_limit = flow.rate
    summary.rate_cap_found = flow.api_cap
    summary.concurrency_found = flow.shown
    summary.errors_noise = flow.errors.noise
    summary.errors_load = flow.errors.load


def _settled_own(own: Settled, summary: Summary, progress: Progress) -> None:
    """This run's unknown outcomes, settled: counted, and said in the log after their
    "unknown (may be stored ...)" lines."""
    summary.settled_own(own.found, own.missing)
    if own.total:
        progress.notice(
            f"reconcile: {own.total} outcomes of this run left unknown: {own.found} were "
            f"stored (now sent), {own.missing} were not (now failed)"
        )


async def _looked_up(
    run: Run, stream: Batches, client: FeedbackClient, acquire: Callable[[], Awaitable[None]]
) -> Batches:
    """A new ledger's first batch, looked up at the API before anything is sent."""
    try:
        return await fresh_ledger.guard(
            stream,
            url=run.settings.ledger,
            mode=run.settings.new_ledger,
            ledger=run.ledger,
            client=client,
            acquire=acquire,
            notice=run.progress.notice,
        )
    except AuthError as exc:
        run.control.abort(f"authentication refused by the API ({exc})")
    except (BaseUrlError, AbortedError) as exc:  # AbortedError: the --rate-scope Redis gone
        run.control.abort(str(exc))
    run.control.check()
    return stream


def scope_budget(
    settings: Settings, auth: tuple[str, str], control: RunControl, notice: Callable[[str], None]
) -> contextlib.AbstractAsyncContextManager[RateBudget | None]:
    """``--rate-scope``'s budget (None without it), keyed by the SID that authenticates."""
    return shared_rate(
        settings.rate_scope,
        auth[0],
        rate=settings.rate,
        max_outage=settings.max_outage,
        control=control,
        notice=notice,
    )


def _both(delivery: Delivery) -> Callable[[], Awaitable[None]]:
    """This worker's rate limit, then the scope's shared budget (if any)."""
    return both(delivery.flow.pace, delivery.shared)


def _lease(ledger: Ledger, control: RunControl, progress: Progress) -> Lease | None:
    """The run's lease on its claims, where the ledger has leases (a shared one)."""
    if ledger.lease is None:
        return None
    return Lease(ledger.lease, ledger.heartbeat, on_lost=control.lose_lease, notice=progress.notice)


def _delivery(
    run: Run,
    client: FeedbackClient,
    lease: LeaseGate,
    shared: RateBudget | None,
    on_wait: Callable[[bool], None],
) -> Delivery:
    settings = run.settings
    return Delivery(
        client,
        max_attempts=settings.max_attempts,
        rate=settings.rate,
        control=run.control,
        concurrency=settings.concurrency,
        backoff=settings.backoff,
        max_backoff=settings.max_backoff,
        max_outage=settings.max_outage,
        notice=run.progress.notice,
        lease=lease,
        shared=shared,
        sending=run.sending,
        on_wait=on_wait,
    )


async def _settle(
    step: Callable[[], Awaitable[Settled]], control: RunControl, progress: Progress
) -> Settled:
    try:
        return await step()
    except AuthError as exc:
        control.abort(f"authentication refused by the API ({exc})")
    except BaseUrlError as exc:
        control.abort(str(exc))
    except SettleInterruptedError as exc:
        progress.notice(f"reconcile: {exc}")
    except ReconcileError as exc:
        progress.problem(None, f"reconcile: {exc}; uncertain records are not sent again")
    return Settled()


@contextlib.asynccontextmanager
async def session(
    settings: Settings, auth: tuple[str, str]
) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=most_open(settings.concurrency))
    headers = {
        # Only ever in this header: never logged, never part of an error message.
        "Authorization": aiohttp.encode_basic_auth(*auth),
        "User-Agent": f"feedback-pipeline/{__version__}",
    }
    async with aiohttp.ClientSession(
        timeout=aiohttp.ClientTimeout(total=settings.timeout),
        connector=connector,
        headers=headers,
    ) as session:
        yield session
