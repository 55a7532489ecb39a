"""Delivery stage: send one record with rate limiting and retries, turn it into an Outcome.

Every attempt passes, in order: the shared gate (a 429's pause, an open circuit), the adaptive
concurrency limit, the fixed rate limit; its result feeds the gate and the limit back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

from aiolimiter import AsyncLimiter

from pipeline.aimd import AdaptiveLimit
from pipeline.circuit import Gate, OutageError
from pipeline.client import Created, FeedbackClient
from pipeline.errors import (
    Ambiguous,
    ApiError,
    AuthError,
    DeliveryError,
    PermanentApiError,
    TransportError,
)
from pipeline.models import Accepted, Outcome, Status
from pipeline.retry import retry_policy

#: Twilio's "resource not found": for this endpoint, the assistant does not exist.
_NOT_FOUND = 20404


class NotSentError(DeliveryError):
    """The run is stopping, or the record's assistant is known to be missing: never sent."""


def make_limiter(rate: float | None) -> AsyncLimiter | None:
    """A leaky bucket for ``rate`` requests per second, or None for no limit (None or 0).

    The bucket holds 10 ms worth of requests (at least one): a larger bucket lets a burst
    exceed the rate over a one-second window, a smaller one costs a timer wake-up per request.
    """
    if not rate:
        return None
    capacity = max(1.0, rate / 100)
    return AsyncLimiter(capacity, capacity / rate)


def _is_backpressure(exc: BaseException) -> bool:
    """The API (or the path to it) is overloaded: 429, 503, timeouts and other 5xx."""
    if isinstance(exc, ApiError):
        return exc.status in (429, 408) or exc.status >= 500
    return isinstance(exc, TransportError)


class Delivery:
    """Sends records one request at a time each; many calls run concurrently.

    ``stop`` is shared with the runner: once set (an interrupt, a 401/403 or a long outage seen
    here), no new request starts and backoff waits end early; records not sent come back as
    ``failed`` with 0 attempts so that ``replay`` or a rerun sends them.
    """

    def __init__(
        self,
        client: FeedbackClient,
        *,
        max_attempts: int,
        rate: float | None,
        stop: asyncio.Event,
        concurrency: int = 16,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
        max_outage: float = 600.0,
        notice: Callable[[str], None] = lambda _: None,
    ) -> None:
        self._client = client
        self._limiter = make_limiter(rate)
        self.stop = stop
        self.abort_reason: str | None = None
        self.retries = 0
        self._notice = notice
        self.limit = AdaptiveLimit(concurrency)
        self.gate = Gate(
            sleep=self.pause,
            stopped=stop.is_set,
            notice=notice,
            max_outage=max_outage,
            cooldown=min(1.0, max_backoff),
            max_cooldown=max_backoff,
        )
        self._missing: set[str] = set()
        self._policy = retry_policy(
            max_attempts, sleep=self.pause, initial_backoff=backoff, max_backoff=max_backoff
        )

    async def pause(self, seconds: float) -> None:
        # A wait that ends early when the run stops, instead of holding shutdown hostage.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._limiter is None:
            yield
        else:
            async with self._limiter:
                yield

    async def _request(self, item: Accepted, on_send: Callable[[], None]) -> Created:
        """One attempt, through the gate, the adaptive limit and the rate limit."""
        await self.gate.admit()
        started = await self.limit.acquire()
        pressure = throttled = False
        try:
            async with self._slot():
                if self.stop.is_set():
                    raise NotSentError("not sent: " + (self.abort_reason or "run stopped"))
                on_send()
                created = await self._client.create(item.record.assistant_id, item.record.body())
            self.gate.succeeded()
            return created
        except DeliveryError as exc:
            pressure = _is_backpressure(exc)
            throttled = isinstance(exc, ApiError) and exc.status == 429
            self._observe(exc)
            raise
        finally:
            self.limit.release(started, backpressure=pressure, throttled=throttled)

    def _observe(self, exc: DeliveryError) -> None:
        if isinstance(exc, ApiError) and exc.status == 429:
            # The limit is the account's: everyone waits, not only this worker. Without a
            # Retry-After, this worker's backoff and the adaptive limit slow things down.
            if exc.retry_after is not None:
                self.gate.pause(exc.retry_after)
        elif _is_backpressure(exc):
            self.gate.failed(str(exc))

    async def send(self, item: Accepted) -> Outcome:
        assistant = item.record.assistant_id
        if assistant in self._missing:
            return self.not_sent(item, f"assistant {assistant} not found (HTTP 404)")
        attempts = 0

        def count() -> None:
            nonlocal attempts
            attempts += 1
            if attempts > 1:
                self.retries += 1

        async def attempt() -> Created:
            if self.stop.is_set():
                raise NotSentError("not sent: " + (self.abort_reason or "run stopped"))
            return await self._request(item, count)

        try:
            created: Created = await self._policy.copy()(attempt)
        except NotSentError as exc:
            return Outcome(item.key, Status.FAILED, attempts, error_message=str(exc))
        except OutageError as exc:
            self.abort(str(exc))
            return self.not_sent(item, str(exc))
        except AuthError as exc:
            self.abort(f"authentication refused by the API ({exc})")
            return self._failed(item, attempts, exc, Status.FAILED)
        except DeliveryError as exc:
            self._note_missing(assistant, exc)
            status = Status.UNKNOWN if isinstance(exc, Ambiguous) else Status.FAILED
            return self._failed(item, attempts, exc, status)
        return Outcome(item.key, Status.SENT, attempts, created.status, created.feedback_id)

    def _note_missing(self, assistant: str, exc: DeliveryError) -> None:
        if (
            isinstance(exc, PermanentApiError)
            and exc.status == 404
            and assistant not in self._missing
        ):
            self._missing.add(assistant)
            self._notice(
                f"assistant {assistant}: not found (HTTP 404, Twilio error {exc.code}); "
                "its other records fail without being sent"
            )

    @staticmethod
    def _failed(item: Accepted, attempts: int, exc: DeliveryError, status: Status) -> Outcome:
        if isinstance(exc, ApiError):
            return Outcome(item.key, status, attempts, exc.status, None, exc.code, exc.message)
        return Outcome(item.key, status, attempts, error_message=str(exc))

    def abort(self, reason: str) -> None:
        """Stop the run for good, keeping the first reason given."""
        if self.abort_reason is None:
            self.abort_reason = reason
        self.stop.set()

    @staticmethod
    def not_sent(item: Accepted, reason: str) -> Outcome:
        return Outcome(item.key, Status.FAILED, 0, error_message=f"not sent: {reason}")
