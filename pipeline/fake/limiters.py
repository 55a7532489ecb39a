"""Rate-limiter shapes of the fake API: what a real API's gateway may do beyond its limit.

Pure and clock-injected (no aiohttp, no sleeping), so the same limiters serve the fake server
(see :mod:`pipeline.fake.shaping`) and simulations on a fake clock.

- ``InFlight(n)``: at most ``n`` requests in flight; beyond that a 429 (Twilio's 20429, "too
  many concurrent requests"), which says nothing about when to come back.
- ``TokenBucket(rate, burst_s)``: ``rate`` tokens a second, holding ``burst_s`` seconds worth
  (at least one token). A few ms of burst is a strict pacer; a second of burst is lenient.
- ``FixedWindow(rate)``: ``rate`` requests per calendar second since the limiter started.
- ``SlidingWindow(rate)``: ``rate`` requests in any one-second window (a sliding log).

And two ways a server that is not rate limited shows load (no 429 at all):

- ``shed_above=n``: beyond ``n`` requests in flight, a 503 at once (a server shedding load);
- ``stall_above=n``: beyond ``n`` requests being worked on, the request is still stored but
  answered ``stall_ms`` late (a server past its capacity, timing out); a stalled request does
  not count as being worked on (its work is done, only its answer waits).

Each rate shape's ``take(now)`` returns None (admitted) or the seconds until it would admit.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from typing import Literal, Protocol

Window = Literal["bucket", "fixed", "sliding"]
RetryAfterMode = Literal["present", "zero", "absent"]
WINDOWS: tuple[Window, ...] = ("bucket", "fixed", "sliding")
RETRY_AFTER_MODES: tuple[RetryAfterMode, ...] = ("present", "zero", "absent")


class RateShape(Protocol):
    def take(self, now: float) -> float | None: ...


class TokenBucket:
    def __init__(self, rate: float, burst_s: float, now: float) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate * burst_s)
        self._tokens = self.capacity  # starts full, as gateways do
        self._last = now

    def take(self, now: float) -> float | None:
        self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return (1.0 - self._tokens) / self.rate


class FixedWindow:
    def __init__(self, rate: float, now: float) -> None:
        self._limit = max(1, int(rate))
        self._start = now
        self._index = 0
        self._count = 0

    def take(self, now: float) -> float | None:
        index = math.floor(now - self._start)
        if index != self._index:
            self._index, self._count = index, 0
        if self._count < self._limit:
            self._count += 1
            return None
        return self._start + index + 1 - now


class SlidingWindow:
    def __init__(self, rate: float) -> None:
        self._limit = max(1, int(rate))
        self._log: deque[float] = deque()

    def take(self, now: float) -> float | None:
        while self._log and self._log[0] <= now - 1.0:
            self._log.popleft()
        if len(self._log) < self._limit:
            self._log.append(now)
            return None
        return self._log[0] + 1.0 - now


def make_shape(window: Window, rate: float, burst_s: float, now: float) -> RateShape:
    if window == "fixed":
        return FixedWindow(rate, now)
    if window == "sliding":
        return SlidingWindow(rate)
    return TokenBucket(rate, burst_s, now)


@dataclass(kw_only=True)
class Limits:
    """The limits the fake API enforces on POSTs (none by default)."""

    max_inflight: int | None = None
    rate_limit: float | None = None
    burst_ms: float = 1000.0
    window: Window = "bucket"
    retry_after: RetryAfterMode = "present"
    latency_jitter_ms: float = 0.0
    shed_above: int | None = None
    stall_above: int | None = None
    stall_ms: float = 2000.0

    def __post_init__(self) -> None:
        for name in ("max_inflight", "shed_above", "stall_above"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1")
        if not self.stall_ms >= 0:
            raise ValueError("stall_ms must be >= 0")
        if self.rate_limit is not None and not self.rate_limit > 0:
            raise ValueError("rate_limit must be > 0")
        if not self.burst_ms >= 0 or not self.latency_jitter_ms >= 0:
            raise ValueError("burst_ms and latency_jitter_ms must be >= 0")
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {', '.join(WINDOWS)}")
        if self.retry_after not in RETRY_AFTER_MODES:
            raise ValueError(f"retry_after must be one of {', '.join(RETRY_AFTER_MODES)}")

    @property
    def active(self) -> bool:
        return bool(
            self.max_inflight
            or self.rate_limit
            or self.latency_jitter_ms
            or self.shed_above
            or self.stall_above
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """A 429 (or a 503 when shedding load): the message, and the Retry-After header value
    (None: absent)."""

    message: str
    retry_after: str | None
    status: int = 429


#: What a server shedding load answers beyond its limit (no Retry-After: it cannot tell).
SHED = Refusal("Service Unavailable", None, 503)


class Limiter:
    """Applies :class:`Limits`: ``admit`` a request (a Refusal, or None and a slot), ``done``."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.in_flight = 0
        self._shape: RateShape | None = None

    def reset(self) -> None:
        """A fresh rate window (requests still in flight keep their slots)."""
        self._shape = None

    def admit(self, now: float) -> Refusal | None:
        limits = self.limits
        if limits.shed_above is not None and self.in_flight >= limits.shed_above:
            return SHED
        if limits.max_inflight is not None and self.in_flight >= limits.max_inflight:
            return Refusal("Too many concurrent requests", self._header(1.0))
        if limits.rate_limit is not None:
            if self._shape is None:
                self._shape = make_shape(
                    limits.window, limits.rate_limit, limits.burst_ms / 1000.0, now
                )
            wait = self._shape.take(now)
            if wait is not None:
                return Refusal("Too Many Requests", self._header(wait))
        self.in_flight += 1
        return None

    def stalls(self) -> bool:
        """Whether an admitted request is answered ``stall_ms`` late: it came while
        ``stall_above`` others were being worked on. If so, it gives its slot back at once
        (call :meth:`done` now, not after the answer)."""
        above = self.limits.stall_above
        return above is not None and self.in_flight > above

    def done(self) -> None:
        self.in_flight -= 1

    def _header(self, wait: float) -> str | None:
        mode = self.limits.retry_after
        if mode == "absent":
            return None
        return "0" if mode == "zero" else str(max(1, math.ceil(wait)))
