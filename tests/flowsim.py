"""A fake-clock simulation of many workers behind :class:`FlowControl` against a limiter.

An event loop whose clock is virtual: when every task waits, time jumps to the next timer,
so a simulated minute takes milliseconds and nothing depends on the machine's speed. The
server side is the fake API's own limiter shapes (``pipeline.fake.limiters``), load shedding
and stalls included, and the fake API's faults (:class:`Noise`) as the client meets them: a
503 is retried after a backoff that holds no slot, a reset or an answer later than the timeout
ends the record (it was stored; reconciliation says so).
"""

from __future__ import annotations

import asyncio
import random
import selectors
from dataclasses import dataclass, field
from typing import Any

from pipeline.engine.stages import WORKERS_PER_SLOT
from pipeline.fake.limiters import Limiter, Limits
from pipeline.flow.compose import FlowControl, Kind, Result

#: How long a refusal takes to come back: a gateway answers at once.
REFUSAL_RTT = 0.0005
#: The first backoff after a 503 (``--backoff``), and the jitter added to it (tenacity's).
BACKOFF = 0.5
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
class Noise:
    """The fake API's faults: shares of POSTs answered 503 (not stored), reset after they
    were stored, answered later than ``timeout`` (stored)."""

    fail: float = 0.0
    reset: float = 0.0
    late: float = 0.0
    timeout: float = 1.0


@dataclass(frozen=True)
class Outcome:
    records: int
    seconds: float
    posts: int
    refused: int
    concurrency: int
    rate_cap: float | None
    errors: int = 0  # 503s, resets, timeouts
    shown: int | None = None  # the in-flight limit the API showed
    noise: int = 0  # errors flow control read as noise
    limits: list[int] = field(default_factory=list, compare=False)

    @property
    def error_share(self) -> float:
        return self.errors / self.posts

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
    noise: Noise | None = None,
) -> Outcome:
    """Send ``records`` through ``concurrency`` workers; latency is ``latency`` + jitter, and
    a refusal comes back after ``refusal_rtt`` (as late as a success, on a loaded server)."""
    loop = VirtualLoop()
    try:
        return loop.run_until_complete(
            _run(limits, records, concurrency, latency, rate, seed, refusal_rtt, noise or Noise())
        )
    finally:
        loop.close()


class _Sim:
    """The workers, the server and what they counted, on the running (virtual) loop."""

    def __init__(
        self, limits: Limits, flow: FlowControl, latency: float, seed: int, noise: Noise
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.flow = flow
        self.server = Limiter(limits)
        self.latency = latency
        self.jitter = limits.latency_jitter_ms / 1000.0
        self.noise = noise
        self.rng = random.Random(seed)
        self.faults = random.Random(seed)  # its own draws: without noise, runs are as they were
        self.left = self.posts = self.refused = self.errors = 0

    async def answer(self) -> str:
        """The server's answer to an admitted request: "ok", "retry" (a 503: not stored) or
        "stored" (a reset, or an answer later than the timeout, after the record was stored)."""
        noise, server = self.noise, self.server
        draw = self.faults.random()
        if server.stalls() or draw < noise.late:
            server.done()  # its work is done: only its answer is late
            await asyncio.sleep(noise.timeout)
            self.errors += 1
            return "stored"
        await asyncio.sleep(self.latency + self.rng.uniform(0.0, self.jitter))
        server.done()
        if draw < noise.late + noise.fail + noise.reset:
            self.errors += 1
            return "retry" if draw < noise.late + noise.fail else "stored"
        return "ok"

    async def back_off(self, backoff: float) -> float:
        """As delivery's retry policy: a backoff that doubles, unless errors lately are noise
        (then a round trip). The next backoff."""
        if self.flow.calm():
            await asyncio.sleep(self.flow.retry_wait(None))
            return backoff
        await asyncio.sleep(backoff + self.rng.uniform(0.0, BACKOFF))
        return backoff * 2

    async def send(self, refusal_rtt: float) -> None:
        """One record, attempt after attempt until it is stored."""
        flow, failed, backoff = self.flow, Result(Kind.OVERLOADED), BACKOFF
        while True:
            ticket = await flow.acquire()
            self.posts += 1
            await asyncio.sleep(self.rng.uniform(0.0, ARRIVAL_JITTER))
            refusal = self.server.admit(self.loop.time())
            if refusal is None:
                answered = await self.answer()
                flow.release(ticket, Result(Kind.OK) if answered == "ok" else failed)
                if answered != "retry":
                    return
            elif refusal.status == 503:
                self.errors += 1
                await asyncio.sleep(refusal_rtt)
                flow.release(ticket, failed)
            if refusal is None or refusal.status == 503:
                backoff = await self.back_off(backoff)
                continue
            self.refused += 1
            retry_after = None if refusal.retry_after is None else float(refusal.retry_after)
            await asyncio.sleep(refusal_rtt)
            flow.release(ticket, Result(Kind.THROTTLED, retry_after))
            await asyncio.sleep(flow.retry_wait(retry_after))

    async def worker(self, refusal_rtt: float) -> None:
        while self.left > 0:
            self.left -= 1
            await self.send(refusal_rtt)


async def _run(
    limits: Limits,
    records: int,
    concurrency: int,
    latency: float,
    rate: float | None,
    seed: int,
    refusal_rtt: float,
    noise: Noise,
) -> Outcome:
    loop = asyncio.get_running_loop()
    flow = FlowControl(concurrency, rate, clock=loop.time)
    sim = _Sim(limits, flow, latency, seed, noise)
    sim.left = records
    limits_seen: list[int] = []

    async def watch() -> None:
        while True:
            limits_seen.append(flow.concurrency)
            await asyncio.sleep(0.1)

    start = loop.time()
    watcher = asyncio.create_task(watch())
    await asyncio.gather(*(sim.worker(refusal_rtt) for _ in range(concurrency * WORKERS_PER_SLOT)))
    watcher.cancel()
    return Outcome(
        records,
        loop.time() - start,
        sim.posts,
        sim.refused,
        flow.concurrency,
        flow.cap,
        sim.errors,
        flow.shown,
        flow.errors.noise,
        limits_seen,
    )
