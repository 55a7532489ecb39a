"""AdaptiveLimit and Gate on a fake clock: no sleeping, no wall-clock dependence."""

from __future__ import annotations

import asyncio

import pytest

from pipeline.aimd import AdaptiveLimit, AdaptiveRate
from pipeline.circuit import Gate
from pipeline.errors import OutageError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def round_trip(limit: AdaptiveLimit, clock: Clock, rtt: float, *, pressure: bool) -> None:
    started = await limit.acquire()
    clock.now += rtt
    limit.release(started, backpressure=pressure)


async def saturate(limit: AdaptiveLimit, clock: Clock, rtt: float = 0.05) -> None:
    """One round trip with every slot busy, all healthy."""
    starts = [await limit.acquire() for _ in range(limit.limit)]
    clock.now += rtt
    for started in starts:
        limit.release(started, backpressure=False)


async def test_slow_start_doubles_per_round_trip_up_to_the_ceiling() -> None:
    clock = Clock()
    limit = AdaptiveLimit(100, initial=4, clock=clock)
    seen = []
    for _ in range(6):
        await saturate(limit, clock)
        seen.append(limit.limit)
    assert seen == [8, 16, 32, 64, 100, 100]


async def test_backpressure_shrinks_once_per_round_trip() -> None:
    clock = Clock()
    limit = AdaptiveLimit(100, initial=40, clock=clock)
    await saturate(limit, clock)  # learns the round trip: 50 ms
    before = limit.limit
    starts = [await limit.acquire() for _ in range(10)]
    for started in starts:  # ten 429s arriving together count as one signal
        limit.release(started, backpressure=True)
    assert limit.limit == int(before * 0.9)
    assert (limit.lowest, limit.highest) == (40, before)


async def test_after_pressure_it_climbs_back_fast_then_probes_slowly() -> None:
    clock = Clock()
    limit = AdaptiveLimit(100, initial=20, probe_interval=10.0, clock=clock)
    await saturate(limit, clock)
    await round_trip(limit, clock, 0.05, pressure=True)  # pressure at ~40
    after_drop = limit.limit
    for _ in range(30):
        await saturate(limit, clock)
    near = limit.limit
    assert after_drop < near <= after_drop / 0.9  # back just under where pressure came
    for _ in range(30):  # 1.5 s more of healthy round trips: no probe yet
        await saturate(limit, clock)
    assert limit.limit == near
    clock.now += 10.0
    await saturate(limit, clock)
    assert limit.limit == near + 1  # one careful step above


async def test_rising_latency_stops_growth() -> None:
    clock = Clock()
    limit = AdaptiveLimit(100, initial=10, clock=clock)
    await saturate(limit, clock, rtt=0.05)
    grown = limit.limit
    await saturate(limit, clock, rtt=0.5)  # ten times slower: the server is queueing
    assert limit.limit == grown


async def test_no_growth_when_the_limit_was_not_the_bottleneck() -> None:
    clock = Clock()
    limit = AdaptiveLimit(100, initial=10, clock=clock)
    for _ in range(20):
        await round_trip(limit, clock, 0.05, pressure=False)  # one request at a time
    assert limit.limit == 10


async def test_acquire_waits_for_a_free_slot() -> None:
    clock = Clock()
    limit = AdaptiveLimit(2, initial=2, clock=clock)
    first, _second = await limit.acquire(), await limit.acquire()
    waiter = asyncio.create_task(limit.acquire())
    await asyncio.sleep(0)
    assert not waiter.done() and limit.in_flight == 2
    limit.release(first, backpressure=False)
    await asyncio.wait_for(waiter, timeout=5)
    assert limit.in_flight == 2


class Sleeps:
    """A fake sleep that advances the fake clock."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)
        self.clock.now += seconds


def gate(clock: Clock, notices: list[str], **kwargs: float) -> tuple[Gate, Sleeps]:
    sleeps = Sleeps(clock)
    made = Gate(
        sleep=sleeps,
        stopped=lambda: False,
        notice=notices.append,
        clock=clock,
        threshold=3,
        cooldown=1.0,
        max_cooldown=4.0,
        **kwargs,
    )
    return made, sleeps


async def test_retry_after_pauses_everyone_once_per_burst() -> None:
    clock, notices = Clock(), list[str]()
    g, sleeps = gate(clock, notices)
    g.pause(2.0)
    g.pause(1.5)  # another 429 of the same burst
    await g.admit()
    await g.admit()
    assert sleeps.calls == [2.0]
    assert g.pauses == 1


async def test_circuit_opens_probes_with_growing_cooldown_and_closes() -> None:
    clock, notices = Clock(), list[str]()
    g, sleeps = gate(clock, notices)
    for _ in range(3):
        g.failed("HTTP 503")
    assert g.is_open and len(notices) == 1 and "3 requests in a row" in notices[0]
    await g.admit()  # the probe, after one cool-down
    assert sleeps.calls == [1.0]
    g.failed("HTTP 503")  # the probe failed: the next waits twice as long
    await g.admit()
    assert sleeps.calls[-1] == pytest.approx(2.0)
    g.succeeded()
    assert not g.is_open and "answers again" in notices[-1]
    calls = len(sleeps.calls)
    await g.admit()
    assert len(sleeps.calls) == calls  # closed: no waiting


async def test_a_long_outage_gives_up() -> None:
    clock, notices = Clock(), list[str]()
    g, _ = gate(clock, notices, max_outage=5.0)
    for _ in range(3):
        g.failed("HTTP 500")
    with pytest.raises(OutageError, match="failed every request"):
        for _ in range(10):
            await g.admit()
            g.failed("HTTP 500")


def test_a_429_sets_a_rate_cap_under_what_succeeded_then_it_creeps_up() -> None:
    clock = Clock()
    rate = AdaptiveRate(None, clock=clock)
    assert rate.cap is None  # no cap until the API pushes back
    for _ in range(1000):  # 1000 successes over 4 s: 250/s
        clock.now += 0.004
        rate.succeeded()
    rate.throttled()
    assert rate.cap == pytest.approx(250 * 0.95)
    capped = rate.cap
    assert capped is not None
    for _ in range(10):  # ten quiet seconds: +1% each
        clock.now += 1.0
        rate.succeeded()
    assert rate.cap == pytest.approx(capped * 1.01**10)


def test_the_rate_cap_never_exceeds_the_users_rate() -> None:
    clock = Clock()
    rate = AdaptiveRate(100.0, clock=clock)
    assert rate.cap == 100.0
    for _ in range(50):
        clock.now += 1.0
        rate.succeeded()
    assert rate.cap == 100.0
    rate.throttled()  # 50 successes in 50 s: 1/s measured
    assert rate.cap == pytest.approx(1.0)
