"""The NATS source's pull requests (:mod:`pipeline.sources.nats.pull`) against the real server:
a batch costs a read or two, nothing delivered is dropped between reads, what was not taken
goes back at once when the reader stops, and an idle read ends with its request."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig
from nats_helpers import HOST, PORT
from redis_helpers import unavailable

from pipeline.sources.nats.pull import Puller


@dataclass
class Consumer:
    """A stream of the test's own with a durable consumer ``c``, and readers of it."""

    connection: Client
    stream: str
    readers: list[Puller] = field(default_factory=list)

    async def reader(self) -> Puller:
        puller = Puller(self.connection, self.stream, "c")
        await puller.start()
        self.readers.append(puller)
        return puller

    async def publish(self, count: int, start: int = 0) -> None:
        js = self.connection.jetstream()
        for i in range(start, start + count):
            await js.publish(self.stream, str(i).encode())


@pytest.fixture
async def consumer() -> AsyncIterator[Consumer]:
    try:
        connection = await nats.connect(f"nats://{HOST}:{PORT}", allow_reconnect=False)
    except Exception:  # noqa: BLE001 - any failure means no server to test with
        unavailable(f"NATS JetStream at {HOST}:{PORT}")
    jsm = connection.jsm()
    name = f"fptest{uuid.uuid4().hex[:12]}"
    await jsm.add_stream(name=name, subjects=[name])
    config = ConsumerConfig(
        durable_name="c", ack_policy=AckPolicy.EXPLICIT, ack_wait=60, max_ack_pending=-1
    )
    await jsm.add_consumer(name, config)
    made = Consumer(connection, name)
    try:
        yield made
    finally:
        for reader in made.readers:
            await reader.stop()
        await jsm.delete_stream(name)
        await connection.close()


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    """Waits (bounded) for what the server delivers in the background: the puller has no
    event of its own to await for that, and the test must not take what it counts."""
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0.01)


async def test_a_batch_costs_a_read_or_two_and_nothing_is_dropped_between_reads(
    consumer: Consumer,
) -> None:
    puller = await consumer.reader()
    await consumer.publish(250)

    numbers: list[int] = []
    reads = 0
    while len(numbers) < 250:
        batch = await puller.take(100, 5.0)
        assert 0 < len(batch) <= 100
        numbers += [int(m.data) for m in batch]
        reads += 1
    assert numbers == list(range(250))  # in order, none twice, none dropped
    assert reads < 25  # messages come by the socket's read, not one wake-up each (250)


async def test_what_was_delivered_and_not_taken_goes_back_at_once_when_the_reader_stops(
    consumer: Consumer,
) -> None:
    puller = await consumer.reader()
    await consumer.publish(1)
    taken = await puller.take(10, 5.0)  # the request stays open for nine more
    await consumer.publish(3, start=1)
    await _until(lambda: len(puller.kept()) == 3)
    await taken[0].ack()

    await puller.stop()

    again = await consumer.reader()
    back: list[int] = []
    async with asyncio.timeout(10):  # not the 60 s ack wait: they came back at once
        while len(back) < 3:
            batch = await again.take(10, 1.0)
            assert all(m.metadata.num_delivered == 2 for m in batch)
            back += [int(m.data) for m in batch]
    assert sorted(back) == [1, 2, 3]


async def test_an_idle_read_ends_with_its_request_and_asks_again(consumer: Consumer) -> None:
    puller = await consumer.reader()
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await puller.take(10, 0.2) == []
    waited = loop.time() - started
    assert 0.15 <= waited < 1.0  # the server's 408 at the request's expiry, not our grace
    await consumer.publish(2)
    assert [m.data for m in await puller.take(10, 5.0)] == [b"0", b"1"]  # a new request
