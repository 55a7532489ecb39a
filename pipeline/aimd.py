"""Adaptive concurrency: an AIMD limit on requests in flight, in the spirit of Vector's ARC.

The limit starts at the ceiling (what the user asked for; most APIs never push back) and, once
pressure has lowered it, doubles per round trip (slow start) until the next sign of pressure,
then grows by about one per round trip while responses are healthy and latency does
not rise, and shrinks on backpressure, at most once per round trip so that one burst of
failures does not collapse it: by half on a 429 (the API says outright that the account's
limit is exceeded), by ``decrease`` on 503s and timeouts (which may be noise). ``--concurrency``
is the ceiling.

Unlike TCP's, our congestion signal is expensive: a 429's Retry-After pauses every worker for
a second or more. So the limit remembers where pressure last came (as CUBIC remembers its
W_max): it climbs back quickly to just below that level, then probes one step above it only
every ``probe_interval`` seconds, and most of the time runs just under the API's limit.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from aiolimiter import AsyncLimiter

#: A round trip this much slower than the running average counts as rising latency.
_RISING = 1.5
_EWMA = 0.1
PROBE_INTERVAL = 10.0


class AdaptiveLimit:
    def __init__(
        self,
        ceiling: int,
        *,
        initial: int | None = None,
        decrease: float = 0.9,
        probe_interval: float = PROBE_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ceiling = ceiling
        self._limit = float(ceiling if initial is None else min(initial, ceiling))
        self._decrease_ratio = decrease
        self._clock = clock
        self._in_flight = 0
        self._full_at = float("-inf")  # when every slot was last taken
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._slow_start = True
        self._rtt: float | None = None
        self._last_decrease = float("-inf")
        self._pressure_at: float | None = None  # the limit when pressure last came
        self._probe_interval = probe_interval
        self._last_probe = float("-inf")
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
        now = self._clock()
        if self._in_flight >= self.limit:
            self._full_at = now
        return now

    def release(self, started: float, *, backpressure: bool, throttled: bool = False) -> None:
        now = self._clock()
        # Growth needs evidence that the limit held requests back during this round trip.
        was_full = self._full_at >= started or bool(self._waiters)
        self._in_flight -= 1
        if backpressure or throttled:
            self._shrink(now, 0.5 if throttled else self._decrease_ratio)
        else:
            self._grow(now, now - started, was_full)
        self.lowest, self.highest = min(self.lowest, self.limit), max(self.highest, self.limit)
        self._wake()

    def _shrink(self, now: float, ratio: float) -> None:
        self._slow_start = False
        if now - self._last_decrease >= (self._rtt or 0.0):
            self._pressure_at = self._limit
            self._limit = max(1.0, self._limit * ratio)
            self._last_decrease = self._last_probe = now

    def _grow(self, now: float, rtt: float, was_full: bool) -> None:
        average = self._rtt
        self._rtt = rtt if average is None else average + _EWMA * (rtt - average)
        if average is not None and rtt > average * _RISING + 0.001:
            self._slow_start = False  # latency rises: hold, the server is filling up
            return
        if not was_full:
            return  # the limit was not what held us back: no evidence it can go higher
        if self._slow_start:
            step = 1.0
        elif self._pressure_at is None or self._limit + 1 < self._pressure_at:
            step = 1.0 / self._limit
        elif now - self._last_probe >= self._probe_interval:
            step, self._last_probe = 1.0, now  # one careful step near where pressure came
        else:
            return
        self._limit = min(float(self.ceiling), self._limit + step)

    def _wake(self) -> None:
        free = self.limit - self._in_flight
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1


class AdaptiveRate:
    """The user's fixed ``--rate``, and a cap that finds an API's rate limit under it.

    A concurrency limit cannot hold a rate when round trips are short (one request in flight
    at 2 ms is 500/s), so a 429 also sets a rate cap: 95% of the rate that succeeded since the
    previous 429 (a window long enough to amortise the limiter's burst). Without 429s the cap
    rises by 1% a second until it reaches the user's rate, where it is dropped. The user's
    limiter is never replaced, so ``--rate`` holds exactly; the cap's is replaced when it
    moves (aiolimiter has no public way to change a rate), which may briefly let a few more
    requests through, harmless for an estimate.
    """

    def __init__(self, ceiling: float | None, clock: Callable[[], float] = time.monotonic):
        self._ceiling = ceiling or None
        self._fixed = make_limiter(self._ceiling)
        self._clock = clock
        self._cap: float | None = None
        self._adaptive: AsyncLimiter | None = None
        self._since = self._last_raise = clock()
        self._successes = 0

    @property
    def cap(self) -> float | None:
        """The rate in force: the adaptive cap, else the user's rate, else None."""
        return self._cap if self._cap is not None else self._ceiling

    async def acquire(self) -> None:
        if self._adaptive is not None:
            await self._adaptive.acquire()
        if self._fixed is not None:
            await self._fixed.acquire()

    def succeeded(self) -> None:
        self._successes += 1
        if self._cap is None:
            return
        now = self._clock()
        if now - self._last_raise < 1.0:
            return
        self._last_raise = now
        raised = self._cap * 1.01
        self._set(None if self._ceiling is not None and raised >= self._ceiling else raised)

    def throttled(self) -> None:
        """Once per 429 burst (when it starts a shared pause)."""
        now = self._clock()
        measured = self._successes / max(now - self._since, 1.0)
        target = max(1.0, measured * 0.95)
        current = self.cap
        if current is None or target < current:
            self._set(target)
        self._since = self._last_raise = now
        self._successes = 0

    def _set(self, cap: float | None) -> None:
        self._cap = cap
        self._adaptive = make_limiter(cap)


def make_limiter(rate: float | None) -> AsyncLimiter | None:
    """A leaky bucket for ``rate`` requests per second, or None for no limit (None or 0).

    The bucket holds 10 ms worth of requests (at least one): a larger bucket lets a burst
    exceed the rate over a one-second window, a smaller one costs a timer wake-up per request.
    """
    if not rate:
        return None
    capacity = max(1.0, rate / 100)
    return AsyncLimiter(capacity, capacity / rate)
