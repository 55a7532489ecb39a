"""RabbitMQ queues (aio-pika): a source for ``run`` and a destination for ``enqueue --to``.

``amqp://USER:PASS@HOST:PORT/VHOST?queue=NAME[&dead=NAME]`` (or ``amqps://``); any other query
parameter (``heartbeat``, ``name``...) is aio-pika's. One JSON object per message, keyed like the
CSV columns. Choices, and why:

- **A plain connection, not** ``connect_robust``: a robust connection reconnects silently and
  redeclares its consumer, so the run would go on while every delivery tag it holds has become
  invalid (acks on the new channel fail or ack the wrong message). A lost connection instead
  ends the run (exit 3) after every outcome is recorded; RabbitMQ requeues whatever was not
  acked, and the rerun's ledger skips what was sent.
- **Prefetch** = one batch + 3 × concurrency: the stages hold up to 2 × concurrency records in
  their work queue and concurrency on the wire, all unacked, while the next batch fills. If the
  window fills with records held for reconciliation (``unknown``) and the queue still has ready
  messages, a draining run widens it by a batch, else it would wait for acks that only come
  after it ends.
- **The queue** is declared passively, and created durable only if it does not exist: an
  existing queue is used as it is (quorum, TTL, length limits), and a consumer may start before
  its producers, as a Redis group is created when missing. ``NAME.dead`` likewise.
- **Location** ``amqp:QUEUE/MESSAGE-ID`` when the publisher set a ``message_id`` (``enqueue``
  sets the idempotency key): stable across redeliveries, so a rerun updates the same invalid
  row. Otherwise ``amqp:QUEUE/tag-N`` (the delivery tag: unique within one connection only).
- **Drain**: done once no delivery is buffered or held, a passive declare (on the consuming
  channel, so deliveries sent before its answer arrive before it) reports no ready message,
  and no other consumer is attached. AMQP tells no one which messages others hold unacked,
  only how many consumers there are, so a drain run that holds nothing cancels its consumer
  (it no longer counts) and keeps asking: a consumer still attached may hold messages, and
  if it dies they come back ready, and this run consumes again and takes them. A run that
  holds messages stays attached (even once its own reading ended, until it closes); its own
  unacked messages do not hold it up (their outcome decides). So the last holder ends first,
  then the others. A *following* run on the same queue always counts: a drain beside it ends
  only once it stops.
- **Released** messages (their record is uncertain: another worker holds it, or a killed one
  left it for reconciliation; see :mod:`pipeline.sources.release`) are held unacked for
  ``claim_idle`` seconds, then handed on again by this run, not requeued: a requeued message
  comes straight back (to us or another consumer) while the record is still uncertain.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
)
from aio_pika.exceptions import AMQPConnectionError

from pipeline.errors import SourceError
from pipeline.models import RawRecord
from pipeline.sources.amqp.acks import AckPlan
from pipeline.sources.amqp.dead import dead_letter, frame_max
from pipeline.sources.amqp.link import Target, open_channel, parse_url
from pipeline.sources.amqp.publish import AmqpPublisher, open_publisher
from pipeline.sources.base import Done, SourceOptions
from pipeline.sources.copies import copied, raise_problems
from pipeline.sources.decode import json_object
from pipeline.sources.release import Holding

#: The largest message body read as a record; a larger one is dead-lettered unparsed.
MESSAGE_LIMIT = 1024 * 1024
_MAX_PREFETCH = 65535  # AMQP's prefetch-count is 16 bits
_IDLE = 0.2  # seconds without a delivery before a drain run asks the broker what is left


@dataclass(frozen=True, slots=True)
class _Handle:
    message: AbstractIncomingMessage
    location: str


def _tag(message: AbstractIncomingMessage) -> int:
    tag = message.delivery_tag
    assert tag is not None  # consumed with manual acks: every delivery has its tag
    return tag


def _ident(message: AbstractIncomingMessage) -> str:
    mid = message.message_id
    if mid and len(mid) <= 256 and mid.isprintable():
        return mid
    return f"tag-{message.delivery_tag}"


def to_record(queue: str, message: AbstractIncomingMessage) -> RawRecord:
    """A message as a raw record: parse errors (and a huge body) become the record's error."""
    location = f"amqp:{queue}/{_ident(message)}"
    handle = _Handle(message, location)
    size = len(message.body)
    if size > MESSAGE_LIMIT:
        reason = f"message of {size} bytes, more than {MESSAGE_LIMIT} (the limit)"
        return RawRecord(location, {}, reason, handle)
    return json_object(location, message.body, handle=handle)


class AmqpSource:
    """Consumes one queue with manual acks; see the module's docstring for the choices."""

    def __init__(
        self,
        target: Target,
        connection: AbstractConnection,
        channel: AbstractChannel,
        options: SourceOptions,
    ) -> None:
        self.name = target.shown
        self._target = target
        self._connection = connection
        self._channel = channel
        self._options = options
        self._window = min(options.batch_size + 3 * options.concurrency, _MAX_PREFETCH)
        self._buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        self._held: Holding[AbstractIncomingMessage] = Holding(options.claim_idle)
        self._unacked = 0  # delivered to this consumer and not acked yet
        self._plan = AckPlan()
        self._lost: str | None = None
        self._tag: str | None = None
        self._closing = False
        self._waiting: str | None = None  # what a drain waits for, for the progress line
        connection.close_callbacks.add(self._on_close)
        channel.close_callbacks.add(self._on_close)

    def _on_close(self, _: object, exc: BaseException | None = None) -> None:
        if not self._closing and self._lost is None:
            self._lost = self._target.failure(exc) if exc is not None else "closed"

    async def _deliver(self, message: AbstractIncomingMessage) -> None:
        self._unacked += 1
        self._plan.delivered(_tag(message))
        self._buffer.put_nowait(message)

    def _check(self) -> None:
        if self._lost is not None:
            raise SourceError(f"connection to the broker lost ({self._lost})")

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[list[RawRecord]]:
        queue = await self._channel.get_queue(self._target.queue, ensure=False)
        await self._consume(queue)
        try:
            while not stop.is_set():
                self._check()
                for message in self._held.due():
                    self._buffer.put_nowait(message)
                batch = await self._take()
                if batch:
                    self._waiting = None
                    yield [to_record(self._target.queue, m) for m in batch]
                elif self._options.drain and await self._drained(queue):
                    return
        finally:
            # What is still buffered or held stays unacked: the broker requeues it when we close.
            # A run still holding messages (its unknown outcomes, settled now) stays a consumer
            # until it closes, so that other drain runs wait for what it may give back.
            if self._lost is None and self._tag is not None and not self._unacked:
                with contextlib.suppress(Exception):
                    await queue.cancel(self._tag)

    async def _consume(self, queue: AbstractQueue) -> None:
        # RabbitMQ applies a (per-consumer) prefetch to consumers started after it is set.
        await self._channel.set_qos(prefetch_count=self._window)
        self._tag = await queue.consume(self._deliver, no_ack=False)

    async def _widen(self, queue: AbstractQueue) -> None:
        """A bigger window: a new consumer (deliveries of the old one stay ours to ack)."""
        self._window = min(self._window + self._options.batch_size, _MAX_PREFETCH)
        # The new consumer first: the consumer count never drops to 0 while this run holds
        # messages (other drain runs would take that for "nobody holds any").
        old = self._tag
        await self._consume(queue)
        if old is not None:
            await queue.cancel(old)

    async def _take(self) -> list[AbstractIncomingMessage]:
        try:
            first = await asyncio.wait_for(self._buffer.get(), _IDLE)
        except TimeoutError:
            return []
        batch = [first]
        while len(batch) < self._options.batch_size and not self._buffer.empty():
            batch.append(self._buffer.get_nowait())
        return batch

    async def _drained(self, queue: AbstractQueue) -> bool:
        underlay = await self._channel.get_underlay_channel()
        declared = await underlay.queue_declare(self._target.queue, passive=True)
        # Deliveries that reached us before that answer are handed on in tasks: let them run.
        for _ in range(4):
            await asyncio.sleep(0)
        ready = declared.message_count or 0
        others = (declared.consumer_count or 0) - (self._tag is not None)
        if ready and self._tag is None:
            await self._consume(queue)  # messages came back (a consumer went): take them
            return False
        if ready and self._unacked >= self._window and self._window < _MAX_PREFETCH:
            await self._widen(queue)
        if ready or not self._buffer.empty() or self._held:
            self._waiting = (
                f"{len(self._held)} messages given back (uncertain records), offered again "
                f"every {self._options.claim_idle:g} s until reconciliation settles them"
                if self._held and not ready
                else None
            )
            return False
        if self._tag is not None and not self._unacked:
            # Holding nothing, this run stops counting as a consumer: the count then tells
            # the other drain runs who still holds messages (see the module's docstring).
            await queue.cancel(self._tag)
            self._tag = None
        self._waiting = (
            f"{others} other consumer(s) of {self._target.queue} (messages they hold come "
            "back if they die)"
            if others > 0
            else None
        )
        return others <= 0

    def waiting(self) -> str | None:
        return self._waiting

    def release(self, handles: Sequence[object]) -> None:
        self._held.hold(h.message for h in handles if isinstance(h, _Handle))

    async def ack(self, done: Sequence[Done]) -> None:
        """Plain acks at once; a dead letter's original only once its copy is confirmed. A
        copy the broker refuses leaves its entry unacked (said, the run goes on)."""
        self._check()
        plain = [d.handle for d in done if d.dead_letter is None]
        dead = [d for d in done if d.dead_letter is not None]
        copies = await asyncio.gather(*(self._dead_letter(d) for d in dead), return_exceptions=True)
        confirmed = [d.handle for d, r in zip(dead, copies, strict=True) if copied(r)]
        try:
            await self._ack([h for h in [*plain, *confirmed] if isinstance(h, _Handle)])
        except Exception as exc:  # noqa: BLE001 - say what happened, without secrets
            if self._connection.is_closed or isinstance(exc, AMQPConnectionError | OSError):
                self._on_close(self._connection, exc)  # may come before the close callback
                self._check()
            raise SourceError(f"ack failed: {self._target.failure(exc)}") from None
        self._check()  # a copy that failed because the connection went: the run ends
        located = [
            (d.handle.location, r)
            for d, r in zip(dead, copies, strict=True)
            if isinstance(d.handle, _Handle)
        ]
        raise_problems(
            located,
            self._target.dead,
            self._target.failure,
            "the message stays on its queue, unacked",
        )

    async def _ack(self, handles: list[_Handle]) -> None:
        by_tag = {_tag(h.message): h.message for h in handles}
        upto, singles = self._plan.plan(by_tag)
        if upto is not None:
            await by_tag[upto].ack(multiple=True)
        for tag in singles:
            await by_tag[tag].ack()
        self._unacked -= len(by_tag)

    async def _dead_letter(self, done: Done) -> str | None:
        """Publish the copy; what was left out of it (None: whole)."""
        handle = done.handle
        assert isinstance(handle, _Handle)
        assert done.dead_letter is not None
        limit = frame_max(self._connection.transport)
        copy, cut = dead_letter(
            handle.message, done.dead_letter, handle.location, self._target.queue, limit
        )
        await self._channel.default_exchange.publish(copy, routing_key=self._target.dead)
        return cut

    async def close(self) -> None:
        self._closing = True
        with contextlib.suppress(Exception):
            await self._connection.close()


async def open_source(url: str, options: SourceOptions) -> AmqpSource:
    target = parse_url(url)
    connection, channel = await open_channel(target, target.queue, target.dead)
    return AmqpSource(target, connection, channel, options)


__all__ = ["AmqpPublisher", "AmqpSource", "open_publisher", "open_source"]
