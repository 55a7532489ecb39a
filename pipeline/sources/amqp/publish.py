"""``enqueue --to amqp://...``: records published to a RabbitMQ queue, each confirmed."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection

from pipeline.models import Accepted
from pipeline.sources.amqp.link import Target, open_channel, parse_url
from pipeline.sources.base import SourceOptions


class AmqpPublisher:
    """Publishes records, persistent, each confirmed by the broker; a batch's publishes are in
    flight together (pipelined), not one confirm after the other."""

    def __init__(
        self, target: Target, connection: AbstractConnection, channel: AbstractChannel
    ) -> None:
        self._target = target
        self._connection = connection
        self._channel = channel

    async def publish(self, batch: Sequence[Accepted]) -> None:
        exchange = self._channel.default_exchange
        messages = [
            aio_pika.Message(
                json.dumps(
                    {**item.record.model_dump(exclude_none=True), "key": item.key},
                    ensure_ascii=False,
                ).encode("utf-8"),
                content_type="application/json",
                message_id=item.key,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            for item in batch
        ]
        # mandatory: a message the broker cannot route (the queue deleted meanwhile) fails
        # the publish instead of vanishing.
        await asyncio.gather(
            *(exchange.publish(m, routing_key=self._target.queue, mandatory=True) for m in messages)
        )

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._connection.close()


async def open_publisher(url: str, options: SourceOptions) -> AmqpPublisher:
    target = parse_url(url)
    connection, channel = await open_channel(target, target.queue)
    return AmqpPublisher(target, connection, channel)
