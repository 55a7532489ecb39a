"""Adaptive concurrency: an AIMD limit on requests in flight, in the spirit of Vector's ARC.

The limit starts small and doubles per round trip (slow start) until the first sign of
pressure, then grows by about one per round trip while responses are healthy and latency does
not rise, and shrinks by ``decrease`` on backpressure (429, 503, timeouts), at most once per
round trip so that one burst of failures does not collapse it. ``--concurrency`` is the ceiling.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

#: A round trip this much slower than the running average counts as rising latency.
_RISING = 1.5
_EWMA = 0.1


class AdaptiveLimit:
    def __init__(
        self,
        ceiling: int,
        *,
        initial: int = 4,
        decrease: float = 0.9,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ceiling = ceiling
        self._limit = float(min(initial, ceiling))
        self._decrease_ratio = decrease
        self._clock = clock
        self._in_flight = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._slow_start = True
        self._rtt: float | None = None
        self._last_decrease = float("-inf")
        self.lowest = self.highest = self.limit

    @property
    def limit(self) -> int:
        return max(1, int(self._limit))

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def acquire(self) -> float:
        """Wait for a free slot; returns the start time to hand back to :meth:`release`."""
        while self._in_flight >= self.limit:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
        self._in_flight += 1
        return self._clock()

    def release(self, started: float, *, backpressure: bool) -> None:
        now = self._clock()
        was_full = self._in_flight >= self.limit
        self._in_flight -= 1
        if backpressure:
            self._shrink(now)
        else:
            self._grow(now - started, was_full)
        self.lowest, self.highest = min(self.lowest, self.limit), max(self.highest, self.limit)
        self._wake()

    def _shrink(self, now: float) -> None:
        self._slow_start = False
        if now - self._last_decrease >= (self._rtt or 0.0):
            self._limit = max(1.0, self._limit * self._decrease_ratio)
            self._last_decrease = now

    def _grow(self, rtt: float, was_full: bool) -> None:
        average = self._rtt
        self._rtt = rtt if average is None else average + _EWMA * (rtt - average)
        if average is not None and rtt > average * _RISING + 0.001:
            self._slow_start = False  # latency rises: hold, the server is filling up
            return
        if not was_full:
            return  # the limit was not what held us back: no evidence it can go higher
        step = 1.0 if self._slow_start else 1.0 / self._limit
        self._limit = min(float(self.ceiling), self._limit + step)

    def _wake(self) -> None:
        free = self.limit - self._in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1
