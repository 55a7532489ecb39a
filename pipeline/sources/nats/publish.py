"""``enqueue --to nats://...``: records published to a JetStream subject, each confirmed by
the stream, with the idempotency key as ``Nats-Msg-Id``: JetStream drops a message whose id
it has seen within the stream's duplicate window (2 minutes by default), so enqueuing the
same file twice within it stores each record once (and the ledger skips any later copy)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence

from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext

from pipeline.errors import AbortedError
from pipeline.models import Accepted
from pipeline.sources.base import SourceOptions
from pipeline.sources.nats.link import API_TIMEOUT, Target, open_jetstream, parse_url


class NatsPublisher:
    """A batch's publishes are in flight together (their acks awaited at once)."""

    def __init__(self, target: Target, connection: Client, js: JetStreamContext) -> None:
        self._target = target
        self._connection = connection
        self._js = js
        self.published = 0
        self.duplicates = 0  # dropped by JetStream as already stored (same message id)

    async def publish(self, batch: Sequence[Accepted]) -> None:
        futures = []
        try:
            for item in batch:
                body = {**item.record.model_dump(exclude_none=True), "key": item.key}
                futures.append(
                    await self._js.publish_async(
                        self._target.subject,
                        json.dumps(body, ensure_ascii=False).encode("utf-8"),
                        headers={"Nats-Msg-Id": item.key},
                    )
                )
            acks = await asyncio.wait_for(asyncio.gather(*futures), API_TIMEOUT)
        except (NatsError, TimeoutError, OSError) as exc:  # mid-run: exit 3, one line
            for future in futures:
                future.cancel()
            raise AbortedError(
                f"{self._target.shown}: publish failed: {self._target.failure(exc)}"
            ) from None
        self.published += len(batch)
        self.duplicates += sum(1 for ack in acks if ack.duplicate)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._connection.close()


async def open_publisher(url: str, options: SourceOptions) -> NatsPublisher:
    target = parse_url(url, need_consumer=False)
    connection, js, _ = await open_jetstream(target)
    return NatsPublisher(target, connection, js)
