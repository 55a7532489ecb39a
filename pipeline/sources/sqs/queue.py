"""Amazon SQS (aiobotocore): a source for ``run`` and a destination for ``enqueue --to``.

``sqs://QUEUE-NAME?region=REGION[&endpoint=URL][&dead=QUEUE-NAME][&wait=SECONDS]``
(``QUEUE.fifo`` for a FIFO queue). One JSON object per message body, keyed like the CSV
columns. Choices, and why:

- **Long polling**: each receive waits up to ``wait`` seconds (default 1, at most 20) for
  messages, so an idle queue costs one call a ``wait``, and a stop is seen within it. A few
  receives are in flight at all times (:mod:`pipeline.sources.sqs.receive`).
- **Visibility**: a message received is invisible to other consumers for ``--claim-idle``
  (in whole seconds, at least 1): a dead worker's messages come back after it. This run
  extends the visibility of every message it holds every third of it, so a record still
  being sent is never received by another consumer.
- **Delete only after the ledger** holds the outcome (DeleteMessageBatch, ten at a time); a
  dead letter is an explicit copy with the reason (:mod:`pipeline.sources.sqs.dead`) sent to
  ``dead=`` (default ``QUEUE-dead``, or ``QUEUE-dead.fifo``), created when missing, before the
  original is deleted.
- **FIFO queues**: the dead letter keeps the message's group, and its message id is the
  de-duplication id (a copy made twice by two workers is stored once).
- **Location** ``sqs:QUEUE/MESSAGE-ID`` (the same on every receive).
- **Drain**: done once a receive finds nothing and the queue's attributes count no visible or
  delayed message and no message in flight but those this run holds: the others' are waited
  for (a dead worker's become visible after the visibility timeout and are taken). SQS's
  counts are approximate (eventually consistent, within about a minute on AWS).
- **Released** messages (their record is uncertain, see :mod:`pipeline.sources.release`) are
  held for ``claim_idle`` seconds, their visibility extended, then handed on again by this
  run: each receive counts towards a redrive policy's ``maxReceiveCount``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from pipeline.errors import SourceError
from pipeline.models import RawRecord
from pipeline.sources.base import Done, SourceOptions
from pipeline.sources.copies import raise_problems
from pipeline.sources.decode import json_object
from pipeline.sources.release import Holding
from pipeline.sources.sqs.dead import dead_letter
from pipeline.sources.sqs.link import ERRORS, Link, Target, parse_url
from pipeline.sources.sqs.publish import SqsPublisher, fifo_id, open_publisher
from pipeline.sources.sqs.receive import Receiving, chunks, receivers

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

#: The largest message body read as a record; a larger one is dead-lettered unparsed.
MESSAGE_LIMIT = 1024 * 1024
_COUNTS = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


@dataclass(frozen=True, slots=True)
class _Handle:
    id: str  # the message id: the message, whichever receipt of it is held
    location: str


def to_record(queue: str, message: MessageTypeDef) -> RawRecord:
    location = f"sqs:{queue}/{message['MessageId']}"
    handle = _Handle(message["MessageId"], location)
    body = message.get("Body", "").encode("utf-8", "surrogatepass")
    if len(body) > MESSAGE_LIMIT:
        reason = f"message of {len(body)} bytes, more than {MESSAGE_LIMIT} (the limit)"
        return RawRecord(location, {}, reason, handle)
    return json_object(location, body, handle=handle)


class SqsSource:
    """Receives from one queue; see the module's docstring for the choices."""

    def __init__(
        self, link: Link, client: SQSClient, urls: tuple[str, str], options: SourceOptions,
        dead_limit: int,
    ) -> None:  # fmt: skip
        self._link = link
        self._t: Target = link.target
        self.name = self._t.shown
        self._client = client
        self._url, self._dead_url = urls
        self._options = options
        self._dead_limit = dead_limit
        self._r = Receiving(self._t, client, self._url, options)
        self._given_back: Holding[str] = Holding(options.claim_idle)
        self._waiting: str | None = None

    def _gone(self, exc: BaseException) -> SourceError:
        return SourceError(f"{self.name}: SQS went away: {self._t.failure(exc)}")

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[list[RawRecord]]:
        self._r.start()
        try:
            while not stop.is_set():
                if self._r.lost is not None:
                    raise self._gone(self._r.lost)
                again = [self._r.held[i] for i in self._given_back.due() if i in self._r.held]
                if again:
                    yield [to_record(self._t.queue, m) for m in again]
                    continue
                batch = await self._take()
                if batch:
                    self._waiting = None
                    yield [to_record(self._t.queue, m) for m in batch]
                elif self._options.drain and await self._drained():
                    return
        finally:
            await self._r.stop_receiving()

    async def _take(self) -> list[MessageTypeDef]:
        # A little over one long poll: a receive that found nothing has answered by then.
        try:
            first = await asyncio.wait_for(self._r.buffer.get(), self._t.wait + 0.25)
        except TimeoutError:
            return []
        batch = [first]
        while len(batch) < self._options.batch_size and not self._r.buffer.empty():
            batch.append(self._r.buffer.get_nowait())
        return batch

    async def _counts(self) -> tuple[int, int, int]:
        answer = await self._client.get_queue_attributes(
            QueueUrl=self._url,
            AttributeNames=_COUNTS,  # type: ignore[arg-type]
        )
        values: dict[Any, str] = dict(answer.get("Attributes", {}))
        visible, invisible, delayed = (int(values.get(name, "0")) for name in _COUNTS)
        return visible, invisible, delayed

    async def _drained(self) -> bool:
        if self._given_back:
            self._waiting = (
                f"{len(self._given_back)} messages given back (uncertain records), offered "
                f"again every {self._options.claim_idle:g} s until reconciliation settles them"
            )
            return False
        try:
            visible, invisible, delayed = await self._counts()
        except ERRORS as exc:
            raise self._gone(exc) from None
        if visible or delayed or not self._r.buffer.empty():
            return False  # the next receive takes them (delayed ones: once they show)
        others = invisible - len(self._r.held)
        self._waiting = (
            f"{others} messages in flight with other consumers of {self._t.queue} (visible "
            f"again {self._r.visibility} s after the last extension of the one holding them)"
            if others > 0
            else None
        )
        return others <= 0

    def waiting(self) -> str | None:
        return self._waiting

    async def depth(self) -> tuple[int | None, int | None]:
        visible, invisible, delayed = await self._counts()
        return visible + delayed, invisible

    def release(self, handles: Sequence[object]) -> None:
        self._given_back.hold(h.id for h in handles if isinstance(h, _Handle))

    async def ack(self, done: Sequence[Done]) -> None:
        """Deletes at once; a dead letter's original only once its copy is sent. A copy SQS
        refuses leaves its message held (said, the run goes on)."""
        handles = [d for d in done if isinstance(d.handle, _Handle) and d.handle.id in self._r.held]
        dead = [d for d in handles if d.dead_letter is not None]
        copies = await asyncio.gather(*(self._dead_letter(d) for d in dead), return_exceptions=True)
        gone = [r for r in copies if isinstance(r, ERRORS) and not isinstance(r, ClientError)]
        if gone:  # the service itself is unreachable: the run ends
            raise self._gone(gone[0])
        refused = {id(d) for d, r in zip(dead, copies, strict=True) if isinstance(r, BaseException)}
        settled = [d.handle for d in handles if id(d) not in refused]
        await self._delete([h for h in settled if isinstance(h, _Handle)])
        located = [
            (d.handle.location, r)
            for d, r in zip(dead, copies, strict=True)
            if isinstance(d.handle, _Handle)
        ]
        raise_problems(located, self._t.dead, self._t.failure, "the message stays on its queue")

    async def _delete(self, handles: list[_Handle]) -> None:
        messages = [m for h in handles if (m := self._r.forget(h.id)) is not None]
        try:
            await asyncio.gather(
                *(
                    self._client.delete_message_batch(
                        QueueUrl=self._url,
                        Entries=[
                            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                            for i, m in enumerate(chunk)
                        ],
                    )
                    for chunk in chunks(messages)
                )
            )
        except ERRORS as exc:
            raise self._gone(exc) from None
        # An entry that failed (its receipt lapsed and another consumer received it again)
        # is that consumer's now: the ledger has its outcome, so it skips and deletes it.

    async def _dead_letter(self, done: Done) -> str | None:
        """Send the copy; what was left out of it (None: whole)."""
        handle = done.handle
        assert isinstance(handle, _Handle)
        assert done.dead_letter is not None
        message = self._r.held[handle.id]
        copy = dead_letter(
            message.get("Body", ""), dict(message.get("MessageAttributes", {})),
            done.dead_letter, handle.location, self._t.queue, self._dead_limit,
        )  # fmt: skip
        extra: dict[str, str] = {}
        if self._t.fifo:
            group = message.get("Attributes", {}).get("MessageGroupId") or "dead-letters"
            extra = {"MessageGroupId": group, "MessageDeduplicationId": fifo_id(handle.id)}
        await self._client.send_message(
            QueueUrl=self._dead_url,
            MessageBody=copy.body,
            MessageAttributes=copy.attributes,
            **extra,  # type: ignore[arg-type]
        )
        return copy.truncated

    async def close(self) -> None:
        await self._r.close()
        await self._link.close()


async def open_source(url: str, options: SourceOptions) -> SqsSource:
    """The client; the queue and the dead letters' queue, created if missing."""
    link = Link(parse_url(url))
    client = await link.open(connections=receivers(options) + 20)  # deletes, extensions too
    try:
        queue = await link.queue_url(link.target.queue, create=True)
        dead = await link.queue_url(link.target.dead, create=True)
        answer = await client.get_queue_attributes(
            QueueUrl=dead, AttributeNames=["MaximumMessageSize"]
        )
    except ERRORS as exc:
        await link.close()
        raise SourceError(f"{link.target.shown}: {link.target.failure(exc)}") from None
    except BaseException:
        await link.close()
        raise
    limit = max(1024, int(answer.get("Attributes", {}).get("MaximumMessageSize", "262144")))
    return SqsSource(link, client, (queue, dead), options, limit)


__all__ = ["SqsPublisher", "SqsSource", "open_publisher", "open_source"]
