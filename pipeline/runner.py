"""Wires the stages together and owns a run's start-up and shutdown.

    batches of validated records -> Ledger.claim -> work queue -> N workers (Delivery)
        -> outcome queue -> one writer (group commit into the ledger)

The work queue is bounded (backpressure: reading never runs far ahead of sending); the outcome
queue is drained in whatever batch has built up while the previous commit ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import signal
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from typing import TypeAlias

import aiohttp

from pipeline import __version__
from pipeline.client import FeedbackClient
from pipeline.config import Settings
from pipeline.delivery import Delivery
from pipeline.errors import AuthError, LedgerError, PipelineError, ReconcileError
from pipeline.ledger import Decision, Ledger, SqliteLedger
from pipeline.models import Accepted, Outcome, RawRecord, Rejection, Status
from pipeline.reconcile import HEARTBEAT_S, Reconciler, Settled
from pipeline.report import Progress, Summary
from pipeline.sources import Source, open_source
from pipeline.validate import Validator

Item: TypeAlias = Accepted | Rejection
Batches: TypeAlias = AsyncIterator[list[Item]]
_WRITE_BATCH = 2000


async def run_sources(
    settings: Settings, paths: Sequence[str], *, auth: tuple[str, str] | None, dry_run: bool
) -> Summary:
    """The ``run`` command: read, validate, claim and deliver every record of ``paths``."""
    sources = [open_source(path, settings.format, settings.columns) for path in paths]
    validator = Validator(default_assistant_id=settings.assistant_id, columns=settings.columns)

    def batches(_: Ledger) -> Batches:
        return _source_batches(sources, validator, settings.batch_size)

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


def _take(
    source: Source, records: Iterator[RawRecord], validator: Validator, size: int
) -> tuple[list[Item], bool]:
    """Up to ``size`` validated records, and whether the source can give more.

    Sources report the errors they expect as records; anything else (a bug, an error nobody
    foresaw) costs one record, or the rest of one source, never the run.
    """
    batch: list[Item] = []
    try:
        for raw in itertools.islice(records, size):
            try:
                batch.append(validator(raw))
            except Exception as exc:  # noqa: BLE001
                batch.append(Rejection(raw.location, f"cannot validate: {_what(exc)}"))
    except Exception as exc:  # noqa: BLE001
        batch.append(Rejection(source.name, f"unreadable from here on: {_what(exc)}"))
        return batch, False
    return batch, len(batch) == size


def _what(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def _source_batches(sources: Sequence[Source], validator: Validator, size: int) -> Batches:
    # Reading and validating run in a worker thread: a blocking read (a slow stdin, a large
    # gzip block) must not stall the event loop that drives the requests.
    for source in sources:
        records = source.records()
        try:
            more = True
            while more:
                batch, more = await asyncio.to_thread(_take, source, records, validator, size)
                if batch:
                    yield batch
        finally:
            records.close()  # type: ignore[attr-defined]


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
            sleep=delivery.pause,
        )

        async def body() -> None:
            # Before anything is sent: what earlier runs left uncertain becomes sent or failed,
            # so that nothing they may have delivered is delivered again.
            if settings.reconcile:
                earlier = await _settle(reconciler.settle_leftovers, delivery, progress)
                summary.reconciled_found = earlier.found
                summary.reconciled_missing = earlier.missing
            if not delivery.stop.is_set():
                pipeline = _Pipeline(ledger, delivery, summary, progress, settings.concurrency)
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


class _Pipeline:
    def __init__(
        self,
        ledger: Ledger,
        delivery: Delivery,
        summary: Summary,
        progress: Progress,
        concurrency: int,
    ) -> None:
        self._ledger = ledger
        self._delivery = delivery
        self._summary = summary
        self._progress = progress
        self._concurrency = concurrency
        self._work: asyncio.Queue[Accepted | None] = asyncio.Queue(maxsize=concurrency * 2)
        self._outcomes: asyncio.Queue[tuple[Accepted, Outcome] | None] = asyncio.Queue()

    async def run(self, batches: Batches) -> None:
        async with asyncio.TaskGroup() as group:
            workers = [group.create_task(self._worker()) for _ in range(self._concurrency)]
            writer = group.create_task(self._writer())
            heartbeat = group.create_task(self._heartbeat())
            try:
                await self._produce(batches)
            except PipelineError as exc:
                self._delivery.abort(str(exc))
            for _ in workers:
                await self._work.put(None)
            await asyncio.gather(*workers)
            self._outcomes.put_nowait(None)
            await writer
            heartbeat.cancel()

    async def _heartbeat(self) -> None:
        # Tells a later run how long this one was alive, should it die with records in flight.
        while True:
            await self._ledger.heartbeat()
            await asyncio.sleep(HEARTBEAT_S)

    async def _produce(self, batches: Batches) -> None:
        async for batch in batches:
            if self._delivery.stop.is_set():
                break
            decisions = await self._ledger.claim(batch)
            # Every claimed record goes to the queue, even after a stop: the workers turn it
            # into a "not sent" outcome, so no claim is left without an outcome.
            for item, decision in zip(batch, decisions, strict=True):
                self._summary.decided(decision)
                if isinstance(item, Rejection):
                    self._progress.problem(item.location, f"invalid: {item.reason}")
                elif decision is Decision.SEND:
                    await self._work.put(item)
            self._progress.advance(len(batch))

    async def _worker(self) -> None:
        delivery = self._delivery
        while (item := await self._work.get()) is not None:
            if delivery.stop.is_set():
                outcome = delivery.not_sent(item, delivery.abort_reason or "run stopped")
            else:
                try:
                    outcome = await delivery.send(item)
                except Exception as exc:  # noqa: BLE001 - a bug must cost one record, not the run
                    # Whether its request went out is not known: reconciliation settles it.
                    message = f"internal error: {_what(exc)}"
                    outcome = Outcome(item.key, Status.UNKNOWN, 0, error_message=message)
            self._outcomes.put_nowait((item, outcome))

    async def _writer(self) -> None:
        done = False
        while not done:
            first = await self._outcomes.get()
            if first is None:
                return
            batch = [first]
            while not self._outcomes.empty() and len(batch) < _WRITE_BATCH:
                nxt = self._outcomes.get_nowait()
                if nxt is None:
                    done = True
                    break
                batch.append(nxt)
            await self._write(batch)

    async def _write(self, batch: list[tuple[Accepted, Outcome]]) -> None:
        try:
            await self._ledger.record([outcome for _, outcome in batch])
        except LedgerError as exc:
            # Unrecorded outcomes stay in_flight in the ledger, which is the truth we can tell.
            self._delivery.abort(str(exc))
            return
        for item, outcome in batch:
            self._summary.delivered(outcome)
            if outcome.attempts and outcome.error_message is not None:
                self._progress.problem(item.location, f"failed: {_describe(outcome)}")
        self._progress.set_postfix(
            sent=self._summary.sent,
            failed=self._summary.failed,
            limit=self._delivery.limit.limit,
        )


def _describe(outcome: Outcome) -> str:
    status = f"HTTP {outcome.http_status} " if outcome.http_status else ""
    code = f"(Twilio error {outcome.error_code}) " if outcome.error_code else ""
    return f"{status}{code}{outcome.error_message} after {outcome.attempts} attempt(s)"
