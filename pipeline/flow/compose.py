"""Flow control composed: :class:`FlowControl` is the one adaptive limiter a request passes
(a slot under the concurrency limit, the hold, the rate cap, the user's fixed ``--rate``), and
the one place its answer comes back to (:meth:`FlowControl.release`). Which signal moves which
limit is the package's overview (:mod:`pipeline.flow`); a refusal's reading is
:mod:`pipeline.flow.refusals`'.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from pipeline.flow.aimd import Seeker, make_limiter
from pipeline.flow.hold import Hold
from pipeline.flow.levels import Levels
from pipeline.flow.overdue import STALLED_SHARE, Growth
from pipeline.flow.overload import NOTHING, Overload
from pipeline.flow.ratecap import RATE_WINDOW, RateCap
from pipeline.flow.refusals import Refusals
from pipeline.flow.slots import Slots
from pipeline.flow.tickets import Kind as Kind
from pipeline.flow.tickets import Result as Result
from pipeline.flow.tickets import Ticket as Ticket

_EWMA = 0.1
#: How fast the evidence per in-flight level fades.
_LEVELS_HALF_LIFE = 4.0


@dataclass
class _Epoch:
    """About two round trips: growth needs one without refusal while every slot was taken
    at some point (:attr:`Slots.filled`)."""

    start: float
    refused: bool = False
    successes: int = 0


class FlowControl(Refusals):
    def __init__(
        self,
        concurrency: int,
        rate: float | None = None,
        *,
        initial: int = 16,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_freed: Callable[[bool], None] = lambda _: None,
    ) -> None:
        """``on_freed(True)``: an overdue request gave its slot back before its answer came;
        ``on_freed(False)``: that answer came. The worker waiting for that answer holds no
        slot meanwhile, and another worker must take the slot, or giving it back is for
        nothing (the run's stages start a spare one: :mod:`pipeline.engine.spares`)."""
        self.ceiling = concurrency
        self.rate = rate or None
        self._limit = Seeker(
            min(initial, concurrency), ceiling=concurrency, min_step=1.0, probe_after=2.0
        )
        self._rate = RateCap(self.rate, clock=clock, sleep=sleep)
        self._fixed = make_limiter(self.rate)
        self._clock, self._sleep = clock, sleep
        self._slots = Slots(lambda: self.concurrency, on_freed)
        self._growth = Growth()
        self.hold = Hold(concurrency)
        #: The same, for errors (503s, timeouts, resets) and nothing else lately: its own,
        #: since the end of a refusals' dry spell means a new rate window, and of this not;
        #: and only a burst, twice the limit's errors without a success in between: more
        #: than the slots can send unless each error comes back at once (a few errors
        #: together are noise as often as not; and a client that stalled a moment reads
        #: what came meanwhile in any order, errors first as often as not).
        self.error_hold = Hold(concurrency, dry=False)
        self._ok_at = -math.inf
        self._first_answer = math.inf  # when the first answer came back
        self._first_sent = 0  # requests sent before it
        self._inflight_limit = math.inf  # the in-flight level a 20429 was last refused above
        self._ok_level = 0  # highest in-flight level that succeeded since the last drop
        self._levels = Levels(concurrency, half_life=_LEVELS_HALF_LIFE, now=clock())
        self.errors = Overload(self._limit, concurrency, half_life=_LEVELS_HALF_LIFE, now=clock())
        #: The in-flight limit the API showed last (see the module's doc), if any.
        self.shown: int | None = None
        self.rtt: float | None = None
        self._epoch = _Epoch(clock())
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
        settled = self._rate.settled
        if settled is None:
            return self.rate
        return settled if self.rate is None else min(settled, self.rate)

    @property
    def api_cap(self) -> float | None:
        """The rate cap the API showed (by refusing above it), if any: not the user's rate."""
        return self._rate.settled

    @property
    def pauses(self) -> int:
        """How many times everyone held back (see :mod:`pipeline.flow.hold`)."""
        return self.hold.count

    @property
    def in_flight(self) -> int:
        return self._slots.taken

    # -- acquire / release -----------------------------------------------------------------

    async def acquire(self) -> Ticket:
        """Wait for a slot, a held-back storm, the rate cap and the fixed rate; in that order."""
        await self._slots.take()
        try:
            now = self._clock()
            until = self._held_until()
            if now < until:
                await self._sleep(until - now)
            paced = self._clock()
            await self._rate.pace()
            if self._fixed is not None:
                await self._fixed.acquire()
        except BaseException:
            self._slots.give_back(None)
            self._slots.wake()
            raise
        return self._start(self._clock(), paced)

    def try_acquire(self) -> Ticket | None:
        """:meth:`acquire` where it would not wait (a free slot, nobody held back, no rate cap,
        no ``--rate``), without a coroutine: the common case, once per request; else None."""
        if self._fixed is not None or self._rate.seeker is not None:
            return None
        now = self._clock()
        if not self._slots.free or now < self._held_until():
            return None
        self._slots.take_now()
        return self._start(now, now)

    def _start(self, now: float, paced: float) -> Ticket:
        level = self._slots.sent()
        if self._first_answer == math.inf:
            self._first_sent += 1
        self._rate.started(now)
        ticket = Ticket(now, level, paced)
        self.errors.overdue.sent(ticket)
        return ticket

    async def pace(self) -> None:
        """Wait for the rate cap and the fixed rate, without taking a slot: for requests that
        count against ``--rate`` but are not flow-controlled (reconciliation's List calls)."""
        await self._rate.pace()
        if self._fixed is not None:
            await self._fixed.acquire()

    def release(self, ticket: Ticket, result: Result) -> None:
        now = self._clock()
        self._first_answer = min(self._first_answer, now)
        ticket.answered = True
        # Slow start as TCP's: one more per success while requests wait for a slot, so it
        # doubles every round trip (a clean epoch may double it once more); a success of the
        # first requests, sent together, waits while others of them are unanswered
        # (pipeline.flow.overdue).
        earned = result.kind is Kind.OK and self._limit.slow_start and self._slots.waiting
        first = self._first_answer
        if earned and ticket.started < first and self._first_late(first):
            self._growth.earned(now, self.rtt or now - ticket.started)
            earned = False
        self._grow(now, earned=earned)
        self._slots.give_back(ticket)
        self._roll_epoch(now)
        self._look(now)
        if ticket.overdue:
            pass  # judged when it became overdue
        elif result.kind is Kind.OK:
            self._succeeded(ticket, now)
        elif result.kind is Kind.THROTTLED:
            self._throttled(ticket, result.retry_after, now)
        elif result.kind is Kind.OVERLOADED:
            noted = ticket.started >= self._first_answer
            self.errors.failed(
                ticket,
                now,
                self._ok_level,
                self.shown,
                noted=noted,
                on_wire=self._slots.on_wire,
                first_sent=self._first_sent,
            )
            # Errors and nothing else lately (an API that came back from a pause still
            # busy with what it held, and shedding at once what comes meanwhile): everyone
            # holds back, as for refusals, or each slot sends a request a millisecond; and
            # the limit halves, once a hold, with no growth in that epoch.
            burst = max(8.0, 2.0 * self.concurrency)
            if self.error_hold.refused(None, now, self.rtt, burst=burst):
                self._refused()
                self._limit.halve(now)
        limit = self.concurrency
        if limit < self.lowest:
            self.lowest = limit
        elif limit > self.highest:
            self.highest = limit
        if self._slots.waiting:
            self._slots.wake()

    def _grow(self, now: float, *, earned: bool) -> None:
        if not self._limit.slow_start or not (earned or self._growth.pending):
            return
        if self.errors.overdue.stalling(now, self.rtt, self._slots.on_wire):
            return
        grown = int(earned)
        if self._growth.pending:
            late = self._first_late(self._first_answer)
            dropped = self._limit.pressured_at
            grown += self._growth.granted(now, late=late, dropped_at=dropped)
        if grown:
            self._limit.value = min(float(self.ceiling), self._limit.value + grown)

    def _first_late(self, first: float) -> bool:
        """Whether a quarter of the first requests, sent before ``first``, are unanswered."""
        return self.errors.overdue.unanswered(before=first) >= STALLED_SHARE * self._first_sent

    def _look(self, now: float) -> None:
        """What the errors judged by now (see :mod:`pipeline.flow.overload`)."""
        moved = self.errors.look(
            now, self.rtt, self._slots.on_wire, self._ok_level, self.shown, self._first_answer
        )
        if moved is not NOTHING:
            for late in moved.late:  # stalled: no longer in flight
                self._slots.overdue(late)
            if moved.shown is not None:
                self._refused()
                self.shown = moved.shown

    def calm(self) -> bool:
        """Errors lately are noise: none was load for a while (see :mod:`pipeline.flow.overload`),
        and nobody is held back."""
        now = self._clock()
        return self.errors.calm(now) and now >= self._held_until()

    def _held_until(self) -> float:
        return max(self.hold.until, self.error_hold.until)

    def retry_wait(self, retry_after: float | None) -> float:
        """How long a refused request waits before it tries again: the API's Retry-After,
        but at least a round trip (``Retry-After: 0`` is no invitation to spin)."""
        return max(retry_after or 0.0, min(1.0, max(0.01, self.rtt or 0.0)))

    # -- signals -----------------------------------------------------------------------------

    def _succeeded(self, ticket: Ticket, now: float) -> None:
        rtt = now - ticket.started
        self.rtt = rtt if self.rtt is None else self.rtt + _EWMA * (rtt - self.rtt)
        self._rate.succeeded(now)
        if self.hold.ended_by(ticket.started, now, self.rtt) and self._rate.window_new(now):
            self._room()
        self._epoch.successes += 1
        self.error_hold.ended_by(ticket.started, now, self.rtt)
        self.errors.storm.succeeded()
        # The highest in-flight level that succeeded lately (a max that decays in a second);
        # not from the first requests, sent together before anything came back: the order
        # they arrive in is anybody's guess, so their levels say nothing.
        if ticket.started < self._first_answer:
            return
        self.errors.overdue.answered(ticket, failed=False)
        if ticket.level >= self._ok_level or now - self._ok_at > RATE_WINDOW:
            self._ok_level, self._ok_at = ticket.level, now
        self._levels.note(ticket.level, True, now)

    # -- epochs: growth needs a clean stretch of about two round trips ----------------------

    def _refused(self) -> None:
        self._epoch.refused = True

    def _roll_epoch(self, now: float) -> None:
        epoch = self._epoch
        length = now - epoch.start
        # Long enough to hold a few requests under the rate cap: an epoch of 50 ms at 80/s
        # holds 3 or 5, and that noise alone would stop the cap from growing.
        cap = self._rate.value
        if length < max(0.05, 2 * (self.rtt or 0.0), 8.0 / cap if cap else 0.0):
            return
        stormed = self.errors.stormed_at >= epoch.start
        if not (epoch.refused or stormed) and epoch.successes:
            if self._slots.filled and not self.errors.unknown(now, self.rtt, self._slots.on_wire):
                self._limit.clean(now)
            self._rate.clean(now, epoch.successes / length)
        self._epoch = _Epoch(now)
        self._slots.filled = self._slots.full
