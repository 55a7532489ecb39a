"""Flow control: how many requests may be in flight, and how fast they may start.

Every request takes a :class:`Ticket` from :meth:`FlowControl.acquire` and hands it back with
its :class:`Result`. Three limits compose, the first two found by the same algorithm
(:class:`~pipeline.flow.aimd.Seeker`):

- the **concurrency limit** (ceiling ``--concurrency``), slow start from ``initial``;
- the **rate cap** (:mod:`pipeline.flow.ratecap`), none until the API refuses on rate (ceiling
  ``--rate``);
- the user's fixed ``--rate`` (aiolimiter), a hard ceiling that nothing replaces.

The API's answers are two different signals, and each moves only its own limit. Which one a
429 is, the levels it comes at tell (:mod:`pipeline.flow.levels`), not the Retry-After header
(a gateway may send one with a refusal for too many in flight):

- refused above any in-flight level that succeeded lately, where most requests lately were
  refused: a **concurrency** refusal (Twilio's 20429, "too many concurrent requests"). The
  limit drops to that in-flight level less one, at once;
- refused among successes at its level: a **rate** refusal, and the rate cap moves (see
  :mod:`pipeline.flow.ratecap`). A rate refusal at a level an in-flight limit found earlier should
  admit shows that reading was wrong: it is dropped;
- above an in-flight limit found before, without a Retry-After: that limit again once
  ``PROBE_SHARE`` of the requests there lately were refused (see :mod:`pipeline.flow.levels`);
- one refusal above what worked, with no pattern yet, moves nothing: the record waits;
- before anything came back, nothing can tell an in-flight limit of N from a bucket of N
  tokens: without a Retry-After it is read as concurrency, but slow start goes on from the
  lower level (a rate limit's first burst must not pin the run); with one, as rate;
- a 503, a timeout, a reset or a stall (:mod:`pipeline.flow.overdue`) is load only when errors
  rise with the level of requests in flight (:mod:`pipeline.flow.overload`); a steady share at
  every level is noise: counted ("not a limit"), nothing more.

A limit the API showed (an in-flight 429 confirmed, errors that rose with the level) is
:attr:`FlowControl.shown`, the only source of the summary's advice for next time.

A Retry-After is obeyed by the request that got it (``pipeline.delivery.delivery``); everyone holds
back only when refusals are all there is (:mod:`pipeline.flow.hold`).
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
        self._limit = Seeker(
            min(initial, concurrency), ceiling=concurrency, min_step=1.0, probe_after=2.0
        )
        self._rate = RateCap(self.rate, clock=clock, sleep=sleep)
        self._fixed = make_limiter(self.rate)
        self._clock, self._sleep = clock, sleep
        self._slots = Slots(lambda: self.concurrency)
        self._growth = Growth()
        self.hold = Hold(concurrency)
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
            if now < self.hold.until:
                await self._sleep(self.hold.until - now)
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
        if not self._slots.free or now < self.hold.until:
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
            self.errors.failed(ticket, now, self._ok_level, self.shown, noted=noted)
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
        return self.errors.calm(now) and now >= self.hold.until

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
        # The highest in-flight level that succeeded lately (a max that decays in a second);
        # not from the first requests, sent together before anything came back: the order
        # they arrive in is anybody's guess, so their levels say nothing.
        if ticket.started < self._first_answer:
            return
        self.errors.overdue.answered(ticket, failed=False)
        if ticket.level >= self._ok_level or now - self._ok_at > RATE_WINDOW:
            self._ok_level, self._ok_at = ticket.level, now
        self._levels.note(ticket.level, True, now)

    def _throttled(self, ticket: Ticket, retry_after: float | None, now: float) -> None:
        self._refused()
        if self._ok_level:  # the first refusals, before any success, are no evidence
            self._levels.note(ticket.level, False, now)
        above = self._ok_level < ticket.level  # nothing succeeded lately this high
        if not self._ok_level:  # nothing to compare with yet: a Retry-After says rate
            inflight: bool | None = retry_after is None
        elif ticket.level > self._inflight_limit and retry_after is None:
            # A probe above the in-flight limit found before, refused: back to it, even if a
            # request at that level got through (the server's count and ours differ by a
            # request on its way). Read as a rate refusal, it set a cap that held the run at
            # 0.87-0.91 of the limit. Not when a few are refused among many there: a rate
            # limit's bunched requests, above an in-flight limit its first burst misread.
            inflight = self._levels.probe(ticket.level)
        else:
            inflight = self._levels.inflight(ticket.level) if above else False
        if inflight is None:
            pass  # one refusal above what worked: no pattern yet, the record just waits
        elif inflight:
            self._inflight(ticket, now)
        else:
            if ticket.level <= self._inflight_limit < math.inf:
                # Refused at a level an in-flight limit admits: the rate is what is refused,
                # and the in-flight limit was a rate limit's refusals misread.
                self._inflight_limit = math.inf
                self.shown = None
                self._limit.relax()
            run = self.hold.in_run(now, self.rtt)
            if self._rate.refused(ticket.paced, now, self.rtt, ticket.started, run=run):
                self._room()
        if self.hold.refused(retry_after, now, self.rtt):
            self._limit.cut(now, 0.0, confirmed=self._ok_level > 0)

    def _inflight(self, ticket: Ticket, now: float) -> None:
        """An in-flight refusal: the limit drops to the level below it, once per round trip."""
        if ticket.started >= self._limit.pressured_at:
            # Before anything succeeded, a refusal cannot tell an in-flight limit from a rate
            # limit's first burst: keep slow start on from the lower level.
            confirmed = self._ok_level > 0
            self._limit.pressure(now, max(1.0, ticket.level - 1.0), confirmed=confirmed)
            self._inflight_limit = self._limit.value
            if confirmed:
                self.shown = self.concurrency

    def _room(self) -> None:
        """The cap sets the pace now: the concurrency limit must leave it room to do so."""
        cap = self._rate.value or 0.0
        need = min(cap * (self.rtt or 0.05) * 1.5 + 1.0, self._inflight_limit)
        if self._limit.value < need:
            self._limit.value = min(float(self.ceiling), need)
            self._limit.relax()

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
        if not epoch.refused and epoch.successes:
            if self._slots.filled and not self.errors.unknown(now, self.rtt, self._slots.on_wire):
                self._limit.clean(now)
            self._rate.clean(now, epoch.successes / length)
        self._epoch = _Epoch(now)
        self._slots.filled = self._slots.full
