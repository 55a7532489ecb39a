"""The adaptive rate cap: how fast requests may start when the API limits a rate.

None until the API refuses on rate (see :mod:`pipeline.flow.compose` for which 429s those are); then
a :class:`~pipeline.flow.aimd.Seeker` of requests per second that paces every start, with
``--rate`` as its ceiling. On a refusal it drops to what got through per second over the last
second (a window long enough to amortise a token bucket's burst or a fixed window) or to the
pace tried less the share refused, whichever is higher, less ``RATE_MARGIN``; before the run
is a second old, by the share refused lately, at most to half at once, and without ending slow
start. Never below half the best second lately. After a used-up window, the cap is what the
window admitted (:meth:`RateCap.window_new`).

Refusals that a lower pace would not cure leave it where it is. A limiter with almost no burst
refuses requests that reached it together (bunched on the way: the client's event loop, the
network, a server that stalled) at any pace, 1-2% of them; a cap that drops on those, by its
margin at least each time, ratchets down and down. So, counting only what came since the last
drop (the refusals that moved it must not move it twice):

- refusals in a run (a used-up window: a dry spell, or a hold in force) are the pace;
- so are refusals of a probe above the last good level, but it only goes back to that level;
- fewer than ``CLEAR_COUNT`` in the last second are noise; ``FAST_SHARE`` of it is the pace;
- between the two, while what got through kept up with the pace tried, noise; else the pace
  from ``NOISE`` of the requests over the last ``NOISE_WINDOW`` on.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable

from pipeline.flow.aimd import Seeker
from pipeline.flow.recent import Recent

#: The success rate is measured over this window, long enough to amortise a burst.
RATE_WINDOW = 1.0
#: Before a second has passed, the rate is measured over 4 round trips, and at least this.
MIN_MEASURE = 0.05
#: The cap sits this far under the measured rate.
RATE_MARGIN = 0.03
#: Fewer rate refusals than this share of the requests (over the last ``NOISE_WINDOW``, since
#: the last drop) are noise: requests that arrived together at a limiter with almost no burst.
NOISE = 0.02
NOISE_WINDOW = 3.0
#: This share of the last second refused is the pace: a limit that fell, found at once...
FAST_SHARE = 0.05
#: ... and fewer refusals than this in it are noise whatever their share.
CLEAR_COUNT = 4
#: The longest a paced start sleeps before it looks whether the cap moved.
_NAP = 0.1


class RateCap:
    def __init__(
        self,
        ceiling: float | None,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.seeker: Seeker | None = None
        self._ceiling = ceiling or math.inf
        self._clock, self._sleep = clock, sleep
        self._next_start = -math.inf  # the pacing: next free start time
        self._generation = 0  # the cap's moves: starts reserved before one are redone
        self._waiting = 0  # starts reserved and not yet reached
        self._last_start = -math.inf
        self._starts = Recent(NOISE_WINDOW)
        self._successes = Recent(RATE_WINDOW)
        self._refusals = Recent(NOISE_WINDOW)
        self._started_at: float | None = None
        self._second = (0, 0)  # successes in the current second of the clock
        self._best_second = 0.0
        self._ok_total = 0
        self._since_drop = 0  # successes since the cap last dropped
        self._admitted = 0  # successes in the RATE_WINDOW before the last rate refusal

    @property
    def value(self) -> float | None:
        return None if self.seeker is None else self.seeker.value

    @property
    def settled(self) -> float | None:
        """The level it settled on, not a probe above it."""
        if self.seeker is None:
            return None
        if self.seeker.good is None:
            return self.seeker.value
        return min(self.seeker.value, self.seeker.good * (1.0 - RATE_MARGIN))

    async def pace(self) -> None:
        """Wait for this request's start time. A start reserved under a cap that has moved
        since (down or up) is reserved again, so a new cap takes effect at once."""
        while self.seeker is not None:
            generation, now = self._generation, self._clock()
            start = max(now, self._next_start)
            self._next_start = start + 1.0 / self.seeker.value
            self._waiting += 1
            try:
                # In short naps: a cap that rose must not leave us asleep on a start that a
                # low cap reserved seconds ahead.
                while start > now and generation == self._generation:
                    await self._sleep(min(start - now, _NAP))
                    now = self._clock()
            finally:
                self._waiting -= 1
            if generation != self._generation:
                continue
            # A start that woke late must not go out right behind the next one: a limiter
            # with almost no burst refuses two requests that arrive together.
            early = self._last_start + 0.5 / self.seeker.value - self._clock()
            if early > 0:
                await self._sleep(early)
            self._last_start = self._clock()
            return

    def started(self, now: float) -> None:
        self._starts.add(now)
        if self._started_at is None:
            self._started_at = now

    def succeeded(self, now: float) -> None:
        self._successes.add(now)
        second = int(now)
        if second != self._second[0]:  # a best that fades by a tenth a second
            self._best_second = max(self._second[1], 0.9 * self._best_second)
            self._second = (second, 0)
        self._second = (second, self._second[1] + 1)
        self._since_drop += 1
        self._ok_total += 1

    def refused(
        self, paced: float, now: float, rtt: float | None, sent: float, *, run: bool = False
    ) -> bool:
        """A rate refusal of a request paced at ``paced`` and sent at ``sent``, ``run`` when
        refusals are all that comes back lately; True when the cap moved."""
        self._refusals.add(now)
        self._admitted = self._last_second()
        cap = self.seeker
        if cap is None and self._refusals.since(now - RATE_WINDOW) < 2:
            return False  # one refusal is no pattern (two requests that arrived together)
        if cap is not None and (paced < cap.pressured_at or self._since_drop < 1):
            return False  # paced before the last drop, or nothing got through since
        # Before there is a cap, the pace is what started around the refused request: up to
        # when it left, or up to now (a burst in which it left early).
        pace = (
            cap.value
            if cap is not None
            else max(self._attempt_rate(sent, rtt), self._attempt_rate(now, rtt))
        )
        measured, settled = self._measured(now, rtt)
        started, share = self._lately(now)
        started_rate = started / RATE_WINDOW
        margin = 1.0 - RATE_MARGIN
        probing = cap is not None and cap.probing
        if settled and not run and not probing:
            # Before the first cap there is no drop to count from: under NOISE of the last
            # second is stray.
            kept_up = measured >= min(pace, started_rate)
            if (share < NOISE) if cap is None else self._noise(now, kept_up):
                return False  # stray refusals (requests that arrived together), not the pace
        if settled and started_rate < 0.9 * pace:
            # The cap is not what held the pace back (a concurrency limit did, or workers
            # asleep on their Retry-After): cut from the pace actually tried, less the share
            # refused, and never below what got through.
            value = margin * max(started_rate * (1.0 - share), measured)
        elif settled:
            # Above a rate limit R, the share refused is how far: R = pace x (1 - share); what
            # got through per second says the same, unless the second is not representative
            # (it began in slow start, or bunched arrivals were refused below the limit).
            # Either is a lower bound of R: the higher one is the better measure.
            value = margin * min(pace, max(pace * (1.0 - share), measured, 0.2 * pace))
        else:
            # Too early for a second's measure: what got through lately may be a burst's
            # (a bucket's first second of tokens); the share refused lately tells it apart.
            refused = pace * (1.0 - self._lately(now, self._window(rtt))[1])
            value = min(margin * pace, max(0.5 * pace, margin * min(measured, refused)))
        if probing and cap is not None and cap.good is not None and not run:
            # A probe refused goes back to where it was, not below: that level held, and the
            # refusal may be one that comes at any pace (each probe's would ratchet it down).
            value = max(value, cap.good * margin)
        # Refusals that a lower pace does not cure (a limiter's own hiccups) must not drive
        # the cap down and down: never below half the best second lately.
        self.set(now, max(value, 0.5 * self._best_second), confirmed=settled)
        return True

    def window_new(self, now: float) -> bool:
        """The first success after only refusals for a while: the window is new. Pace the
        rest of the run by what went through per second so far, so as not to use the new
        window up at once. True when the cap moved."""
        if self._started_at is None or now - self._started_at < RATE_WINDOW / 2:
            return False
        elapsed = now - self._started_at
        # The first two are lower bounds of the limit already: no margin. The third is what a
        # window (or a bucket's rate and what was left of its burst) admitted in the second
        # before it refused: a fixed or sliding window's own count, not diluted by the wait.
        admitted = self._admitted / RATE_WINDOW * (1.0 - RATE_MARGIN)
        bound = max(1.0, self._last_second() / RATE_WINDOW, self._ok_total / elapsed)
        value = max(bound, admitted)
        if self.seeker is not None and self.seeker.value <= value:
            return False
        self.set(now, value)
        return True

    def clean(self, now: float, achieved: float) -> None:
        """An epoch without refusal: grows only while the cap is what holds the rate back."""
        if self.seeker is not None and achieved >= 0.9 * self.seeker.value:
            self.seeker.clean(now, achieved)
            # Starts reserved far further ahead than the new cap would (under a cap much
            # lower than this one): reserve them again.
            backlog = self._next_start - now
            if backlog > max(RATE_WINDOW / 2, 2 * (self._waiting + 1) / self.seeker.value):
                self._generation += 1
                self._next_start = now

    def set(self, now: float, value: float, *, confirmed: bool = True) -> None:
        """The cap drops to ``value``; one cut from less than a second of the run (not
        ``confirmed``) keeps slow start on: that measure may be a burst's, or a wait's."""
        if self.seeker is None:
            # The first cap: no measure of the limit yet (the pace it cuts may be far off
            # either way), so it grows by a quarter per epoch until refused (slow start).
            self.seeker = Seeker(
                value,
                ceiling=self._ceiling,
                margin=RATE_MARGIN,
                probe_period=RATE_WINDOW,
                max_step=0.08,
                start_factor=1.25,
            )
            self.seeker.pressured_at = now
        else:
            self.seeker.pressure(now, value / (1.0 - RATE_MARGIN), confirmed=confirmed)
        self._generation += 1
        self._since_drop = 0
        self._next_start = now + 1.0 / self.seeker.value

    def _window(self, rtt: float | None) -> float:
        return max(MIN_MEASURE, 4 * (rtt or 0.0))

    def _attempt_rate(self, sent: float, rtt: float | None) -> float:
        """Requests started per second up to ``sent`` (what the pace was when the refused
        request left, before there was a cap). Not up to the refusal: a loaded server may
        answer later than the window, after nothing else started, and a pace measured then
        is next to none (a cap of 1/s, the run collapsed)."""
        window = self._window(rtt)
        recent = self._starts.between(sent - window, sent)
        return max(1.0, recent / self._span(window, sent))

    def _measured(self, now: float, rtt: float | None) -> tuple[float, bool]:
        """Successes per second over the last RATE_WINDOW if the run is that old (True),
        else over the last few round trips (False)."""
        if self._started_at is not None and now - self._started_at >= RATE_WINDOW:
            return self._last_second() / RATE_WINDOW, True
        window = self._window(rtt)
        return self._successes.since(now - window) / self._span(window, now), False

    def _last_second(self) -> int:
        """Successes in the second up to the last one (not up to now: a window used up and
        refusals since do not dilute what it admitted)."""
        return self._successes.since(self._successes.last - RATE_WINDOW)

    def _span(self, window: float, now: float) -> float:
        """The window, or the run's age if it is younger: a run 80 ms old that started 25
        requests went at 300/s, not at 25 over a 400 ms window."""
        if self._started_at is None:
            return window
        return min(window, max(MIN_MEASURE, now - self._started_at))

    def _lately(self, now: float, window: float = RATE_WINDOW) -> tuple[int, float]:
        """Requests started over the last ``window`` (at most RATE_WINDOW), and the share
        refused on rate (at most one: refusals of requests started earlier count too)."""
        started = self._starts.since(now - window)
        return started, min(1.0, self._refusals.since(now - window) / max(1, started))

    def _counts_since_drop(self, now: float, window: float) -> tuple[int, int]:
        """Refusals and starts over the last ``window``, but not before the last drop: the
        refusals that moved the cap must not move it again."""
        since = now - window
        if self.seeker is not None:
            since = max(since, self.seeker.pressured_at)
        return self._refusals.since(since), self._starts.since(since)

    def _noise(self, now: float, kept_up: bool) -> bool:
        """Stray refusals, not the pace (the module's doc gives the rules)."""
        refused, started = self._counts_since_drop(now, RATE_WINDOW)
        if refused < CLEAR_COUNT:
            return True
        if refused >= FAST_SHARE * started:
            return False
        if kept_up:
            return True
        refused, started = self._counts_since_drop(now, NOISE_WINDOW)
        return refused < NOISE * started
