"""Errors that are load, and errors that are noise: what a 503, a timeout, a reset or a stall
does to the concurrency limit (see :mod:`pipeline.flow.compose`).

A server that sheds load or stalls beyond N requests in flight fails requests above N and
none below; a background of errors comes at the same share at every level, however high that
share. So an error is load when the share of errors at its level and above is several times
the share below (:meth:`~pipeline.flow.levels.Levels.rises`): the limit drops to the highest level
that succeeded below it, and that is a limit the API showed. A run at its limit sends nearly
every request at that level: the share there is compared with what the levels below showed
before (on the way up, or before a probe). Errors are judged once any stall before them is
known (:mod:`pipeline.flow.overdue`), so a few round trips late; meanwhile an error above every
level that succeeded lately (or above a limit shown before: a probe) holds the limit below
it, so that a server that fails at once is not sent a flood. Such a drop is no limit shown:
the limit grows back as after any drop, and it never becomes advice.

One rule needs no levels: when most of the last answers failed (``STORM_ERRORS``), the
server fails what it is sent, whatever the levels say, and the limit halves at once (once a
round trip), with no growth in that epoch. Levels can be misread: a request refused at once
counts in flight for a moment, and a success sent at a level the server never saw makes the
levels below look safe, so a server that sheds at once beyond N could be sent a storm of
requests, each shed in a millisecond. Noise, at any share a working API shows, fails a few
answers among many: it never makes a storm.

The first requests, sent together before anything came back, are not counted by level: the
order they arrived in is anybody's guess. A stall among them still holds the limit at what is
answered in time, and ends slow start.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass
from itertools import islice

from pipeline.flow.aimd import Seeker
from pipeline.flow.levels import Levels
from pipeline.flow.overdue import STALLED_SHARE, Overdue
from pipeline.flow.tickets import Ticket

#: No error was load for this long: errors lately are noise (a retry need not back off)...
CALM_AFTER = 5.0
#: ... when the last verdict said so, or none could be reached (a run at its ceiling sends
#: at one level: nothing below to compare with) and errors were under this share lately.
QUIET_SHARE = 0.1
#: Of the last answers (twice the limit), at least half failed, and at least this many: a
#: storm (see the module's doc). Noise never is: even 10% of errors, at a limit of one, has
#: 8 errors among 16 answers once in 10^5 windows.
STORM_ERRORS = 8


@dataclass(frozen=True, slots=True)
class Moved:
    """What the errors judged since the last look: requests that left the wire (overdue,
    ``late``), and the limit the API showed, if an error was load."""

    late: tuple[Ticket, ...] = ()
    shown: int | None = None


NOTHING = Moved()


class Storm:
    """The last answers, failed or not: counted in answers, not seconds, so that a client
    that stalled a moment (and then reads a batch of answers in any order) does not see a
    second of errors where there were a few among many."""

    def __init__(self, ceiling: int) -> None:
        self._last: deque[bool] = deque(maxlen=2 * ceiling + STORM_ERRORS)  # True: failed

    def succeeded(self) -> None:
        self._last.append(False)

    def share(self, answers: int) -> float:
        """The share of the last ``answers`` answers that failed (0 before any)."""
        last = list(islice(reversed(self._last), answers))
        return sum(last) / len(last) if last else 0.0

    def failed(self, limit: int) -> bool:
        """An error: whether most of the last answers (twice the ``limit``) failed, at least
        ``STORM_ERRORS``, and some did not (nothing answered in time is an outage, the
        circuit breaker's, or the client's own pause)."""
        self._last.append(True)
        last = list(islice(reversed(self._last), max(2 * STORM_ERRORS, 2 * limit)))
        failed = sum(last)
        return failed < len(last) and failed >= max(STORM_ERRORS, len(last) / 2)


class Overload:
    def __init__(self, limit: Seeker, ceiling: int, *, half_life: float, now: float) -> None:
        self._limit = limit
        self._levels = Levels(ceiling, half_life=half_life, now=now)
        self.overdue = Overdue()
        self.storm = Storm(ceiling)
        self.stormed_at = -math.inf  # the last storm's drop (see the module's doc)
        self._first_failures = 0  # of the first requests (see _first_failed)
        self.noise = 0  # errors that came at every level: no evidence of load
        self.load = 0  # errors that rose with the level
        self._load_at = -math.inf
        self._noise_at = -math.inf

    def calm(self, now: float) -> bool:
        """Errors lately are noise: none was load for ``CALM_AFTER`` seconds, and the last
        verdict said noise, or none was reached and errors are rare (``QUIET_SHARE``)."""
        if now - self._load_at <= CALM_AFTER:
            return False
        if self._noise_at > self._load_at:
            return True
        share = self._levels.error_share()
        return share is not None and share < QUIET_SHARE

    def failed(
        self,
        ticket: Ticket,
        now: float,
        ok: int,
        shown: int | None,
        *,
        noted: bool,
        on_wire: int,
        first_sent: int,
    ) -> None:
        """A request failed (a 503, a timeout, a reset), ``ok`` being the highest level that
        succeeded lately: judged later (:meth:`look`) if ``noted`` (not one of the first
        requests, sent before anything came back: the order they arrived in is anybody's
        guess), but not sent into again meanwhile; at once if it makes a storm. ``on_wire``:
        the requests still unanswered, ``first_sent`` the first requests."""
        stormy = self.storm.failed(max(1, int(self._limit.value)))
        if stormy and ticket.started >= self._limit.pressured_at:
            self._limit.halve(now)
            self.stormed_at = now
        elif noted:
            self.overdue.answered(ticket, failed=True)
            self._hold(ticket, ticket.level, now, ok, shown, stalling=False)
        else:
            self._first_failed(ticket, now, on_wire, first_sent)

    def _first_failed(self, ticket: Ticket, now: float, on_wire: int, first_sent: int) -> None:
        """One of the first requests failed: the server holds at most those still on the
        wire (a server that sheds beyond N answers the rest at once), so the limit goes on
        from there, each such error lowering it further as the answers come in (one
        measure); not from the request's own level, which is anybody's guess. Slow start
        ends once ``STALLED_SHARE`` of the first requests failed: a few is noise, that many
        is a server refusing what it does not hold."""
        self._first_failures += 1
        limit = self._limit
        confirmed = self._first_failures >= STALLED_SHARE * first_sent
        good = max(1.0, min(float(on_wire), limit.value))
        if confirmed or ticket.started >= limit.pressured_at:
            limit.pressure(now, good, confirmed=confirmed)
        else:
            limit.value = good

    def look(
        self, now: float, rtt: float | None, on_wire: int, ok: int, shown: int | None, first: float
    ) -> Moved:
        """Judge what can be judged by now: requests overdue, answers whose evidence is in;
        not requests sent before ``first``, the first answer (as :meth:`failed` says), though
        an overdue one holds the limit back all the same."""
        overdue = self.overdue.due(now, rtt)
        found: int | None = None
        for ticket, level, failed in self.overdue.ripe(now, rtt):
            if not failed:
                self._levels.note(level, True, now)
            elif self._judge(ticket, level, now, ok):
                found = max(1, int(self._limit.value))
        if not overdue and found is None:
            return NOTHING
        live = on_wire - len(overdue)
        stalling = self.overdue.stuck(live)
        for late, level in overdue:
            if late.started < first:  # its level is anybody's guess; what is answered is not
                level = max(level, live + 1)
            self._hold(late, level, now, ok, shown, stalling=stalling)
            if late.started >= first and self._judge(late, level, now, ok):
                found = max(1, int(self._limit.value))
        return Moved(tuple(late for late, _ in overdue), found)

    def _hold(
        self,
        ticket: Ticket,
        level: int,
        now: float,
        ok: int,
        shown: int | None,
        *,
        stalling: bool,
    ) -> None:
        # An overdue request in slow start too, while many are overdue (the levels that
        # succeeded lately counted the stalled ones): that ends slow start, which would
        # double into the stall again while the evidence of the levels comes in.
        stalls = ticket.overdue and self._limit.slow_start and stalling
        above = stalls or level > ok or (shown is not None and level > shown)
        limit = self._limit
        if not above or ticket.started < limit.pressured_at:
            return
        good = max(1.0, level - 1.0)
        # As for the first 429s, slow start goes on from below the level, unless a quarter
        # of the answers of the last round trip failed (a server that fails at once beyond
        # N must not be sent into again and again); a few errors among many are noise, at
        # whatever level they come.
        heavy = self.storm.share(max(1, int(limit.value))) >= STALLED_SHARE
        if limit.slow_start and not (stalls or heavy or ticket.overdue):
            limit.cut(now, min(1.0, good / limit.value), confirmed=False)
        else:  # an overdue one at the same level twice ends slow start (a stall beyond N)
            limit.pressure(now, good, confirmed=stalls or heavy)

    def _judge(self, ticket: Ticket, level: int, now: float, ok: int) -> bool:
        """A failure sent at ``level``: True when it is load (the limit moved)."""
        self._levels.note(level, False, now)
        load = self._levels.rises(level)
        good = None if self._limit.slow_start else self._limit.good
        if load is None and good is not None and level > good:
            # A probe above the level a limit found held, failed: too few there to tell,
            # but no error at every level either (nothing moves: the hold did).
            self.load += 1
            return False
        if not load:
            self.noise += 1
            if load is False:
                self._noise_at = now
            return False
        self.load += 1
        self._load_at = now
        # Once per round trip; and a drop made before the evidence was in is a measure now.
        if ticket.started >= self._limit.pressured_at or self._limit.slow_start:
            below = level - 1
            self._limit.pressure(now, max(1.0, min(below, ok or below)))
        return True

    def unknown(self, now: float, rtt: float | None, on_wire: int) -> bool:
        """Growth must wait, the evidence is not in: in slow start, requests stall; probing,
        a request sent above the level that held is unanswered a while after."""
        if self._limit.slow_start:
            return self.overdue.stalling(now, rtt, on_wire)
        good = self._limit.good
        return good is not None and self.overdue.pending_above(good, now, rtt)
