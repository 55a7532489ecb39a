"""Flow control: how many requests may be in flight, and how fast they may start.

Every request takes a :class:`Ticket` from :meth:`FlowControl.acquire` and hands it back with
its :class:`Result`. Three limits compose, each a :class:`~pipeline.aimd.Seeker` or fixed:

- the **concurrency limit** (ceiling: ``--concurrency``), slow start from ``initial``;
- the **rate cap**, absent until the API refuses on rate (ceiling: ``--rate``);
- the user's fixed ``--rate`` (aiolimiter), a hard ceiling that nothing replaces.

The API's answers are two different signals, and each moves only its own limit:

- a 429 *without* Retry-After from a request sent while more requests were in flight than
  any that succeeded since the last drop is a **concurrency** refusal (Twilio's 20429, "too
  many concurrent requests"): the limit drops to that in-flight level less one;
- any other 429 (a Retry-After, even 0; or refused at an in-flight level that just worked)
  is a **rate** refusal: the cap drops to 95% of the success rate measured over the last
  second, a window long enough to amortise a limiter's burst. In the first quarter second
  there is no such measure yet: the concurrency limit halves instead (once per round trip).
- 503s and timeouts shrink the concurrency limit by 10% (once per round trip).

A Retry-After is obeyed by the request that got it (``pipeline.delivery``); only when many
requests are refused within one round trip does everyone hold back, for at most a round trip
or two (``MAX_HOLD``), which ends a storm without stalling the run.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import Enum

from pipeline.aimd import Seeker, make_limiter

#: The success rate is measured over this window, long enough to amortise a burst.
RATE_WINDOW = 1.0
#: An episode of refusals must last this long (and 4 round trips) before its rate is measured.
MIN_MEASURE = 0.05
#: The rate cap sits this far under the measured rate; the concurrency limit right at its level.
RATE_MARGIN = 0.03
#: Fewer rate refusals than this share of the last second's requests are noise (requests that
#: arrived together at a limiter with almost no burst), not a pace above the limit.
NOISE = 0.02
#: The longest everyone holds back when only refusals come back.
MAX_HOLD = 1.0
_EWMA = 0.1


class Kind(Enum):
    OK = "ok"
    THROTTLED = "throttled"  # 429
    OVERLOADED = "overloaded"  # 503, 408, timeouts: maybe noise, maybe load
    OTHER = "other"  # says nothing about load (a 400, an ambiguous failure)


@dataclass(frozen=True, slots=True)
class Result:
    kind: Kind
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Ticket:
    started: float
    level: int  # requests on the wire when this one left, itself included
    paced: float  # when it took its place under the rate cap (at most ``started``)


@dataclass
class _Epoch:
    """About two round trips: growth needs one without refusal."""

    start: float
    refused: bool = False
    full: bool = False  # every slot was taken at some point
    successes: int = 0


class FlowControl:
    def __init__(
        self,
        concurrency: int,
        rate: float | None = None,
        *,
        initial: int = 16,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.ceiling = concurrency
        self.rate = rate or None
        self._limit = Seeker(min(initial, concurrency), ceiling=concurrency, min_step=1.0)
        self._cap: Seeker | None = None
        self._fixed = make_limiter(self.rate)
        self._clock, self._sleep = clock, sleep
        self._slots = 0  # requests holding a slot (on the wire or about to be)
        self._on_wire = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._next_start = -math.inf  # the rate cap's pacing: next free start time
        self._generation = 0  # the rate cap's drops: starts reserved before one are redone
        self._last_start = -math.inf
        self._second = (0, 0)  # successes in the current calendar second of the clock
        self._best_second = 0.0
        self._refusals: deque[float] = deque()  # rate refusals over the last RATE_WINDOW
        self._hold_until = -math.inf
        self._successes: deque[float] = deque()
        self._starts: deque[float] = deque()
        self._started_at: float | None = None
        self._dry: tuple[float, int] | None = None  # refusals only since: when, how many
        self._backoff = 0.02
        self._held = False  # a hold came, and no success since
        self._ok_total = 0
        self._since_drop = 0  # successes since the rate cap last dropped
        self._ok_at = -math.inf
        self._inflight_limit = math.inf  # the in-flight level a 20429 was last refused above
        self._ok_level = 0  # highest in-flight level that succeeded since the last drop
        self.rtt: float | None = None
        self._epoch = _Epoch(clock())
        self.holds = 0
        self.lowest = self.highest = self.concurrency

    # -- what a user sees ------------------------------------------------------------------

    @property
    def concurrency(self) -> int:
        """The concurrency limit in force."""
        return max(1, int(self._limit.value))

    limit = concurrency

    @property
    def cap(self) -> float | None:
        """The rate cap it settled on (not a probe above it), else the user's rate, else None."""
        if self._cap is None:
            return self.rate
        settled = self._cap.value
        if self._cap.good is not None:
            settled = min(settled, self._cap.good * (1.0 - RATE_MARGIN))
        return settled if self.rate is None else min(settled, self.rate)

    @property
    def in_flight(self) -> int:
        return self._slots

    # -- acquire / release -----------------------------------------------------------------

    async def acquire(self) -> Ticket:
        """Wait for a slot, a held-back storm, the rate cap and the fixed rate; in that order."""
        await self._slot()
        try:
            now = self._clock()
            if now < self._hold_until:
                await self._sleep(self._hold_until - now)
            paced = self._clock()
            await self._paced()
            if self._fixed is not None:
                await self._fixed.acquire()
        except BaseException:
            self._slots -= 1
            self._wake()
            raise
        self._on_wire += 1
        now = self._clock()
        self._starts.append(now)
        if self._started_at is None:
            self._started_at = now
        if len(self._starts) > 4096:
            self._starts.popleft()
        return Ticket(now, self._on_wire, paced)

    def release(self, ticket: Ticket, result: Result) -> None:
        now = self._clock()
        self._slots -= 1
        self._on_wire -= 1
        self._roll_epoch(now)
        if result.kind is Kind.OK:
            self._succeeded(ticket, now)
        elif result.kind is Kind.THROTTLED:
            self._throttled(ticket, result.retry_after, now)
        elif result.kind is Kind.OVERLOADED and ticket.started >= self._limit.pressured_at:
            self._refused()
            self._limit.pressure(now, self._limit.value * 0.9)
        self.lowest = min(self.lowest, self.concurrency)
        self.highest = max(self.highest, self.concurrency)
        self._wake()

    def retry_wait(self, retry_after: float | None) -> float:
        """How long a refused request waits before it tries again: the API's Retry-After,
        but at least a round trip (``Retry-After: 0`` is no invitation to spin)."""
        return max(retry_after or 0.0, min(1.0, max(0.01, self.rtt or 0.0)))

    async def _slot(self) -> None:
        while self._slots >= self.concurrency:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
        self._slots += 1
        if self._slots >= self.concurrency:
            self._epoch.full = True

    def _wake(self) -> None:
        free = self.concurrency - self._slots
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1

    async def _paced(self) -> None:
        """Wait for this request's start time under the rate cap. A start reserved under a
        cap that has dropped since is reserved again, so a drop takes effect at once."""
        while self._cap is not None:
            generation, now = self._generation, self._clock()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self._cap.value
            if start > now:
                await self._sleep(start - now)
                if generation != self._generation:
                    continue
            # A start that woke late must not go out right behind the next one: a limiter
            # with almost no burst refuses two requests that arrive together.
            early = self._last_start + 0.5 / self._cap.value - self._clock()
            if early > 0:
                await self._sleep(early)
            self._last_start = self._clock()
            return

    def _cap_dropped(self, now: float) -> None:
        self._generation += 1
        self._since_drop = 0
        if self._cap is not None:
            self._next_start = now + 1.0 / self._cap.value

    # -- signals -----------------------------------------------------------------------------

    def _succeeded(self, ticket: Ticket, now: float) -> None:
        rtt = now - ticket.started
        self.rtt = rtt if self.rtt is None else self.rtt + _EWMA * (rtt - self.rtt)
        self._successes.append(now)
        while self._successes[0] < now - RATE_WINDOW:
            self._successes.popleft()
        second = int(now)
        if second != self._second[0]:  # a best that fades by a tenth a second
            self._best_second = max(self._second[1], 0.9 * self._best_second)
            self._second = (second, 0)
        self._second = (second, self._second[1] + 1)
        self._since_drop += 1
        self._ok_total += 1
        # Only a request sent after refusals began says they are over (not one that was
        # already on its way).
        if self._dry is None or ticket.started >= self._dry[0]:
            if self._held or self._dry_spell(now):
                self._window_new(now)
            self._dry = None
            self._backoff = max(0.02, 2 * rtt)
        self._epoch.successes += 1
        # The highest in-flight level that succeeded lately (a max that decays in a second).
        if ticket.level >= self._ok_level or now - self._ok_at > RATE_WINDOW:
            self._ok_level, self._ok_at = ticket.level, now

    def _throttled(self, ticket: Ticket, retry_after: float | None, now: float) -> None:
        self._refused()
        if retry_after is None and ticket.level > self._ok_level:
            if ticket.started >= self._limit.pressured_at:
                self._limit.pressure(now, max(1.0, ticket.level - 1.0))
                self._inflight_limit = self._limit.value
        else:
            self._rate_refused(ticket, now)
        self._storm(retry_after, now)

    def _rate_refused(self, ticket: Ticket, now: float) -> None:
        self._refusals.append(now)
        while self._refusals[0] < now - RATE_WINDOW:
            self._refusals.popleft()
        cap = self._cap
        if cap is not None and (ticket.paced < cap.pressured_at or self._since_drop < 1):
            return  # paced before the last drop, or nothing got through since: nothing new
        pace = cap.value if cap is not None else self._attempt_rate(now)
        # The refusal says the pace was too high. What got through says how much: over the
        # last second once there is one (that amortises any burst or window), else lately;
        # at least RATE_MARGIN lower, and no lower than half (a fifth, once settled) at once.
        measured, settled = self._measured(now)
        if (
            cap is not None
            and settled
            and (measured >= (1.0 - RATE_MARGIN) * pace or self._lately(now)[1] < NOISE)
        ):
            return  # stray refusals (requests that arrived together), not the pace
        floor = 0.2 if settled else 0.5
        margin = 1.0 - RATE_MARGIN
        started, share = self._lately(now)
        if settled and started < 0.9 * pace:
            # The pace was not even tried (workers asleep on their Retry-After): what got
            # through is no measure of the limit; the share refused is.
            value = margin * pace * (1.0 - share)
        else:
            value = min(margin * pace, max(floor * pace, margin * measured))
        # Refusals that a lower pace does not cure (a limiter's own hiccups) must not drive
        # the cap down and down: never below half the best second of the last few.
        value = max(value, 0.5 * self._best_second)
        self._set_cap(now, value)

    def _set_cap(self, now: float, value: float) -> None:
        if self._cap is None:
            # The first cap: no measure of the limit yet (the pace it cuts may be far off
            # either way), so it grows by a quarter per epoch until refused (slow start).
            self._cap = Seeker(
                value,
                ceiling=self.rate or math.inf,
                margin=RATE_MARGIN,
                probe_period=RATE_WINDOW / 4,
                max_step=0.08,
                start_factor=1.25,
            )
            self._cap.pressured_at = now
        else:
            self._cap.pressure(now, value / (1.0 - RATE_MARGIN))
        self._cap_dropped(now)
        self._room()

    def _lately(self, now: float) -> tuple[int, float]:
        """Requests started over the last RATE_WINDOW, and the share refused on rate."""
        started = sum(1 for t in reversed(self._starts) if t >= now - RATE_WINDOW)
        return started, len(self._refusals) / max(1, started)

    def _room(self) -> None:
        """The cap sets the pace now: the concurrency limit must leave it room to do so."""
        assert self._cap is not None
        need = min(self._cap.value * (self.rtt or 0.05) * 1.5 + 1.0, self._inflight_limit)
        if self._limit.value < need:
            self._limit.value = min(float(self.ceiling), need)
            self._limit.relax()

    def _window(self, now: float) -> float:
        return max(MIN_MEASURE, 4 * (self.rtt or 0.0))

    def _attempt_rate(self, now: float) -> float:
        """Requests started per second lately (what the pace was, before there was a cap)."""
        window = self._window(now)
        while self._starts and self._starts[0] < now - window:
            self._starts.popleft()
        return max(1.0, len(self._starts) / window)

    def _measured(self, now: float) -> tuple[float, bool]:
        """Successes per second over the last RATE_WINDOW if the run is that old (True),
        else over the last few round trips (False)."""
        if self._started_at is not None and now - self._started_at >= RATE_WINDOW:
            return len(self._successes) / RATE_WINDOW, True
        window = self._window(now)
        recent = sum(1 for t in reversed(self._successes) if t >= now - window)
        return recent / window, False

    def _storm(self, retry_after: float | None, now: float) -> None:
        """Refusals only, for a few round trips (a used-up window): everyone holds back until
        the API's Retry-After, else for a back-off that doubles while it lasts; then one
        request at a time goes, as through a half-open circuit, until one succeeds."""
        if self._dry is None:
            self._dry = (now, 0)
        began, refusals = self._dry[0], self._dry[1] + 1
        self._dry = (began, refusals)
        if now < self._hold_until:
            return
        if self._held or self._dry_spell(now):
            hold = retry_after if retry_after else self._backoff
        elif self._burst():
            hold = self._backoff  # all at once may be one burst: no need to wait long
        else:
            return
        self._backoff = min(MAX_HOLD / 4, 2 * self._backoff)
        self._hold_until = now + min(MAX_HOLD, hold)
        self._held = True
        self._dry = (now, 0)
        self.holds += 1
        self._limit.cut(now, 0.0)

    def _dry_spell(self, now: float) -> bool:
        """Only refusals, four or more, for two round trips (a used-up window)."""
        if self._dry is None:
            return False
        began, refusals = self._dry
        return refusals >= 4 and now - began >= 2 * max(0.01, self.rtt or 0.0)

    def _burst(self) -> bool:
        """Only refusals, from a quarter of the requests the limit allows at once."""
        return self._dry is not None and self._dry[1] >= max(4, self.ceiling / 4)

    def _window_new(self, now: float) -> None:
        """The first success after a dry spell: the window is new. Pace the rest of the run
        by what went through per second so far, so as not to use the new window up at once."""
        self._held = False
        assert self._started_at is not None
        elapsed = now - self._started_at
        if elapsed < RATE_WINDOW / 2:
            return
        rate = max(len(self._successes) / RATE_WINDOW, self._ok_total / elapsed)
        value = max(1.0, rate)  # a lower bound already: no margin
        if self._cap is None or self._cap.value > value:
            self._set_cap(now, value)

    # -- epochs: growth needs a clean stretch of about two round trips ----------------------

    def _refused(self) -> None:
        self._epoch.refused = True

    def _roll_epoch(self, now: float) -> None:
        epoch = self._epoch
        length = now - epoch.start
        if length < max(0.05, 2 * (self.rtt or 0.0)):
            return
        if not epoch.refused and epoch.successes:
            if epoch.full:
                self._limit.clean(now)
            # The cap grows only while it is what holds the rate back.
            achieved = epoch.successes / length
            if self._cap is not None and achieved >= 0.9 * self._cap.value:
                self._cap.clean(now, achieved)
        self._epoch = _Epoch(now, full=self._slots >= self.concurrency)
