"""Finding an API's limit and staying just under it: the one algorithm behind both the
concurrency limit and the rate cap (:mod:`pipeline.flow.compose` says which signal feeds which).

A :class:`Seeker` holds one level (requests in flight, or requests per second) and moves it on
two kinds of evidence, in the spirit of TCP CUBIC with fast recovery and Vector's ARC:

- **pressure** (the API refused at this level), with ``good``, the level the API was measured
  to accept. The level drops to ``good`` less ``margin`` at once, never by a blind factor
  that compounds from refusal to refusal (the same measure twice is one drop).
- **a clean epoch** (about two round trips without refusal while the level held requests
  back). Before any pressure the level grows by ``start_factor`` per epoch (slow start);
  below ``good`` it climbs back half the remaining way per epoch (fast recovery); there it
  holds for ``probe_after`` seconds, then probes upwards by a step that doubles each
  ``probe_period`` (1%, 2%, 4%... up to ``max_step``): a limit that rose, or went away, is
  found again as fast as it was left. A probe refused near the same level doubles
  ``probe_after`` (up to ``max_probe``): the limit is stable, and each probe costs a refusal.

``make_limiter`` is the user's fixed ``--rate`` (aiolimiter), the one limit that never moves.
"""

from __future__ import annotations

import math

from aiolimiter import AsyncLimiter

#: Probing starts with this relative step and doubles it each probe period...
_FIRST_STEP = 0.01
#: ... up to this step (by default).
_MAX_STEP = 0.25
#: A refusal at most this much above the last good level is "the same limit again".
_SAME_LIMIT = 1.1


class Seeker:
    def __init__(
        self,
        initial: float,
        *,
        ceiling: float = math.inf,
        floor: float = 1.0,
        margin: float = 0.0,
        min_step: float = 0.0,
        probe_after: float = 1.0,
        max_probe: float = 8.0,
        max_step: float = _MAX_STEP,
        start_factor: float = 2.0,
        probe_period: float = 0.0,
    ) -> None:
        self.ceiling = ceiling
        self.floor = floor
        self.value = max(floor, min(initial, ceiling))
        self.good: float | None = None  # the last level the API was measured to accept
        self.slow_start = True
        self._margin = margin
        self._min_step = min_step  # an integer level (in flight) probes by at least one
        self._first_probe = self._probe_after = probe_after
        self._max_probe = max_probe
        self._max_step = max_step
        self._start_factor = start_factor
        self._probe_period = probe_period  # a probe step must hold this long to count
        self._stepped_at = -math.inf
        self._step = 0.0
        self.pressured_at = -math.inf

    def pressure(self, now: float, good: float, *, confirmed: bool = True) -> None:
        """The API refused at the current level and accepted about ``good``; a measure not
        ``confirmed`` (taken before anything succeeded) keeps slow start on."""
        # Never up on a refusal; and the same measure twice does not compound, but confirms.
        target = min(self.value, good * (1.0 - self._margin))
        confirmed = confirmed or (
            self.good is not None and self.good / _SAME_LIMIT <= good <= self.good * _SAME_LIMIT
        )
        probing = self._step > 0.0
        if probing and self.good is not None and good <= self.good * _SAME_LIMIT:
            self._probe_after = min(self._probe_after * 2.0, self._max_probe)
        elif self.good is None or good > self.good * _SAME_LIMIT:
            self._probe_after = self._first_probe  # a new level: look around it again soon
        self.good = good
        self.value = max(self.floor, min(target, self.ceiling))
        self.slow_start = self.slow_start and not confirmed
        self._step = 0.0
        self.pressured_at = now

    @property
    def probing(self) -> bool:
        """Above the last good level, looking for more."""
        return self.good is not None and self.value > self.good * (1.0 - self._margin)

    def cut(self, now: float, factor: float, *, confirmed: bool = True) -> None:
        """Back off by ``factor`` without a measure of the limit; climb back quickly after
        (by slow start again when not ``confirmed``: nothing succeeded yet)."""
        if self.good is None and confirmed:
            self.good = self.value
        self.value = max(self.floor, self.value * factor)
        self.slow_start = self.slow_start and not confirmed
        self._step = 0.0
        self.pressured_at = now

    def halve(self, now: float) -> None:
        """Most requests failed lately, whatever their level: halve. A level measured before
        stays what recovery climbs back to (the failures may be a pause, not the limit);
        without one, the half is the measure."""
        if self.good is None:
            self.pressure(now, max(self.floor, self.value / 2))
        else:
            self.cut(now, 0.5)

    def clean(self, now: float, achieved: float | None = None) -> None:
        """An epoch passed at this level without refusal while the level held requests back;
        ``achieved`` is what actually went through (the level itself if not given)."""
        if self.slow_start:
            self.value = min(self.ceiling, self.value * self._start_factor)
            return
        if self.probing and self.good is not None:  # a probe that held: proven good now
            self.good = max(self.good, min(self.value, achieved or self.value))
        target = (self.good or self.value) * (1.0 - self._margin)
        if self.value < target:
            climb = max((target - self.value) / 2.0, self._min_step, target * _FIRST_STEP)
            self.value = min(target, self.value + climb)
        elif (
            now - self.pressured_at >= self._probe_after
            and now - self._stepped_at >= self._probe_period
        ):
            self._stepped_at = now
            self._step = min(self._max_step, max(_FIRST_STEP, self._step * 2.0))
            self.value += max(self.value * self._step, self._min_step)
        self.value = min(self.ceiling, self.value)

    def relax(self) -> None:
        """Forget the last good level: another limit sets the pace now (the rate cap raised
        this concurrency limit to leave it room)."""
        self.good = None
        self._step = 0.0
        self._probe_after = self._first_probe


def make_limiter(rate: float | None) -> AsyncLimiter | None:
    """A leaky bucket for ``rate`` requests per second, or None for no limit (None or 0).

    The bucket holds 10 ms worth of requests (at least one): a larger bucket lets a burst
    exceed the rate over a one-second window, a smaller one costs a timer wake-up per request.
    """
    if not rate:
        return None
    capacity = max(1.0, rate / 100)
    return AsyncLimiter(capacity, capacity / rate)
