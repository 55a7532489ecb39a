"""The shared rate budget's GCRA, pause and outage handling, against a real Redis, on a fake
clock (the script takes "now" from the caller instead of Redis's TIME)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from pipeline.errors import ConfigError, OutageError
from pipeline.flow.shared import HORIZON_MS, KEY_PREFIX, SharedRate, scope_key

__all__ = ["redis_server", "scope"]  # fixtures, used by name
from redis_helpers import RedisServer, free_port, redis_server, scope


@dataclass
class Clock:
    """Redis's clock and the outage timer, moved on only by the sleeps of the code tested."""

    ms: float = 1_000_000.0
    slept: list[float] = field(default_factory=list)

    def now_ms(self) -> float:
        return self.ms

    def seconds(self) -> float:
        return self.ms / 1000

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.ms += seconds * 1000
        await asyncio.sleep(0)


@pytest.fixture
async def workers(scope: str) -> AsyncIterator[Callable[..., SharedRate]]:
    made: list[SharedRate] = []

    def make(clock: Clock, *, rate: float = 10.0, url: str = scope, **extra: object) -> SharedRate:
        shared = SharedRate(
            url,
            "ACtest",
            rate=rate,
            max_outage=extra.pop("max_outage", 600.0),  # type: ignore[arg-type]
            sleep=clock.sleep,
            stopped=lambda: False,
            now_ms=clock.now_ms,
            clock=clock.seconds,
            **extra,  # type: ignore[arg-type]
        )
        made.append(shared)
        return shared

    yield make
    for shared in made:
        await shared.close()


async def test_slots_are_one_interval_apart_across_workers(
    workers: Callable[..., SharedRate],
) -> None:
    clock = Clock()
    start = clock.ms
    one, two = workers(clock), workers(clock)
    times = []
    for shared in (one, two, one, one, two, two, one, two):
        await shared.acquire()
        times.append(clock.ms - start)
    # 10/s in total for both: a slot every 100 ms, whichever worker takes it.
    assert times == pytest.approx([0, 100, 200, 300, 400, 500, 600, 700])


async def test_idle_time_earns_no_burst(workers: Callable[..., SharedRate]) -> None:
    clock = Clock()
    shared = workers(clock)
    await shared.acquire()
    clock.ms += 10_000  # a quiet spell of 10 s
    start = clock.ms
    for _ in range(3):
        await shared.acquire()
    assert clock.ms - start == pytest.approx(200)


async def test_reservations_stop_at_the_horizon(
    workers: Callable[..., SharedRate], scope: str
) -> None:
    """Callers queued beyond the horizon get no slot yet: they wait and ask again, so that a
    pause set meanwhile still holds them."""
    clock = Clock()
    shared = workers(clock, rate=100.0)  # 10 ms a slot
    calls = [shared._call(1, 0.0) for _ in range(HORIZON_MS // 10 + 5)]
    replies = [await call for call in calls]
    taken = [wait for wait, ok in replies if ok]
    assert len(taken) == HORIZON_MS // 10 + 1
    assert max(taken) == pytest.approx(HORIZON_MS)
    assert all(not ok for _, ok in replies[len(taken) :])


async def test_a_429_pauses_every_worker_of_the_scope(
    workers: Callable[..., SharedRate],
) -> None:
    clock = Clock()
    seen, other = workers(clock), workers(clock)
    await other.acquire()
    start = clock.ms
    seen.throttled(3.0)
    await asyncio.gather(*seen._tasks)
    await other.acquire()
    assert clock.ms - start >= 3000
    assert clock.ms - start <= 3000 + 100


async def test_a_pause_is_only_ever_extended(workers: Callable[..., SharedRate]) -> None:
    clock = Clock()
    shared = workers(clock)
    start = clock.ms
    shared.throttled(5.0)
    await asyncio.gather(*shared._tasks)
    shared.throttled(1.0)
    await asyncio.gather(*shared._tasks)
    await shared.acquire()
    assert clock.ms - start >= 5000


def test_the_key_is_the_account_or_the_named_scope_never_the_secret() -> None:
    assert scope_key("redis://127.0.0.1:6379/0", "ACabc") == KEY_PREFIX + "{ACabc}"
    assert scope_key("redis://:pw@h:6379/0?key=team", "ACabc") == KEY_PREFIX + "{team}"


def test_a_scope_needs_a_rate() -> None:
    with pytest.raises(ConfigError, match="--rate"):
        SharedRate(
            "redis://127.0.0.1:1/0",
            "AC",
            rate=0,
            max_outage=1,
            sleep=asyncio.sleep,
            stopped=lambda: False,
        )


async def test_unreachable_says_so_once_then_aborts_after_max_outage(
    workers: Callable[..., SharedRate],
) -> None:
    clock = Clock()
    notices: list[str] = []
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    shared = workers(clock, url=url, max_outage=30.0, notice=notices.append)
    with pytest.raises(OutageError, match="unreachable for more than 30 s"):
        await shared.acquire()
    assert len(notices) == 1
    assert "unreachable" in notices[0]
    assert "not sending until it is back" in notices[0]
    assert "hunter2" not in notices[0]
    assert "***" in notices[0]
    assert sum(clock.slept) > 30


async def test_back_after_an_outage_says_so_once(redis_server: RedisServer) -> None:
    notices: list[str] = []
    stopped = asyncio.Event()
    shared = SharedRate(
        redis_server.url,
        "ACtest",
        rate=1000.0,
        max_outage=600.0,
        sleep=asyncio.sleep,
        stopped=stopped.is_set,
        notice=notices.append,
    )
    try:
        await shared.acquire()
        redis_server.kill()
        waiting = asyncio.create_task(shared.acquire())
        for _ in range(2000):
            if notices:
                break
            await asyncio.sleep(0.01)
        assert notices
        assert not waiting.done()
        redis_server.start()
        await asyncio.wait_for(waiting, 30)
        assert len(notices) == 2
        assert notices[1].endswith("is back: sending again")
        assert "s3cr3t" not in " ".join(notices)
    finally:
        await shared.close()
