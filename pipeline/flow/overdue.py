"""Requests that stall: still unanswered many round trips after they left.

A server past its capacity may stop answering the requests beyond it rather than refuse them;
the client learns that only when its ``--timeout`` ends them, seconds later. So a request
unanswered after ``OVERDUE_RTTS`` round trips (a latency that rose many times over) is judged
at once, as a failure at the level it was sent at (:mod:`pipeline.flow.overload` tells load from
noise), and stops counting on the wire. Its own answer, when it comes, is not judged again.

While it stalled, every request sent counted it as in flight, though the server no longer
worked on it: their levels were one too high, and a success there would read as "this level
works". So answers (successes and errors alike, so that neither is counted before the other)
are noted only once any stall before them would have been found (the same ``OVERDUE_RTTS``
after they left), at their level less the stalls found on the wire then.

Before a request is overdue, a quarter of those on the wire unanswered after ``LATE_RTTS``
round trips (or overdue and still unanswered) already says the server stalls (or the network
does): slow start does not grow into it; and a probe above a level that held does not step
further while a request sent above that level is that late (its evidence is not in).

The first requests of a run leave together, before any round trip is known, and a server
that stalls beyond N answers the first N of them in time: a slot each of those successes
earned in slow start, granted at once, doubled the run into the stall before the rest could
look late. So while a quarter of the first requests are unanswered, the slots their
successes earn (:class:`Growth`) wait half a round trip (the spread of answers to requests
sent together), and are forgotten if that many are still unanswered then.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from pipeline.flow.tickets import Ticket

#: Round trips (the smoothed one) after which an unanswered request is overdue...
OVERDUE_RTTS = 4.0
#: ... and never sooner than this (a busy client's own delays are not a stall).
MIN_OVERDUE = 0.1
#: This share of the requests on the wire unanswered after this many round trips is a stall.
STALLED_SHARE = 0.25
#: This share of them overdue ends slow start (see pipeline.flow.overload).
STUCK_SHARE = 0.4
LATE_RTTS = 1.5


class Growth:
    """Slow start's growth from the first requests' successes, held until those requests
    that are late would show (see the module's doc)."""

    def __init__(self) -> None:
        self._due: deque[tuple[float, float]] = deque()  # (may be granted at, earned at)

    @property
    def pending(self) -> bool:
        return bool(self._due)

    def earned(self, now: float, rtt: float) -> None:
        """A success, answered ``now``, of one of the first requests while others waited
        for a slot and some of the first requests were unanswered: granted once those had
        half a round trip more (answers of requests sent together spread that much)."""
        self._due.append((now + rtt / 2, now))

    def granted(self, now: float, *, late: bool, dropped_at: float) -> int:
        """How many slots earned may be added now, ``late`` saying whether a quarter of the
        first requests are unanswered: one an answer, as TCP's ack clock (slots granted
        together would send a burst into a limit before its first refusal came back), once
        they are not, or had their half round trip; none if they are late then, and those
        earned are forgotten, as are those earned before the limit last dropped
        (``dropped_at``: earned above it)."""
        due = self._due
        while due and due[0][1] < dropped_at:
            due.popleft()
        if not due or (late and due[0][0] > now):
            return 0
        if late:
            due.clear()
            return 0
        due.popleft()
        return 1


class Overdue:
    def __init__(self) -> None:
        self._wire: deque[Ticket] = deque()  # in the order they left
        self._stalls: deque[tuple[float, float]] = deque()  # (left, found overdue) lately
        self._answered: deque[tuple[Ticket, bool]] = deque()  # answers not noted yet, failed?
        self._stuck: list[Ticket] = []  # overdue, not answered yet

    def sent(self, ticket: Ticket) -> None:
        self._wire.append(ticket)

    def answered(self, ticket: Ticket, *, failed: bool) -> None:
        """An answer (``failed``: an error), to note once any stall before it is known
        (:meth:`ripe`)."""
        self._answered.append((ticket, failed))

    def _old(self, now: float, rtt: float) -> list[Ticket]:
        """Requests unanswered ``LATE_RTTS`` round trips after they left (overdue ones too)."""
        self._stuck = [ticket for ticket in self._stuck if not ticket.answered]
        since = now - max(MIN_OVERDUE / 2, LATE_RTTS * rtt)
        old = list(self._stuck)
        for ticket in self._wire:
            if ticket.started >= since:
                break
            if not ticket.answered:
                old.append(ticket)
        return old

    def unanswered(self, *, before: float) -> int:
        """Requests that left before ``before`` and are unanswered (overdue ones too)."""
        stuck = sum(1 for ticket in self._stuck if not ticket.answered)
        wire = 0
        for ticket in self._wire:
            if ticket.started >= before:
                break
            wire += not ticket.answered
        return stuck + wire

    def stalling(self, now: float, rtt: float | None, on_wire: int) -> bool:
        """Whether ``STALLED_SHARE`` of the requests on the wire (``on_wire``, and the
        overdue ones) are unanswered ``LATE_RTTS`` round trips after they left."""
        if rtt is None:
            return False
        old = len(self._old(now, rtt))
        return old >= STALLED_SHARE * (on_wire + len(self._stuck)) > 0

    def stuck(self, on_wire: int) -> bool:
        """Whether ``STUCK_SHARE`` of the requests on the wire (``on_wire``, and the overdue
        ones) are overdue and still unanswered."""
        self._stuck = [ticket for ticket in self._stuck if not ticket.answered]
        return len(self._stuck) >= STUCK_SHARE * (on_wire + len(self._stuck)) > 0

    def pending_above(self, level: float, now: float, rtt: float | None) -> bool:
        """Whether a request sent above ``level`` is unanswered ``LATE_RTTS`` round trips after."""
        return rtt is not None and any(t.level > level for t in self._old(now, rtt))

    def due(self, now: float, rtt: float | None) -> list[tuple[Ticket, int]]:
        """Requests that became overdue by ``now`` (each once, oldest first), with their
        level less the stalls found on the wire when they left."""
        wire = self._wire
        while wire and wire[0].answered:
            wire.popleft()
        if self._stuck and self._stuck[0].answered:  # answered by now: not stuck any more
            self._stuck = [ticket for ticket in self._stuck if not ticket.answered]
        if rtt is None or not wire:
            return []
        since = now - max(MIN_OVERDUE, OVERDUE_RTTS * rtt)
        found = []
        while wire and wire[0].started < since:
            ticket = wire.popleft()
            if not ticket.answered:
                ticket.overdue = True
                self._stuck.append(ticket)
                found.append((ticket, ticket.level - self._stalled(ticket.started)))
                self._stalls.append((ticket.started, now))
        return found

    def ripe(self, now: float, rtt: float | None) -> Iterator[tuple[Ticket, int, bool]]:
        """Answers old enough that any stall before them is known, with their level less the
        stalls found on the wire when they left, and whether they failed."""
        since = now - max(MIN_OVERDUE, OVERDUE_RTTS * (rtt or 0.0))
        answered = self._answered
        while answered and answered[0][0].started < since:
            ticket, failed = answered.popleft()
            yield ticket, ticket.level - self._stalled(ticket.started), failed
        # A stall found before the oldest answer still to note, and before the oldest
        # request on the wire, cannot have been on the wire when any of those left.
        oldest = answered[0][0].started if answered else since
        if self._wire:
            oldest = min(oldest, self._wire[0].started)
        stalls = self._stalls
        while stalls and stalls[0][1] < oldest:
            stalls.popleft()

    def _stalled(self, started: float) -> int:
        """Stalls on the wire (not yet found) when a request left at ``started``."""
        return sum(1 for left, found in self._stalls if left < started < found)
