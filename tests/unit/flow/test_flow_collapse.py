"""The collapse to a few records per second (a 50 ms bucket, ``Retry-After: 0``, c=64): a
first cap cut from a pace measured in the wrong window, and start times reserved under a low
cap that a higher one did not give back. On a fake clock, no sleeping."""

from __future__ import annotations

import asyncio

from fakeclock import Clock
from flowsim import VirtualLoop

from pipeline.flow.compose import FlowControl, Kind, Result
from pipeline.flow.ratecap import RateCap


async def test_a_refusal_that_comes_back_late_cuts_the_cap_from_the_pace_it_was_sent_at() -> None:
    # 16 requests leave at once; a loaded server answers the six over its burst 80 ms later,
    # when nothing else started since: the pace they were sent at was 16 at once, not 1/s.
    clock = Clock()

    async def sleep(seconds: float) -> None:
        clock.now += seconds

    flow = FlowControl(64, clock=clock, sleep=sleep)
    tickets = [await flow.acquire() for _ in range(16)]
    clock.now += 0.08
    flow.release(tickets[10], Result(Kind.THROTTLED, retry_after=0.0))
    flow.release(tickets[11], Result(Kind.THROTTLED, retry_after=0.0))
    assert flow.cap is not None
    assert flow.cap >= 100


def test_start_times_reserved_under_a_low_cap_are_given_back_when_it_rises() -> None:
    async def scenario() -> float:
        loop = asyncio.get_running_loop()
        cap = RateCap(None, clock=loop.time, sleep=asyncio.sleep)
        cap.set(loop.time(), 2.0)  # a momentary low cap: 2 a second...
        assert cap.seeker is not None
        sleepers = [asyncio.create_task(cap.pace()) for _ in range(16)]  # ...reserves 8 s ahead
        await asyncio.sleep(0.01)
        cap.seeker.value = 200.0  # it rises, as clean epochs make it
        cap.clean(loop.time(), 200.0)
        risen = loop.time()
        await asyncio.gather(*sleepers)
        return loop.time() - risen

    loop = VirtualLoop()
    try:
        # Every one of them started within a second of the rise, not 8 s later.
        assert loop.run_until_complete(scenario()) < 1.0
    finally:
        loop.close()
