"""Wires the stages together and owns a run's start-up and shutdown: the sources and the
ledger (both chosen by URL), the HTTP session, reconciliation before and after sending, the
run control (stop, heartbeat, signals), and the summary.
The stages themselves are in :mod:`pipeline.engine.stages`."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from pipeline import __version__
from pipeline.config import Settings
from pipeline.delivery.client import FeedbackClient
from pipeline.delivery.delivery import Delivery
from pipeline.engine import fresh_ledger
from pipeline.engine.columns import check_files
from pipeline.engine.control import RunControl
from pipeline.engine.fleet import introduce, join_fleet
from pipeline.engine.housekeeping import housekeeping
from pipeline.engine.reading import raw_batches
from pipeline.engine.reconcile import Reconciler, Settled
from pipeline.engine.skip import skipping_sent
from pipeline.engine.stages import Batches, Stages, claim
from pipeline.engine.validate import Validator
from pipeline.errors import (
    AbortedError,
    AuthError,
    BaseUrlError,
    LedgerError,
    ReconcileError,
    SettleInterruptedError,
)
from pipeline.flow.compose import FlowControl
from pipeline.flow.shared import SharedRate, both, shared_rate
from pipeline.ledger import Ledger, open_ledger
from pipeline.ledger.lease import HEARTBEAT_S, NO_LEASE, Lease, LeaseGate
from pipeline.logs import event
from pipeline.models import Rejection
from pipeline.observe.monitor import observed_client
from pipeline.observe.observer import Observer
from pipeline.observe.summary import Progress, Summary
from pipeline.sources import is_queue, open_source, source_options

#: Makes the batches of a run once its ledger is open (replay reads them from the ledger).
BatchesOf = Callable[[Ledger, RunControl], Batches]


async def run_sources(
    settings: Settings, paths: Sequence[str], *, auth: tuple[str, str] | None, dry_run: bool
) -> Summary:
    """The ``run`` command: read, validate, claim and deliver every record of ``paths``
    (files, ``-``, or queue URLs; a queue is followed until a signal unless ``drain``)."""
    options = source_options(settings)
    validator = Validator(
        default_assistant_id=settings.assistant_id,
        columns=settings.columns,
        ignore_extra=settings.ignore_extra_columns,
    )
    # Before the ledger is opened: a column that would not be sent costs nothing yet.
    check_files(
        paths, settings.format, settings.columns, ignore_extra=settings.ignore_extra_columns
    )
    queue = any(is_queue(path) for path in paths)
    follow = not settings.drain and queue
    async with contextlib.AsyncExitStack() as stack:
        sources = []
        for path in paths:  # all opened (and checked) before the ledger is
            source = await open_source(path, options)
            stack.push_async_callback(source.close)
            sources.append(source)

        def batches(ledger: Ledger, control: RunControl) -> Batches:
            return skipping_sent(raw_batches(sources, control), validator, ledger)

        return await _execute(
            "run",
            settings,
            auth,
            batches,
            dry_run=dry_run,
            follow=follow,
            queue=queue,
            sources=sources,
        )


async def replay_failed(
    settings: Settings,
    *,
    auth: tuple[str, str],
    retryable_only: bool = False,
    limit: int | None = None,
) -> Summary:
    """The ``replay`` command: send again the records the ledger holds as ``failed`` (those
    the API may still take when ``retryable_only``; at most ``limit``)."""

    async def batches(ledger: Ledger, _: RunControl) -> Batches:
        left = limit
        async for batch in ledger.failed(settings.batch_size, retryable_only=retryable_only):
            if left is not None:
                batch, left = batch[:left], left - len(batch[:left])
            if batch:
                yield list(batch)
            if left == 0:
                return

    return await _execute("replay", settings, auth, batches, dry_run=False)


async def _execute(
    command: str,
    settings: Settings,
    auth: tuple[str, str] | None,
    batches: BatchesOf,
    *,
    dry_run: bool,
    follow: bool = False,
    queue: bool = False,
    sources: Sequence[object] = (),
) -> Summary:
    run_id = uuid.uuid4().hex[:16]
    summary = Summary(
        command,
        run_id,
        dry_run=dry_run,
        max_invalid=settings.max_invalid,
        max_failed=settings.max_failed,
    )
    observer = Observer(settings, summary, sources)
    error: BaseException | None = None
    checked = command == "run" and not dry_run  # a new ledger matters where records are sent
    must_exist = settings.origin("ledger_must_exist") if settings.ledger_must_exist else None
    if checked and must_exist:
        fresh_ledger.refuse_missing(settings.ledger, must_exist)
    created = fresh_ledger.created_path(settings.ledger) if checked else None
    try:
        async with observer.watching():
            ledger = await open_ledger(
                settings.ledger,
                run_id,
                command=command,
                read_only=dry_run,
                request_bound=settings.timeout,
            )
            observer.started(await introduce(ledger, settings.job, sources))
            fresh = checked and await _announce(settings, ledger, created, must_exist, observer)
            await _on_ledger(
                command, settings, ledger, observer, auth, batches, dry_run, follow, queue, fresh
            )
    except BaseException as exc:
        error = exc
        raise
    finally:
        # The report and the metrics textfile, however the run ended (an abort, a signal, an
        # unusable ledger, a bug): a scheduler reads them precisely when something went wrong.
        observer.ended(error)
    return summary


async def _announce(
    settings: Settings,
    ledger: Ledger,
    created: Path | None,
    must_exist: str | None,
    observer: Observer,
) -> bool:
    """Whether the ledger is new, said before anything is sent (see fresh_ledger)."""
    try:
        return await fresh_ledger.announce(
            settings.ledger, ledger, created, must_exist, observer.progress.notice
        )
    except BaseException:
        await ledger.close()
        raise


async def _on_ledger(
    command: str,
    settings: Settings,
    ledger: Ledger,
    observer: Observer,
    auth: tuple[str, str] | None,
    batches: BatchesOf,
    dry_run: bool,
    follow: bool,
    queue: bool,
    fresh: bool = False,
) -> None:
    summary, progress = observer.summary, observer.progress
    control = RunControl(grace=settings.grace, service=follow)
    try:
        if dry_run or auth is None:
            await _dry_run(ledger, batches(ledger, control), summary, progress)
            summary.aborted = control.reason  # a source that failed
        else:
            run = _Run(settings, ledger, control, summary, progress, observer, fresh)
            await _deliver(run, auth, batches, follow=follow, queue=queue)
    finally:
        summary.finish()
        try:
            await ledger.close(json.dumps(summary.as_dict()))
        except LedgerError as exc:
            # The records' states are written (or left in flight, as after a kill): the run
            # ends with its summary, and its lease runs out by itself.
            summary.aborted = summary.aborted or str(exc)
            progress.notice(f"{exc}; the run's end is not recorded in the ledger")


@dataclass(frozen=True)
class _Run:
    """What every part of one delivering run shares."""

    settings: Settings
    ledger: Ledger
    control: RunControl
    summary: Summary
    progress: Progress
    observer: Observer
    fresh: bool  # the ledger holds no record: its first batch is looked up at the API


def _beat(run: _Run, lease: Lease | None) -> None:
    """The run's background beats: its heartbeat (or lease), its fleet row, its metrics."""
    ledger, control, summary, progress = run.ledger, run.control, run.summary, run.progress
    if lease is None:
        control.heartbeat(ledger.heartbeat, HEARTBEAT_S)
    else:
        control.background("lease", functools.partial(lease.keep, HEARTBEAT_S))
    join_fleet(ledger, run.settings, summary, control, progress.notice, shared=lease is not None)
    if run.observer.metrics is not None:
        control.background("pulse", functools.partial(run.observer.beating, HEARTBEAT_S))


async def _deliver(
    run: _Run, auth: tuple[str, str], batches: BatchesOf, *, follow: bool, queue: bool
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
        _session(settings, auth) as session,
        _shared_rate(settings, auth, control, progress.notice) as shared,
    ):
        client = observed_client(
            session, settings.base_url, run.observer.listeners, lease.check if lease else None
        )
        delivery = _delivery(settings, client, control, progress, lease or NO_LEASE)
        delivery.shared = shared
        run.observer.monitor.attach(delivery)
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
            ledger, delivery, control, summary, progress, settings.concurrency, release=leftovers
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
        summary.concurrency = delivery.limit.limit
        summary.concurrency_range = (delivery.limit.lowest, delivery.limit.highest)
        summary.pauses = delivery.flow.hold.count
        summary.rate_cap = delivery.rate.cap
        summary.rate_limit = delivery.flow.rate
        summary.rate_cap_found = delivery.flow.api_cap
        summary.concurrency_found = delivery.flow.shown
        summary.errors_noise = delivery.flow.errors.noise
        summary.errors_load = delivery.flow.errors.load


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
    run: _Run, stream: Batches, client: FeedbackClient, acquire: Callable[[], Awaitable[None]]
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


def _shared_rate(
    settings: Settings, auth: tuple[str, str], control: RunControl, notice: Callable[[str], None]
) -> contextlib.AbstractAsyncContextManager[SharedRate | None]:
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
    settings: Settings,
    client: FeedbackClient,
    control: RunControl,
    progress: Progress,
    lease: LeaseGate,
) -> Delivery:
    return Delivery(
        client,
        max_attempts=settings.max_attempts,
        rate=settings.rate,
        control=control,
        concurrency=settings.concurrency,
        backoff=settings.backoff,
        max_backoff=settings.max_backoff,
        max_outage=settings.max_outage,
        notice=progress.notice,
        lease=lease,
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


async def reconcile_ledger(settings: Settings, *, auth: tuple[str, str]) -> Settled:
    """The ``reconcile`` command: settle every uncertain record of the ledger."""
    ledger = await open_ledger(settings.ledger, uuid.uuid4().hex[:16], command="reconcile")
    try:
        control = RunControl()
        async with (
            _session(settings, auth) as session,
            _shared_rate(settings, auth, control, _notice) as shared,
        ):
            client = FeedbackClient(session, settings.base_url)
            reconciler = Reconciler(
                client,
                ledger,
                settle=settings.settle,
                max_attempts=settings.max_attempts,
                acquire=both(FlowControl(settings.concurrency, settings.rate).pace, shared),
            )
            return await reconciler.settle_leftovers()
    finally:
        await ledger.close()


def _notice(message: str) -> None:
    event(logging.WARNING, f"notice: {message}", "notice")


async def _dry_run(ledger: Ledger, batches: Batches, summary: Summary, progress: Progress) -> None:
    async for batch in batches:
        for item, decision in zip(batch, await claim(ledger, batch), strict=True):
            reason = item.reason if isinstance(item, Rejection) else None
            summary.decided(decision, reason)
            if reason is not None:
                progress.problem(item.location, f"invalid: {reason}")


@contextlib.asynccontextmanager
async def _session(
    settings: Settings, auth: tuple[str, str]
) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(limit=settings.concurrency)
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
