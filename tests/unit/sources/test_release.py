"""Releasing entries: a queue source offers a released entry again after ``claim_idle``, keeps
it unacked meanwhile, and a drain does not end while it is pending (real Redis, RabbitMQ)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from amqp_helpers import Queue, unique_queue
from conftest import Cli, assert_exactly_once, make_rows, write_csv
from redis_helpers import Stream, stream

from pipeline.models import RawRecord
from pipeline.sources import Done, Source, SourceOptions, open_source
from pipeline.sources.release import Holding, Releasing

__all__ = ["stream"]  # the fixture, used by name
IDLE = 0.2


def _options() -> SourceOptions:
    return SourceOptions(batch_size=10, concurrency=1, drain=True, claim_idle=IDLE)


@pytest.fixture
def queue() -> Iterator[Queue]:
    yield from unique_queue()


def test_holding_gives_entries_back_in_order_once_their_delay_is_over() -> None:
    now = [100.0]
    held: Holding[str] = Holding(2.0, clock=lambda: now[0])
    assert held.wait() is None
    assert held.due() == []
    held.hold(["a", "b"])
    now[0] += 1.0
    held.hold(["c"])
    assert held.due() == []
    assert held.wait() == 1.0
    assert len(held) == 3
    now[0] += 1.0
    assert held.due() == ["a", "b"]
    assert len(held) == 1
    now[0] += 1.0
    assert held.due() == ["c"]
    assert held.wait() is None


async def _next(batches: AsyncIterator[list[RawRecord]]) -> list[RawRecord] | None:
    """The next batch, or None once the source ended (bounded: never hangs the test)."""
    try:
        return await asyncio.wait_for(anext(batches), 10)
    except StopAsyncIteration:
        return None


async def _release_one_then_finish(source: Source, count: int) -> None:
    """Take every record, release the first, ack the rest: the released one comes back (and
    the drain waits for it), then acked, the drain ends."""
    assert isinstance(source, Releasing)
    batches = source.batches(asyncio.Event())
    taken: list[RawRecord] = []
    while len(taken) < count:
        batch = await _next(batches)
        assert batch is not None, "the drain ended before every record was read"
        taken += batch
    first, rest = taken[0], taken[1:]
    source.release([first.handle])
    await source.ack([Done(r.handle) for r in rest])
    again = await _next(batches)
    assert again is not None, "the drain ended with a released entry pending"
    assert [r.location for r in again] == [first.location]
    await source.ack([Done(again[0].handle)])
    assert await _next(batches) is None


async def test_redis_offers_a_released_entry_again_and_drains_after_its_ack(
    stream: Stream,
) -> None:
    stream.add(*make_rows(3))
    source = await open_source(stream.url("solo"), _options())
    try:
        await _release_one_then_finish(source, 3)
    finally:
        await source.close()
    assert stream.pending() == 0


async def test_redis_drain_ends_when_another_consumer_acked_a_released_entry(
    stream: Stream,
) -> None:
    stream.add(*make_rows(2))
    source = await open_source(stream.url("solo"), _options())
    try:
        assert isinstance(source, Releasing)
        batches = source.batches(asyncio.Event())
        batch = await _next(batches)
        assert batch is not None
        assert len(batch) == 2
        source.release([batch[0].handle])
        await source.ack([Done(batch[1].handle)])
        # Taken over and finished elsewhere: nothing left for this run to wait for.
        entry_id = batch[0].location.rsplit("/", 1)[1]
        stream.redis.xack(stream.name, stream.group, entry_id)
        assert await _next(batches) is None
    finally:
        await source.close()


def test_rabbitmq_offers_a_released_message_again_and_drains_after_its_ack(
    queue: Queue,
) -> None:
    queue.publish([json.dumps(row).encode() for row in make_rows(3)])

    async def consume() -> None:  # the queue helpers run their own loop: not inside one
        source = await open_source(queue.url(), _options())
        try:
            await _release_one_then_finish(source, 3)
        finally:
            await source.close()

    asyncio.run(consume())
    assert queue.ready() == 0  # closed: anything unacked would be ready again


def test_a_drain_ends_when_its_released_entries_cannot_be_settled(
    run_cli: Cli, stream: Stream, tmp_path: Path
) -> None:
    api = run_cli.server.state
    rows = make_rows(5)
    # An earlier run left them unknown (stored, but answered by a reset), unreconciled.
    api.update_faults({"reset_rate": 1.0})
    assert run_cli.run(str(write_csv(tmp_path / "in.csv", rows)), "--no-reconcile").exit_code == 1
    # The same records come through a queue, and the API's list cannot be read.
    api.update_faults({"reset_rate": 0.0, "hostile": "repeat_cursor"})
    stream.add(*rows)
    fast = ("--settle", "0.05", "--claim-idle", "0.2", "--reconcile-every", "0.1")

    result = run_cli.run(stream.url("solo"), "--drain", *fast)

    # Released, then given up on (it is a job): unknown, never sent, left for the next run.
    assert result.exit_code == 1, result.output
    assert "same page twice" in result.output
    assert stream.pending() == len(rows)
    assert api.posts_received == len(rows)
    api.update_faults({"hostile": None})
    assert run_cli.run(stream.url("solo"), "--drain", *fast).exit_code == 0
    assert stream.pending() == 0
    assert_exactly_once(run_cli.server, rows)
