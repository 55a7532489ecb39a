"""The stages between reading and the ledger: batches in, outcomes recorded.

    batches of validated records -> Ledger.claim -> work queue -> N workers (Delivery)
        -> outcome queue -> one writer (group commit into the ledger)

The work queue is bounded (backpressure: reading never runs far ahead of sending); the outcome
queue is drained in whatever batch has built up while the previous commit ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TypeAlias

from pipeline.delivery import Delivery
from pipeline.errors import LedgerError, PipelineError
from pipeline.ledger import Decision, Ledger
from pipeline.models import Accepted, Outcome, RawRecord, Rejection, Status
from pipeline.reconcile import HEARTBEAT_S
from pipeline.report import Progress, Summary
from pipeline.sources import Source, read_off_loop
from pipeline.validate import Validator

Item: TypeAlias = Accepted | Rejection
Batches: TypeAlias = AsyncIterator[list[Item]]
_WRITE_BATCH = 2000


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


async def source_batches(sources: Sequence[Source], validator: Validator, size: int) -> Batches:
    # Reading and validating run in a worker thread: a blocking read (a slow stdin, a large
    # gzip block) must not stall the event loop that drives the requests; and a read that
    # never returns (a FIFO without a writer) must not keep a stopped run from ending.
    for source in sources:
        records = source.records()
        try:
            more = True
            while more:
                batch, more = await read_off_loop(_take, source, records, validator, size)
                if batch:
                    yield batch
        finally:
            # A read still blocked in its thread keeps the generator running: leave it there.
            with contextlib.suppress(ValueError):
                records.close()  # type: ignore[attr-defined]


class Stages:
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
