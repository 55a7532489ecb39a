"""RabbitMQ passes the broker contract (:mod:`brokers.contract`)."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import aio_pika
import pytest
from amqp_helpers import PORT, Msg, Queue, amqp_url, unique_queue
from pg_helpers import pg_schema

from brokers.contract import Broker, BrokerContract

__all__ = ["pg_schema"]  # a fixture, used by name
_FRAME_MAX = 131072  # RabbitMQ's default


class _Holder:
    """A consumer of the test's own, in a thread: takes ``count`` messages, never acks them."""

    def __init__(self, queue: str, count: int) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._connection = self._call(self._open(queue, count))

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _open(self, queue: str, count: int) -> aio_pika.abc.AbstractConnection:
        connection = await aio_pika.connect(amqp_url(queue), timeout=10)
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=count)
        got: list[object] = []

        async def take(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            got.append(message)  # and never acked

        declared = await channel.declare_queue(queue, passive=True)
        await declared.consume(take, no_ack=False)
        deadline = time.monotonic() + 30
        while len(got) < count:
            assert time.monotonic() < deadline, "the holder got no messages"
            await asyncio.sleep(0.01)
        return connection

    def die(self) -> None:
        self._call(self._connection.close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()


class RabbitBroker(Broker):
    name = "rabbitmq"
    takes_over_idle = False
    port = PORT

    def __init__(self, queue: Queue) -> None:
        self._q = queue
        self._holders: list[_Holder] = []

    def url(self, consumer: str, port: int | None = None) -> str:
        return amqp_url(self._q.name, port=port or PORT)

    def publish(self, bodies: Sequence[bytes]) -> None:
        self._q.publish([Msg(body, message_id=uuid.uuid4().hex) for body in bodies])

    def publish_poison(self) -> int:
        # Headers that fit in the producer's frame, but not with the dead letter's own: the
        # copy is written without them, and says so.
        big = "h" * (_FRAME_MAX - 600)
        self._q.publish([Msg(b"not json", message_id="big-headers", headers={"x-big": big})])
        return 1

    def hold(self, count: int, consumer: str) -> Callable[[], None]:
        holder = _Holder(self._q.name, count)
        self._holders.append(holder)
        return holder.die

    def refuse_dead_letters(self) -> None:
        self._q.declare(self._q.dead, {"x-max-length": 0, "x-overflow": "reject-publish"})

    def left(self) -> int:
        # Once every consumer is gone, what was not acked is ready again (the broker takes a
        # moment to see a killed worker's connection go).
        deadline = time.monotonic() + 30
        while (counts := self._counts())[1]:
            assert time.monotonic() < deadline, "consumers still attached"
            time.sleep(0.02)
        return counts[0]

    def _counts(self) -> tuple[int, int]:
        async def action(channel: aio_pika.abc.AbstractChannel) -> tuple[int, int]:
            queue = await channel.declare_queue(self._q.name, passive=True)
            result = queue.declaration_result
            return result.message_count or 0, result.consumer_count or 0

        async def run() -> tuple[int, int]:
            connection = await aio_pika.connect(amqp_url("x"), timeout=10)
            async with connection:
                return await action(await connection.channel())

        return asyncio.run(run())

    def dead_letters(self) -> list[dict[str, str]]:
        if self._q.ready(self._q.dead) < 0:
            return []
        return [
            {
                "reason": str((m.headers or {}).get("reason", "")),
                "truncated": str((m.headers or {}).get("truncated", "")),
            }
            for m in self._q.take_all(self._q.dead)
        ]


class TestRabbitMQContract(BrokerContract):
    @pytest.fixture
    def broker(self) -> Iterator[Broker]:
        for queue in unique_queue():
            yield RabbitBroker(queue)
