"""A worker's lease on its claims in a shared ledger, as this process knows it.

The ledger (PostgreSQL) holds each run's ``lease_until`` on the database's clock; the
heartbeat renews it every second, and only while it has not run out: a lease that lapsed is
lost for good, because another worker may already be reconciling this run's claims.

This process cannot read the database's clock before every request, so it keeps its own
view on the monotonic clock: a renewal that *started* at ``t`` (and succeeded) makes the lease
valid until ``t + lease`` at least (the database set ``lease_until`` later than ``t``). A
request starts only while ``now < t + lease - margin``:

- ``margin`` covers the few microseconds to milliseconds between the check and the write on
  the socket, and clocks that tick at slightly different rates;
- between ``t + lease - margin`` and ``t + lease`` sending waits for a renewal;
- past ``t + lease`` (no renewal got through: a stalled ledger, a paused process) or once the
  ledger refuses a renewal, the lease is **lost**: the run stops sending and ends.

Reconciliation of a lost run's records waits for ``lease_until`` + the run's request time
bound (``--timeout``) + ``--settle`` (see :meth:`pipeline.ledger.Ledger.quiet_in`), so every
request this worker started under its lease has ended before anyone judges its records.

A ledger without leases (SQLite: one process holds the file's lock) uses :data:`NO_LEASE`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from pipeline.errors import LeaseLapsedError, LeaseLostError, LedgerError

#: How often a sending run renews its lease (and notes that it is alive).
HEARTBEAT_S = 1.0
#: The part of the lease kept back from sending (at most MAX_MARGIN_S seconds).
MARGIN_SHARE, MAX_MARGIN_S = 0.2, 3.0
#: How long one renewal may take: a stalled ledger is noticed within this (or a third of the
#: lease, whichever is shorter), well before the lease runs out.
RENEW_BOUND_S = 5.0
#: A renewal this many heartbeats after the one before is said to be late (a notice).
LATE_AFTER = 3


class LeaseGate(Protocol):
    """What delivery asks before each request."""

    def valid(self) -> bool:
        """Whether a request may start now (cheap: the hot path calls it per request)."""
        ...

    async def admit(self) -> None:
        """Wait until a request may start; raise :class:`LeaseLostError` if it never may."""
        ...

    def check(self) -> None:
        """Raise :class:`LeaseLapsedError` unless a request may be written now: the last
        check, as the request's body is written (``FeedbackClient(last_check=)``)."""
        ...


class _NoLease:
    def valid(self) -> bool:
        return True

    def check(self) -> None:
        return None

    async def admit(self) -> None:
        return None


#: A ledger without leases: every request may start.
NO_LEASE: LeaseGate = _NoLease()


class Lease:
    """``seconds``: the ledger's lease; ``renew``: one renewal, True if the ledger renewed the
    lease, False if it refused (the lease had run out there); ``on_lost``: told the reason
    once, when the lease is lost (the runner stops the run with it)."""

    def __init__(
        self,
        seconds: float,
        renew: Callable[[], Awaitable[bool]],
        *,
        on_lost: Callable[[str], None],
        notice: Callable[[str], None] = lambda _: None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.seconds = seconds
        self.margin = min(MAX_MARGIN_S, seconds * MARGIN_SHARE)
        self.renew_bound = min(RENEW_BOUND_S, seconds / 3)
        self._renew = renew
        self._on_lost = on_lost
        self._notice = notice
        self._clock = clock
        self._sleep = sleep
        self._renewed_at = clock()  # the ledger granted the lease as the run began
        self._renewed = asyncio.Event()
        self.lost: str | None = None  # why, once lost
        self._failing = False  # the last renewal failed (said once, until one succeeds)
        self._every = HEARTBEAT_S  # how often keep() renews

    def valid(self) -> bool:
        return self.lost is None and self._clock() < self._renewed_at + self.seconds - self.margin

    def check(self) -> None:
        if not self.valid():
            raise LeaseLapsedError(f"not sent: {self.lost or 'the lease is due a renewal'}")

    def remaining(self) -> float:
        """Seconds until the lease surely ran out at the ledger (negative: it has)."""
        return self._renewed_at + self.seconds - self._clock()

    async def admit(self) -> None:
        while not self.valid():
            self._check_expired()
            if self.lost is not None:
                raise LeaseLostError(f"not sent: {self.lost}")
            # Sending waits for the next renewal (or for the lease to run out, below).
            self._renewed.clear()
            try:
                await asyncio.wait_for(self._renewed.wait(), max(0.01, self.remaining()))
            except TimeoutError:
                self._check_expired()

    def _check_expired(self) -> None:
        if self.lost is None and self.remaining() <= 0:
            self._lose(
                f"no renewal reached the ledger for {self._clock() - self._renewed_at:.1f} s "
                f"(lease {self.seconds:g} s)"
            )

    def _lose(self, why: str) -> None:
        if self.lost is None:
            self.lost = f"lease lost: {why}"
            self._renewed.set()  # waiters wake up and find it lost
            self._notice(f"{self.lost}; sending stops now")  # as it happens, not at the end
            self._on_lost(self.lost)

    async def keep(self, every: float) -> None:
        """Renew every ``every`` seconds until the lease is lost or the task is cancelled.

        A renewal runs as a task of its own and is waited for at most ``renew_bound``: one
        stuck on a stalled ledger is left to finish (or fail) while the lease's own clock goes
        on, so the lease is found lost in time whatever the ledger does."""
        self._every = every
        renewal: asyncio.Task[bool] | None = None
        started = self._clock()
        try:
            while self.lost is None:
                if renewal is None:
                    started = self._clock()
                    renewal = asyncio.ensure_future(self._renew())
                done, _ = await asyncio.wait({renewal}, timeout=self.renew_bound)
                if done:
                    self._renewal_ended(renewal, started)
                    renewal = None
                else:
                    self._failed(f"no answer within {self.renew_bound:g} s")
                self._check_expired()
                if self.lost is None:
                    await self._sleep(every)
        finally:
            if renewal is not None:
                renewal.cancel()

    def _renewal_ended(self, renewal: asyncio.Task[bool], started: float) -> None:
        try:
            renewed = renewal.result()
        except LedgerError as exc:
            self._failed(str(exc))
            return
        if not renewed:
            self._lose("the ledger refused to renew it: it had run out there, and other "
                       "workers may be reconciling this worker's records")  # fmt: skip
        elif self._clock() - started > self.seconds:
            # Granted by the ledger, yet this process saw the lease run out meanwhile (it was
            # paused): others may have judged its records, so it is lost all the same.
            self._lose(f"this process was not running for {self._clock() - started:.1f} s")
        else:
            if self._failing:
                self._notice("lease: renewed again")
                self._failing = False
            elif started - self._renewed_at > LATE_AFTER * self._every:
                # Late, not failed: the ledger or this process was slow (a GC, a busy host).
                self._notice(
                    f"lease: renewed late, {started - self._renewed_at:.1f} s after the renewal "
                    f"before (every {self._every:g} s; the lease is {self.seconds:g} s)"
                )
            self._renewed_at = started
            self._renewed.set()

    def _failed(self, why: str) -> None:
        if not self._failing:
            self._notice(
                f"lease: renewal failed ({why}); sending goes on while the lease holds "
                f"({max(0.0, self.remaining() - self.margin):.1f} s more), then stops"
            )
        self._failing = True
