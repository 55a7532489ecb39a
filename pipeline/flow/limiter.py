"""The one limiter interface, and the limiters a request passes composed as a list.

A limiter hands out a ticket (:meth:`Limiter.acquire`, or :meth:`Limiter.try_acquire` where it
would not wait, without a coroutine) and takes it back with the request's :class:`Result`,
the evidence it moves on (:meth:`Limiter.release`). A run's delivery passes, in order:

1. flow control (:class:`~pipeline.flow.compose.FlowControl`): a slot under the adaptive
   concurrency limit, the hold, the adaptive rate cap, the user's fixed ``--rate``;
2. the ``--rate-scope`` budget shared by every worker of the scope
   (:class:`~pipeline.flow.budget.ScopeLimiter`), when the run has one.

:class:`Limiters` takes them in that order and gives them back in reverse; if one fails while
waiting, those taken before it are given back with :data:`NOTHING_LEARNED`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, TypeVar

from pipeline.flow.tickets import Kind, Result

T = TypeVar("T")
#: The result of a request that says nothing about load (it was never sent, or failed so).
NOTHING_LEARNED = Result(Kind.OTHER)


class Limiter(Protocol[T]):
    def try_acquire(self) -> T | None:
        """A ticket without waiting, or None where taking one would wait."""

    async def acquire(self) -> T:
        """A ticket, once this limit lets the request go."""

    def release(self, ticket: T, result: Result) -> None:
        """The request's ticket back, with what its answer tells."""


class Limiters:
    """Limiters composed as a list: taken in order, given back in reverse order."""

    def __init__(self, limiters: Sequence[Limiter[Any]]) -> None:
        self._limiters = tuple(limiters)
        self._one = self._limiters[0] if len(self._limiters) == 1 else None

    def try_acquire(self) -> list[Any] | None:
        """Every ticket without waiting, else None. Only a single limiter is tried so: giving
        back a ticket taken for nothing would be evidence about load that is not there (the
        shared budget asks Redis anyway, so a scope's requests always wait their turn)."""
        if self._one is None:
            return None
        ticket = self._one.try_acquire()
        return None if ticket is None else [ticket]

    async def acquire(self) -> list[Any]:
        tickets: list[Any] = []
        try:
            for limiter in self._limiters:
                ticket = limiter.try_acquire()
                tickets.append(await limiter.acquire() if ticket is None else ticket)
        except BaseException:
            self.release(tickets, NOTHING_LEARNED)
            raise
        return tickets

    def release(self, tickets: list[Any], result: Result) -> None:
        if self._one is not None:  # the common case, once per request
            self._one.release(tickets[0], result)
            return
        for limiter, ticket in reversed(list(zip(self._limiters, tickets, strict=False))):
            limiter.release(ticket, result)
