"""Wires the stages together and owns a run's start-up and shutdown: the ledger, the HTTP
session, reconciliation before and after sending, signals, and the summary.
The stages themselves are in :mod:`pipeline.stages`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence

import aiohttp

from pipeline import __version__
from pipeline.client import FeedbackClient
from pipeline.config import Settings
from pipeline.delivery import Delivery
from pipeline.errors import AuthError, ReconcileError, SettleInterruptedError
from pipeline.ledger import Ledger, SqliteLedger
from pipeline.models import Rejection
from pipeline.reconcile import Reconciler, Settled
from pipeline.report import Progress, Summary
from pipeline.sources import open_source
from pipeline.stages import Batches, Stages, source_batches
from pipeline.validate import Validator


async def run_sources(
    settings: Settings, paths: Sequence[str], *, auth: tuple[str, str] | None, dry_run: bool
) -> Summary:
    """The ``run`` command: read, validate, claim and deliver every record of ``paths``."""
    sources = [open_source(path, settings.format, settings.columns) for path in paths]
    validator = Validator(default_assistant_id=settings.assistant_id, columns=settings.columns)

    def batches(_: Ledger) -> Batches:
        return source_batches(sources, validator, settings.batch_size)

    return await _execute("run", settings, auth, batches, dry_run=dry_run)


async def replay_failed(settings: Settings, *, auth: tuple[str, str]) -> Summary:
    """The ``replay`` command: send again every record the ledger holds as ``failed``."""

    async def batches(ledger: Ledger) -> Batches:
        async for batch in ledger.failed(settings.batch_size):
            yield list(batch)

    return await _execute("replay", settings, auth, batches, dry_run=False)


async def ledger_counts(path: str) -> dict[str, int]:
    ledger = await SqliteLedger.open(path, "status", command="status", read_only=True)
    try:
        return await ledger.counts()
    finally:
        await ledger.close()


async def _execute(
    command: str,
    settings: Settings,
    auth: tuple[str, str] | None,
    batches: Callable[[Ledger], Batches],
    *,
    dry_run: bool,
) -> Summary:
    run_id = uuid.uuid4().hex[:16]
    summary = Summary(command, run_id, dry_run=dry_run)
    ledger = await SqliteLedger.open(settings.ledger, run_id, command=command, read_only=dry_run)
    progress = Progress(settings.progress)
    try:
        if dry_run or auth is None:
            await _dry_run(ledger, batches(ledger), summary, progress)
        else:
            await _deliver(settings, auth, ledger, batches, summary, progress)
    finally:
        progress.close()
        summary.finish()
        await ledger.close(json.dumps(summary.as_dict()))
    return summary


async def _deliver(
    settings: Settings,
    auth: tuple[str, str],
    ledger: Ledger,
    batches: Callable[[Ledger], Batches],
    summary: Summary,
    progress: Progress,
) -> None:
    async with _session(settings, auth) as session:
        client = FeedbackClient(session, settings.base_url)
        delivery = _delivery(settings, client, progress)
        reconciler = Reconciler(
            client,
            ledger,
            settle=settings.settle,
            max_attempts=settings.max_attempts,
            # Stop-aware, so a signal does not hang in the settle wait; the reconciler then
            # judges nothing (see Reconciler), and the run ends with the records uncertain.
            sleep=delivery.pause,
            stopped=delivery.stop.is_set,
            notice=progress.notice,
        )

        async def body() -> None:
            # Before anything is sent: what earlier runs left uncertain becomes sent or failed,
            # so that nothing they may have delivered is delivered again.
            if settings.reconcile:
                earlier = await _settle(reconciler.settle_leftovers, delivery, progress)
                summary.reconciled_found = earlier.found
                summary.reconciled_missing = earlier.missing
            if not delivery.stop.is_set():
                pipeline = Stages(ledger, delivery, summary, progress, settings.concurrency)
                await pipeline.run(batches(ledger))
            if settings.reconcile and summary.unknown and not delivery.stop.is_set():
                own = await _settle(reconciler.settle_own, delivery, progress)
                summary.settled_own(own.found, own.missing)

        task = asyncio.create_task(body())
        with _signals(delivery, task, settings.grace):
            try:
                await task
            except asyncio.CancelledError:
                if not delivery.stop.is_set():
                    raise
                delivery.abort_reason = (
                    f"{delivery.abort_reason}; requests still unanswered were cut off and stay "
                    "in flight until reconciled"
                )
        summary.retries = delivery.retries
        summary.aborted = delivery.abort_reason
        summary.concurrency = delivery.limit.limit
        summary.concurrency_range = (delivery.limit.lowest, delivery.limit.highest)
        summary.pauses = delivery.gate.pauses
        summary.rate_cap = delivery.rate.cap


def _delivery(settings: Settings, client: FeedbackClient, progress: Progress) -> Delivery:
    return Delivery(
        client,
        max_attempts=settings.max_attempts,
        rate=settings.rate,
        stop=asyncio.Event(),
        concurrency=settings.concurrency,
        backoff=settings.backoff,
        max_backoff=settings.max_backoff,
        max_outage=settings.max_outage,
        notice=progress.notice,
    )


async def _settle(
    step: Callable[[], Awaitable[Settled]], delivery: Delivery, progress: Progress
) -> Settled:
    try:
        return await step()
    except AuthError as exc:
        delivery.abort(f"authentication refused by the API ({exc})")
    except SettleInterruptedError as exc:
        progress.notice(f"reconcile: {exc}")
    except ReconcileError as exc:
        progress.problem(None, f"reconcile: {exc}; uncertain records are not sent again")
    return Settled()


async def reconcile_ledger(settings: Settings, *, auth: tuple[str, str]) -> Settled:
    """The ``reconcile`` command: settle every uncertain record of the ledger."""
    ledger = await SqliteLedger.open(settings.ledger, uuid.uuid4().hex[:16], command="reconcile")
    try:
        async with _session(settings, auth) as session:
            client = FeedbackClient(session, settings.base_url)
            reconciler = Reconciler(
                client, ledger, settle=settings.settle, max_attempts=settings.max_attempts
            )
            return await reconciler.settle_leftovers()
    finally:
        await ledger.close()


async def _dry_run(ledger: Ledger, batches: Batches, summary: Summary, progress: Progress) -> None:
    async for batch in batches:
        for item, decision in zip(batch, await ledger.claim(batch), strict=True):
            summary.decided(decision)
            if isinstance(item, Rejection):
                progress.problem(item.location, f"invalid: {item.reason}")
        progress.advance(len(batch))


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


@contextlib.contextmanager
def _signals(delivery: Delivery, task: asyncio.Task[None], grace: float) -> Iterator[None]:
    """First SIGINT/SIGTERM: stop taking records, let requests on the wire finish for up to
    ``grace`` seconds, then cut them off. A second signal cuts them off at once. Either way
    the ledger stays truthful: what was cut off is still marked in flight."""
    loop = asyncio.get_running_loop()

    def cut_off() -> None:
        if not task.done():
            task.cancel()

    def handle(name: str) -> None:
        if delivery.stop.is_set():
            cut_off()
            return
        delivery.abort(f"interrupted by {name}")
        loop.call_later(grace, cut_off)

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, handle, sig.name)
            installed.append(sig)
    try:
        yield
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
