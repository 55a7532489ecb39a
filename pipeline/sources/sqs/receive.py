"""Receiving from SQS for :mod:`pipeline.sources.sqs.queue`: long-polling receivers that keep
a window of messages ahead of the run, and the visibility of every message held extended.

- **Receivers**: a few receives (ten messages each, SQS's most) in flight at all times, each
  a long poll of ``wait`` seconds, filling a buffer the source takes batches from: receiving
  overlaps with sending instead of waiting for the slowest receive of a round. They pause
  while the run holds a window of messages (one batch + 3 × concurrency, as RabbitMQ's
  prefetch): the stages hold that many at most, and a message received sooner would only sit
  invisible in memory.
- **Held** messages (received and not deleted: buffered, handed out, given back, or whose
  dead letter was refused) have their visibility extended every third of it, so a record
  still being sent is never received by another consumer. A message received again while
  held (a late extension) is not handed out twice: its newer receipt replaces the one held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipeline.logs import event
from pipeline.sources.base import SourceOptions
from pipeline.sources.sqs.link import ERRORS, Target, visibility
from pipeline.sources.sqs.publish import BATCH

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient
    from types_aiobotocore_sqs.type_defs import MessageTypeDef

_RECEIVERS = 8  # receives in flight together at most


def chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    return [items[i : i + BATCH] for i in range(0, len(items), BATCH)]


def receivers(options: SourceOptions) -> int:
    return max(1, min(_RECEIVERS, math.ceil(options.batch_size / BATCH)))


class Receiving:
    def __init__(self, target: Target, client: SQSClient, url: str, options: SourceOptions) -> None:
        self._t = target
        self._client = client
        self._url = url
        self._window = options.batch_size + 3 * options.concurrency
        self._count = receivers(options)
        self.visibility = visibility(options.claim_idle)
        self.held: dict[str, MessageTypeDef] = {}  # every message held, by message id
        self.buffer: asyncio.Queue[MessageTypeDef] = asyncio.Queue()
        self.lost: BaseException | None = None
        self._room = asyncio.Event()
        self._room.set()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [asyncio.create_task(self._receive()) for _ in range(self._count)]
            self._tasks.append(asyncio.create_task(self._extend()))

    def forget(self, message_id: str) -> MessageTypeDef | None:
        """A message no longer held (deleted); room for the receivers."""
        message = self.held.pop(message_id, None)
        if len(self.held) < self._window:
            self._room.set()
        return message

    async def _receive(self) -> None:
        while self.lost is None:
            await self._room.wait()
            try:
                answer = await self._client.receive_message(
                    QueueUrl=self._url,
                    MaxNumberOfMessages=BATCH,
                    WaitTimeSeconds=self._t.wait,
                    VisibilityTimeout=self.visibility,
                    MessageAttributeNames=["All"],
                    MessageSystemAttributeNames=["ApproximateReceiveCount", "MessageGroupId"],
                )
            except ERRORS as exc:
                self.lost = exc  # the source says it, and the run ends
                return
            for message in answer.get("Messages", []):
                known = message["MessageId"] in self.held
                self.held[message["MessageId"]] = message  # the newest receipt is the one
                if not known:
                    self.buffer.put_nowait(message)
            if len(self.held) >= self._window:
                self._room.clear()

    async def _extend(self) -> None:
        while True:
            await asyncio.sleep(self.visibility / 3)
            held = list(self.held.values())
            with contextlib.suppress(*ERRORS):
                answers = await asyncio.gather(
                    *(
                        self._client.change_message_visibility_batch(
                            QueueUrl=self._url,
                            Entries=[
                                {
                                    "Id": str(i),
                                    "ReceiptHandle": m["ReceiptHandle"],
                                    "VisibilityTimeout": self.visibility,
                                }
                                for i, m in enumerate(chunk)
                            ],
                        )
                        for chunk in chunks(held)
                    )
                )
                lapsed = sum(len(a.get("Failed", [])) for a in answers)
                if lapsed:
                    event(
                        logging.WARNING,
                        f"{self._t.shown}: the visibility of {lapsed} messages could not be "
                        "extended (received again elsewhere: the ledger keeps their records "
                        "from being sent twice)",
                        "visibility_lapsed",
                        messages=lapsed,
                    )

    async def stop_receiving(self) -> None:
        """No more receives (the extensions go on until :meth:`close`)."""
        for task in self._tasks[:-1]:
            task.cancel()
        for task in self._tasks[:-1]:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
