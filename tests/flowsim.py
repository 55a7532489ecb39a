"""A fake-clock simulation of many workers behind :class:`FlowControl` against a limiter.

An event loop whose clock is virtual: when every task waits, time jumps to the next timer,
so a simulated minute takes milliseconds and nothing depends on the machine's speed. The
server side is the fake API's own limiter shapes (``pipeline.fake.limiters``).
"""

from __future__ import annotations

import asyncio
import random
import selectors
from dataclasses import dataclass
from typing import Any

from pipeline.fake.limiters import Limiter, Limits
from pipeline.flow import FlowControl, Kind, Result
from pipeline.stages import WORKERS_PER_SLOT

#: How long a refusal takes to come back: a gateway answers at once.
REFUSAL_RTT = 0.0005
#: Requests reach the server up to this late (the client's event loop, the network): what
#: makes a limiter with almost no burst refuse two requests the client spaced apart.
ARRIVAL_JITTER = 0.0


class _VirtualSelector(selectors.SelectSelector):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is not None and timeout > 0:
            self.now += timeout  # nothing can happen meanwhile: jump
        return []


class VirtualLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        self._virtual = _VirtualSelector()
        super().__init__(self._virtual)

    def time(self) -> float:
        return self._virtual.now


@dataclass(frozen=True)
class Outcome:
    records: int
    seconds: float
    posts: int
    refused: int
    concurrency: int
    rate_cap: float | None

    @property
    def rate(self) -> float:
        return self.records / self.seconds

    @property
    def refused_share(self) -> float:
        return self.refused / self.posts


def simulate(
    limits: Limits,
    *,
    records: int,
    concurrency: int,
    latency: float,
    rate: float | None = None,
    seed: int = 7,
    refusal_rtt: float = REFUSAL_RTT,
) -> Outcome:
    """Send ``records`` through ``concurrency`` workers; latency is ``latency`` + jitter, and
    a refusal comes back after ``refusal_rtt`` (as late as a success, on a loaded server)."""
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(
            _run(limits, records, concurrency, latency, rate, seed, refusal_rtt)
        )
    finally:
        loop.close()


async def _run(
    limits: Limits,
    records: int,
    concurrency: int,
    latency: float,
    rate: float | None,
    seed: int,
    refusal_rtt: float,
) -> Outcome:
    loop = asyncio.get_running_loop()
    flow = FlowControl(concurrency, rate, clock=loop.time)
    server = Limiter(limits)
    rng = random.Random(seed)
    left = records
    posts = refused = 0
    jitter = limits.latency_jitter_ms / 1000.0

    async def worker() -> None:
        nonlocal left, posts, refused
        while left > 0:
            left -= 1
            while True:
                ticket = await flow.acquire()
                posts += 1
                await asyncio.sleep(rng.uniform(0.0, ARRIVAL_JITTER))
                refusal = server.admit(loop.time())
                if refusal is None:
                    await asyncio.sleep(latency + rng.uniform(0.0, jitter))
                    server.done()
                    flow.release(ticket, Result(Kind.OK))
                    break
                refused += 1
                retry_after = None if refusal.retry_after is None else float(refusal.retry_after)
                await asyncio.sleep(refusal_rtt)
                flow.release(ticket, Result(Kind.THROTTLED, retry_after))
                await asyncio.sleep(flow.retry_wait(retry_after))

    start = loop.time()
    await asyncio.gather(*(worker() for _ in range(concurrency * WORKERS_PER_SLOT)))
    return Outcome(records, loop.time() - start, posts, refused, flow.concurrency, flow.cap)
