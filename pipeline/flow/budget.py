"""A request-rate budget shared by the workers of a scope (``--rate-scope``), as delivery
sees it: wait for a slot, report a 429's Retry-After. The budget itself is kept in Redis
(:mod:`pipeline.flow.shared`), imported only when a run has a scope, so that the Redis client
library is needed only by those who use it.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Protocol

from pipeline.extras import load
from pipeline.flow.tickets import Kind, Result
from pipeline.stopping import Stopping

if TYPE_CHECKING:
    from pipeline.flow.shared import SharedRate


class RateBudget(Protocol):
    """A shared budget: wait for a slot; report a 429's Retry-After."""

    async def acquire(self) -> None: ...

    def throttled(self, retry_after: float) -> None: ...


class ScopeLimiter:
    """The scope's budget as a :class:`~pipeline.flow.limiter.Limiter`: a request waits for
    its slot in the budget; a 429 with a Retry-After pauses the whole scope, so that every
    worker of it waits it out."""

    def __init__(self, budget: RateBudget) -> None:
        self._budget = budget

    def try_acquire(self) -> bool | None:
        return None  # a slot is reserved in Redis: always a round trip

    async def acquire(self) -> bool:
        await self._budget.acquire()
        return True

    def release(self, ticket: bool, result: Result) -> None:
        if result.kind is Kind.THROTTLED and result.retry_after is not None:
            self._budget.throttled(result.retry_after)


@contextlib.asynccontextmanager
async def shared_rate(
    url: str | None,
    account: str,
    *,
    rate: float,
    max_outage: float,
    control: Stopping,
    notice: Callable[[str], None],
) -> AsyncIterator[SharedRate | None]:
    """The budget of the scope ``url`` names (None without one), for one run; its waits end
    when ``control`` stops the run."""
    if url is None:
        yield None
        return
    module = load("pipeline.flow.shared", what="--rate-scope")
    shared: SharedRate = module.SharedRate(
        url,
        account,
        rate=rate,
        max_outage=max_outage,
        sleep=control.pause,
        stopped=lambda: control.stopped,
        notice=notice,
    )
    try:
        yield shared
    finally:
        await shared.close()


def both(
    own: Callable[[], Awaitable[None]], shared: RateBudget | None
) -> Callable[[], Awaitable[None]]:
    """Wait for this worker's own limit, then for the scope's budget (if any)."""
    if shared is None:
        return own

    async def acquire() -> None:
        await own()
        await shared.acquire()

    return acquire
