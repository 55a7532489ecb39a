"""Delivery stage: send one record with rate limiting and retries, turn it into an Outcome."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiolimiter import AsyncLimiter

from pipeline.client import Created, FeedbackClient
from pipeline.errors import (
    AmbiguousApiError,
    AmbiguousTransportError,
    ApiError,
    AuthError,
    DeliveryError,
    TransportError,
)
from pipeline.models import Accepted, Outcome, Status
from pipeline.retry import retry_policy


class NotSentError(DeliveryError):
    """The run is stopping: this record's request was never sent."""


def make_limiter(rate: float | None) -> AsyncLimiter | None:
    """A leaky bucket for ``rate`` requests per second, or None for no limit (None or 0).

    The bucket holds 10 ms worth of requests (at least one): a larger bucket lets a burst
    exceed the rate over a one-second window, a smaller one costs a timer wake-up per request.
    """
    if not rate:
        return None
    capacity = max(1.0, rate / 100)
    return AsyncLimiter(capacity, capacity / rate)


class Delivery:
    """Sends records one request at a time each; many calls run concurrently.

    ``stop`` is shared with the runner: once set (an interrupt, or a 401/403 seen here), no new
    request starts and backoff waits end early; records not sent come back as ``failed`` with
    0 attempts so that ``replay`` or a rerun sends them.
    """

    def __init__(
        self,
        client: FeedbackClient,
        *,
        max_attempts: int,
        rate: float | None,
        stop: asyncio.Event,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        self._client = client
        self._limiter = make_limiter(rate)
        self.stop = stop
        self.abort_reason: str | None = None
        self.retries = 0
        self._policy = retry_policy(
            max_attempts, sleep=self.pause, initial_backoff=backoff, max_backoff=max_backoff
        )

    async def pause(self, seconds: float) -> None:
        # A backoff that ends early when the run stops, instead of holding shutdown hostage.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._limiter is None:
            yield
        else:
            async with self._limiter:
                yield

    async def send(self, item: Accepted) -> Outcome:
        attempts = 0

        async def attempt() -> Created:
            nonlocal attempts
            async with self._slot():
                if self.stop.is_set():
                    raise NotSentError("not sent: " + (self.abort_reason or "run stopped"))
                attempts += 1
                if attempts > 1:
                    self.retries += 1
                return await self._client.create(item.record.assistant_id, item.record.body())

        try:
            created: Created = await self._policy.copy()(attempt)
        except AuthError as exc:
            self.abort(f"authentication refused by the API ({exc})")
            return self._failed(item, attempts, exc)
        except (AmbiguousApiError, AmbiguousTransportError) as exc:
            return self._failed(item, attempts, exc, Status.UNKNOWN)
        except ApiError as exc:
            return self._failed(item, attempts, exc)
        except (TransportError, NotSentError) as exc:
            return Outcome(item.key, Status.FAILED, attempts, error_message=str(exc))
        return Outcome(item.key, Status.SENT, attempts, created.status, created.feedback_id)

    @staticmethod
    def _failed(
        item: Accepted, attempts: int, exc: DeliveryError, status: Status = Status.FAILED
    ) -> Outcome:
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
