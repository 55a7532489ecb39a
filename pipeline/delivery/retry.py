"""The retry policy: what is retried, and how long to wait between attempts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential_jitter

from pipeline.errors import Ambiguous, ApiError, RetryableApiError, TransportError

#: A server's Retry-After is obeyed up to this many seconds; a larger one is treated as this.
MAX_RETRY_AFTER = 300.0

Sleep = Callable[[float], Awaitable[None]]
T = TypeVar("T")


class wait_retry_after(wait_base):
    """The fallback backoff, but never less than the server's ``Retry-After``."""

    def __init__(self, fallback: wait_base) -> None:
        self._fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        backoff = self._fallback(retry_state)
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, ApiError) and exc.retry_after is not None:
            return max(backoff, min(exc.retry_after, MAX_RETRY_AFTER))
        return backoff


class wait_unless_noise(wait_base):
    """The backoff, unless failures lately are noise (``noise()``): then a short wait
    (``short()``). A backoff that doubles is for a server under load; a record that met a
    background 503 backing off for seconds only makes the run's last seconds longer."""

    def __init__(
        self, backoff: wait_base, noise: Callable[[], bool], short: Callable[[], float]
    ) -> None:
        self._backoff, self._noise, self._short = backoff, noise, short

    def __call__(self, retry_state: RetryCallState) -> float:
        return self._short() if self._noise() else self._backoff(retry_state)


def is_retryable(exc: BaseException) -> bool:
    """Not sent, and worth another try. Ambiguous failures are settled, never resent blindly."""
    return isinstance(exc, RetryableApiError | TransportError) and not isinstance(exc, Ambiguous)


def retry_policy(
    max_attempts: int,
    *,
    sleep: Sleep,
    initial_backoff: float = 0.5,
    max_backoff: float = 30.0,
    idempotent: bool = False,
    noise: tuple[Callable[[], bool], Callable[[], float]] | None = None,
) -> AsyncRetrying:
    """A tenacity policy: retry 408/429/503 and unsent requests with jittered backoff.

    Other 4xx (and 401/403, which abort the run) are never retried, nor are ambiguous
    failures. ``sleep`` is injectable so that tests run on a fake clock and shutdown can cut
    a backoff short. ``noise``: whether failures lately are noise, and the short wait then
    (see :class:`wait_unless_noise`). Use one ``.copy()`` per record: tenacity keeps per-call
    state on the instance.
    """
    # Jitter up to one initial backoff spreads out workers that failed together.
    backoff: wait_base = wait_exponential_jitter(
        multiplier=initial_backoff, max=max_backoff, jitter=initial_backoff
    )
    if noise is not None:
        backoff = wait_unless_noise(backoff, *noise)
    return AsyncRetrying(
        stop=stop_after_attempt(max_attempts),
        wait=wait_retry_after(backoff),
        # An idempotent request (a GET) can be repeated after an ambiguous failure too.
        retry=retry_if_exception(
            (lambda e: isinstance(e, RetryableApiError | TransportError))
            if idempotent
            else is_retryable
        ),
        sleep=sleep,
        reraise=True,
    )


async def after(policy: AsyncRetrying, first: Exception, fn: Callable[[], Awaitable[T]]) -> T:
    """``fn()`` under ``policy`` once a first attempt, made outside tenacity, failed with
    ``first``.

    Most attempts succeed, and tenacity's per-call set-up costs about as much CPU as the rest
    of our per-record work; so the first attempt is the caller's own, and tenacity takes over
    only after a failure. It is handed that failure as its own first attempt, so its stop,
    wait (Retry-After included) and retry rules apply exactly as if it had made the call."""
    replayed = False

    async def again() -> T:
        nonlocal replayed
        if not replayed:
            replayed = True
            raise first
        return await fn()

    result: T = await policy.copy()(again)
    return result
