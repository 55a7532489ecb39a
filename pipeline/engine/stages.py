"""The stages between reading and the ledger: batches in, outcomes recorded, sources acked.

    batches of validated records -> Ledger.claim -> claimed batches -> N workers (Delivery)
        -> outcome queue -> one writer (group commit into the ledger) -> acks

At most two claimed batches are unsent (backpressure: reading never runs far ahead of
sending); the outcome queue is drained in whatever batch has built up while the previous
commit ran. A record is acked (:mod:`pipeline.engine.acks`) only once the ledger durably holds its
final state. Reading and validating are :mod:`pipeline.engine.reading`'s.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Sequence
from typing import TypeAlias

from pipeline.delivery.delivery import Delivery
from pipeline.engine.acks import Acks
from pipeline.engine.control import RunControl
from pipeline.engine.reading import closing, what
from pipeline.engine.spares import WORKERS_PER_SLOT as WORKERS_PER_SLOT
from pipeline.engine.spares import Spares
from pipeline.errors import LedgerError, PipelineError
from pipeline.ledger import Decision, Ledger
from pipeline.models import Accepted, Outcome, Rejection, Skipped, Status
from pipeline.observe.problems import Progress
from pipeline.observe.summary import Summary

Item: TypeAlias = Accepted | Rejection | Skipped
Batches: TypeAlias = AsyncIterator[list[Item]]
_WRITE_BATCH = 2000
#: How long the outcome writer lets outcomes gather before a commit.
_GATHER_S = 0.02
#: Decisions that are final at the claim commit: their records are acked right after it.
_FINAL_AT_CLAIM = (Decision.SKIP, Decision.DUPLICATE, Decision.INVALID)


async def claim(ledger: Ledger, batch: Sequence[Item]) -> list[Decision]:
    """The ledger's decisions on ``batch``, in order. A Skipped record needs no claim: the
    ledger holds it as sent."""
    claimed = [item for item in batch if not isinstance(item, Skipped)]
    if not claimed:  # a rerun's batch, all of it sent before
        return [Decision.SKIP] * len(batch)
    decided = iter(await ledger.claim(claimed))
    return [Decision.SKIP if type(i) is Skipped else next(decided) for i in batch]


class Stages:
    def __init__(
        self,
        ledger: Ledger,
        delivery: Delivery,
        control: RunControl,
        summary: Summary,
        progress: Progress,
        concurrency: int,
        *,
        release: bool = False,
        spares: Spares | None = None,
    ) -> None:
        """``release``: give uncertain queue entries back to be offered again (the run
        settles other runs' uncertain records periodically, so they do get settled).
        ``spares``: the workers, which the delivery's ``on_wait`` tells of its waits."""
        self._ledger = ledger
        self._release = release
        self._delivery = delivery
        self._control = control
        self._summary = summary
        self._progress = progress
        self._concurrency = concurrency
        self.acks = Acks(control, progress.problem, self._refused_copies)
        self._outcomes: asyncio.Queue[tuple[Accepted, Outcome] | None] = asyncio.Queue()
        # Claimed batches on their way to the workers: one may wait here, so that the next
        # batch is read, validated and claimed while this one is sent (the workers never run
        # dry at a batch boundary). The workers take records from ``_ready``, and the next
        # batch only once it is empty: at most two batches are claimed and unsent.
        self._claimed: asyncio.Queue[list[Accepted] | None] = asyncio.Queue(maxsize=1)
        self._ready: collections.deque[Accepted] = collections.deque()
        self._taking = asyncio.Lock()
        self._taken = asyncio.Event()  # a worker took a batch from ``_claimed``
        self._spares = spares or Spares(concurrency)

    async def run(self, batches: Batches) -> None:
        spares = self._spares
        async with asyncio.TaskGroup() as group:
            with spares.spawning(lambda: group.create_task(self._worker())):
                for _ in range(self._concurrency):
                    spares.start()
                writer = group.create_task(self._writer())
                try:
                    await self._produce(batches)
                except PipelineError as exc:
                    self._control.abort(str(exc))
                await self._claimed.put(None)  # the end: each worker passes it on to the next
                while spares.workers:  # spares may start meanwhile
                    await asyncio.wait(set(spares.workers))
            self._outcomes.put_nowait(None)
            await writer

    def _refused_copies(self, count: int) -> None:
        self._summary.dead_letters_refused += count

    async def _produce(self, batches: Batches) -> None:
        async with closing(batches):
            async for batch in batches:
                # Claimed once the batch before was taken by the workers, not before: at most
                # two claimed batches are unsent (one going out, one waiting), and a stop
                # meanwhile (a 401, a signal) leaves this one unclaimed.
                while self._claimed.full():
                    self._taken.clear()
                    await self._taken.wait()
                if self._control.stopped:
                    # Read but not claimed: not acked, so a queue delivers it again; counted,
                    # so the summary's unacked entries match what the queue holds pending.
                    self._summary.read_ahead += sum(1 for i in batch if i.handle is not None)
                    break
                await self._claim(batch)

    async def _claim(self, batch: list[Item]) -> None:
        decisions = await claim(self._ledger, batch)
        finished: list[tuple[object | None, str | None]] = []
        released: list[object | None] = []
        skipped = 0
        for item, decision in zip(batch, decisions, strict=True):
            if type(item) is Skipped:  # most of a rerun: counted at once, below
                skipped += 1
                finished.append((item.handle, None))
                continue
            if self._released(decision, item.handle):
                # Not counted: it comes back, and is counted by the decision it gets then.
                released.append(item.handle)
                continue
            self._summary.decided(decision, item.reason if isinstance(item, Rejection) else None)
            if isinstance(item, Rejection):
                self._progress.problem(item.location, f"invalid: {item.reason}")
                finished.append((item.handle, f"invalid: {item.reason}"))
            elif decision in _FINAL_AT_CLAIM:
                finished.append((item.handle, None))
        self._summary.skipped_earlier(skipped)
        await self.acks.done(finished)
        self.acks.release(released)
        # Every claimed record goes to the queue, even after a stop: the workers turn it
        # into a "not sent" outcome, so no claim is left without an outcome.
        send = [item for item, d in zip(batch, decisions, strict=True) if d is Decision.SEND]
        self._summary.note_assistants(i.record.assistant_id for i in send if type(i) is Accepted)
        await self._claimed.put(send)  # type: ignore[arg-type] # only Accepted are SEND

    async def _next(self) -> Accepted | None:
        """The next claimed record, batch after batch, every one of them; None at the end."""
        ready = self._ready
        while not ready:
            # One worker takes the next batch; the others find it in ``ready`` (not a batch
            # each, which would claim a third one ahead).
            async with self._taking:
                if ready:
                    break
                claimed = await self._claimed.get()
                self._taken.set()
                if claimed is None:
                    self._claimed.put_nowait(None)  # room: this worker just took it
                    return None
                # One step of the loop before these go: the reader, asked for the next batch
                # as this one was handed over, reads first; a source that fails there stops
                # the run before its last batch is sent (and acked on a broken connection).
                await asyncio.sleep(0)
                ready.extend(claimed)
        return ready.popleft()

    def stop_releasing(self) -> None:
        """Uncertain records can no longer be settled by this run (its reconciliation
        failed): from now on they are counted as unknown, and their entries, unacked, wait
        for the next run; the released ones do so once they come back."""
        self._release = False

    def _released(self, decision: Decision, handle: object | None) -> bool:
        """An uncertain record's entry is given back when its source can offer it again,
        and the run settles uncertain records (else it would only come back uncertain)."""
        return decision is Decision.UNCERTAIN and self._release and self.acks.releasable(handle)

    async def _worker(self) -> None:
        self._spares.active += 1
        try:
            await self._deliver()
        finally:
            self._spares.active -= 1
            self._spares.workers.discard(asyncio.current_task())

    async def _deliver(self) -> None:
        delivery, control = self._delivery, self._control
        # A spare ends once the waits it stood in for are over.
        while not self._spares.surplus:
            item = await self._next()
            if item is None:
                return
            if control.stopped:
                outcome = delivery.not_sent(item, control.reason or "run stopped", stopped=True)
            else:
                try:
                    outcome = await delivery.send(item)
                except Exception as exc:  # noqa: BLE001 - a bug must cost one record, not the run
                    # Whether its request went out is not known: reconciliation settles it.
                    message = f"internal error: {what(exc)}"
                    outcome = Outcome(item.key, Status.UNKNOWN, 0, error_message=message)
            self._outcomes.put_nowait((item, outcome))

    async def _writer(self) -> None:
        done = False
        while not done:
            first = await self._outcomes.get()
            if first is None:
                return
            if self._outcomes.qsize() < _WRITE_BATCH:
                # Group commit: each commit waits for the disk (synchronous=FULL), and costs
                # about as much CPU as the rows it writes; let a few milliseconds of outcomes
                # gather first. Only acks wait on it: a crash meanwhile leaves these records
                # in_flight, and reconciliation settles them, as for any crash.
                await asyncio.sleep(_GATHER_S)
            batch = [first]
            while not self._outcomes.empty() and len(batch) < _WRITE_BATCH:
                nxt = self._outcomes.get_nowait()
                if nxt is None:
                    done = True
                    break
                batch.append(nxt)
            await self._write(batch)

    async def _write(self, batch: list[tuple[Accepted, Outcome]]) -> None:
        if self._control.lease_lost:
            # Not sent, and no longer this run's to write: left in flight for the others.
            batch = [(i, o) for i, o in batch if not self._stopped_before_sending(o)]
        try:
            refused = await self._ledger.record([outcome for _, outcome in batch])
        except LedgerError as exc:
            # Unrecorded outcomes stay in_flight in the ledger, which is the truth we can tell.
            self._control.abort(str(exc))
            return
        finished: list[tuple[object | None, str | None]] = []
        for item, outcome in batch:
            if outcome.key in refused:
                self._refused(item, outcome)
                continue
            if self._counted_apart(outcome):
                continue
            self._summary.delivered(outcome)
            if outcome.attempts and outcome.error_message is not None:
                self._progress.problem(item.location, _logged(outcome))
            if outcome.status is Status.UNKNOWN:
                self.acks.hold(item.key, item.handle)
            elif outcome.status is Status.SENT:
                finished.append((item.handle, None))
            elif not self._stopped_before_sending(outcome):
                finished.append((item.handle, f"failed: {_describe(outcome)}"))
        await self.acks.done(finished)

    def _counted_apart(self, outcome: Outcome) -> bool:
        """Not sent because the run stopped: no failure of the record, and never acked."""
        if self._control.ended_normally and self._stopped_before_sending(outcome):
            # A service's normal end: left on the queue for later.
            self._summary.released += 1
            return True
        if outcome.stopped:
            # An interrupted or aborted run: the rerun (or replay) sends it.
            self._summary.stopped_records += 1
            return True
        return False

    def _refused(self, item: Accepted, outcome: Outcome) -> None:
        """The ledger refused the outcome: the record is no longer this run's claim (its lease
        ran out and another worker settled or took it). Counted, never acked: the entry goes
        back to the queue, whose next reader finds the ledger's state."""
        self._summary.fenced += 1
        self._progress.problem(
            item.location,
            f"outcome not recorded ({outcome.status.value}): the record is no longer this "
            "worker's claim (its lease ran out; another worker settled it)",
        )

    def _stopped_before_sending(self, outcome: Outcome) -> bool:
        """A "not sent" because the run stopped is no final state: the entry is not acked, so
        the queue delivers it again."""
        message = outcome.error_message or ""
        return self._control.stopped and message.startswith("not sent")


def _logged(outcome: Outcome) -> str:
    """A problem line that says what the ledger holds: an ``unknown`` record is no failure
    (it may be stored; reconciliation settles it)."""
    if outcome.status is Status.UNKNOWN:
        return f"unknown (may be stored; reconcile settles it): {_describe(outcome)}"
    return f"failed: {_describe(outcome)}"


def _describe(outcome: Outcome) -> str:
    status = f"HTTP {outcome.http_status} " if outcome.http_status else ""
    code = f"(Twilio error {outcome.error_code}) " if outcome.error_code else ""
    return f"{status}{code}{outcome.error_message} after {outcome.attempts} attempt(s)"
