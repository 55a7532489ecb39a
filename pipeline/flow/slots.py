"""The slots under a concurrency limit: who holds one, who waits for one, and in what order.

A request takes a slot before it waits for the rate limits and keeps it until its answer came
back; ``on_wire`` counts only those whose request left, and is the in-flight level a request
is judged at (:mod:`pipeline.flow.levels`). Waiters are woken first come, first served, as many as
the limit has room for; a waiter cancelled meanwhile gives its turn to the next.

A request overdue (:mod:`pipeline.flow.overdue`) gives its slot back before its answer, up to
``FREED_SHARE`` of the limit at once: a background of answers later than ``--timeout`` held a
slot each for the whole timeout, a tenth of the run at 1% of them and 20 ms. The worker of
that request still waits for its answer, so the slot goes to another (``on_freed``: the run
starts a spare worker; without it the slot freed stood idle). Only a share, so
that a server that stalls is never sent more than a quarter over the limit meanwhile (and
flow control lowers the limit when stalls rise with it).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from pipeline.flow.tickets import Ticket

#: At most this share of the limit (at least one) is given back by overdue requests at once.
FREED_SHARE = 0.25


def most_freed(limit: int) -> int:
    """Overdue requests that may hold no slot at once under ``limit``."""
    return max(1, int(limit * FREED_SHARE))


def most_open(ceiling: int) -> int:
    """Requests open at once at most under a ceiling of ``ceiling`` slots: the connections a
    client needs (fewer, and the slot an overdue request gave back waits for a connection)."""
    return ceiling + most_freed(ceiling)


class Slots:
    def __init__(
        self, limit: Callable[[], int], on_freed: Callable[[bool], None] = lambda _: None
    ) -> None:
        self._limit = limit  # read at every take and wake: the limit moves while requests wait
        # Told when an overdue request gives its slot back (True) and when its answer comes
        # (False): its worker waits meanwhile, so another must take the slot.
        self._on_freed = on_freed
        self.taken = 0  # requests holding a slot (on the wire or about to be)
        self.on_wire = 0
        self.filled = False  # every slot was taken at some point (since the caller cleared it)
        self.freed = 0  # overdue requests, unanswered, that gave their slot back
        self._waiters: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> bool:
        return bool(self._waiters)

    @property
    def free(self) -> bool:
        return self.taken < self._limit()

    async def take(self) -> None:
        """Wait for a free slot and take it."""
        while self.taken >= self._limit():
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
                raise
        self.take_now()

    def take_now(self) -> None:
        """Take a slot known to be free (the caller looked at :attr:`free`)."""
        self.taken += 1
        if self.taken >= self._limit():
            self.filled = True

    @property
    def full(self) -> bool:
        return self.taken >= self._limit()

    def sent(self) -> int:
        """A request holding a slot left: its level (requests on the wire, itself included)."""
        self.on_wire += 1
        return self.on_wire

    def overdue(self, ticket: Ticket) -> None:
        """A request became overdue: it leaves the wire, and gives its slot back if fewer than
        ``FREED_SHARE`` of the limit did so already."""
        self.on_wire -= 1
        if self.freed < most_freed(self._limit()):
            ticket.freed = True
            self.freed += 1
            self.taken -= 1
            self._on_freed(True)

    def give_back(self, ticket: Ticket | None) -> None:
        """A slot given back: its request (``ticket``) was answered, or never left (None).
        Nobody is woken yet: the caller does (:meth:`wake`) once the limit took the answer
        in."""
        if ticket is not None and ticket.freed:
            self.freed -= 1  # its slot went back when it became overdue
            self._on_freed(False)
            return
        self.taken -= 1
        if ticket is not None and not ticket.overdue:
            self.on_wire -= 1

    def wake(self) -> None:
        """Wake as many waiters as the limit has room for now."""
        free = self._limit() - self.taken
        while free > 0 and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                free -= 1
