"""When something happened lately, counted over any window by bisection.

The rate cap asks, per refusal, how many requests started, succeeded or were refused over the
last second or few: a walk over those times costs milliseconds at thousands a second.
"""

from __future__ import annotations

import math
from bisect import bisect_left, bisect_right


class Recent:
    """Times in the order they happened, kept for ``keep`` seconds at least."""

    def __init__(self, keep: float) -> None:
        self._times: list[float] = []
        self._keep = keep

    def add(self, now: float) -> None:
        times = self._times
        times.append(now)
        if times[0] < now - 2 * self._keep:  # trimmed in bulk, not one by one
            del times[: bisect_left(times, now - self._keep)]

    def since(self, when: float) -> int:
        return len(self._times) - bisect_left(self._times, when)

    def between(self, start: float, end: float) -> int:
        return bisect_right(self._times, end) - bisect_left(self._times, start)

    @property
    def last(self) -> float:
        return self._times[-1] if self._times else -math.inf
