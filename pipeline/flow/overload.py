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

The first requests, sent together before anything came back, are not counted by level: the
order they arrived in is anybody's guess. A stall among them still holds the limit at what is
answered in time, and ends slow start.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from pipeline.flow.aimd import Seeker
from pipeline.flow.levels import Levels
from pipeline.flow.overdue import Overdue
from pipeline.flow.tickets import Ticket

#: No error was load for this long: errors lately are noise (a retry need not back off)...
CALM_AFTER = 5.0
#: ... when the last verdict said so, or none could be reached (a run at its ceiling sends
#: at one level: nothing below to compare with) and errors were under this share lately.
QUIET_SHARE = 0.1


@dataclass(frozen=True, slots=True)
class Moved:
    """What the errors judged since the last look: requests that left the wire (overdue,
    ``late``), and the limit the API showed, if an error was load."""

    late: tuple[Ticket, ...] = ()
    shown: int | None = None


NOTHING = Moved()


class Overload:
    def __init__(self, limit: Seeker, ceiling: int, *, half_life: float, now: float) -> None:
        self._limit = limit
        self._levels = Levels(ceiling, half_life=half_life, now=now)
        self.overdue = Overdue()
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
        self, ticket: Ticket, now: float, ok: int, shown: int | None, *, noted: bool
    ) -> None:
        """A request failed (a 503, a timeout, a reset), ``ok`` being the highest level that
        succeeded lately: judged later (:meth:`look`) if ``noted`` (not one of the first
        requests, sent before anything came back: the order they arrived in is anybody's
        guess), but not sent into again meanwhile."""
        level = ticket.level
        if noted:
            self.overdue.answered(ticket, failed=True)
        self._hold(ticket, level, now, ok, shown, stalling=False)

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
        self, ticket: Ticket, level: int, now: float, ok: int, shown: int | None, *, stalling: bool
    ) -> None:
        # An overdue request in slow start too, while many are overdue (the levels that
        # succeeded lately counted the stalled ones): that ends slow start, which would
        # double into the stall again while the evidence of the levels comes in.
        stalls = ticket.overdue and self._limit.slow_start and stalling
        above = stalls or level > ok or (shown is not None and level > shown)
        if above and ticket.started >= self._limit.pressured_at:
            # As for the first 429s, slow start goes on from below the level; but the same
            # level twice ends it (a server that fails at once beyond N must not be sent
            # into again and again).
            self._limit.pressure(now, max(1.0, level - 1.0), confirmed=stalls)

    def _judge(self, ticket: Ticket, level: int, now: float, ok: int) -> bool:
        """A failure sent at ``level``: True when it is load (the limit moved)."""
        self._levels.note(level, False, now)
        load = self._levels.rises(level)
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
