"""A refusal (a 429) read: which limit it is evidence against, and what moves.

The levels it comes at tell (:mod:`pipeline.flow.levels`), not the Retry-After header:
refused above every in-flight level that succeeded lately, where most requests lately were
refused, it is a **concurrency** refusal and the limit drops to the level below it; refused
among successes at its level, a **rate** refusal, and the rate cap moves
(:mod:`pipeline.flow.ratecap`); either way a Retry-After may hold everyone back
(:mod:`pipeline.flow.hold`). The overview is the package's (:mod:`pipeline.flow`).
"""

from __future__ import annotations

import math
from abc import abstractmethod

from pipeline.flow.aimd import Seeker
from pipeline.flow.hold import Hold
from pipeline.flow.levels import Levels
from pipeline.flow.ratecap import RateCap
from pipeline.flow.tickets import Ticket


class Refusals:
    """The refusal signal of :class:`~pipeline.flow.compose.FlowControl`, which holds the
    state it reads and moves."""

    ceiling: int
    hold: Hold
    rtt: float | None
    shown: int | None
    _limit: Seeker
    _rate: RateCap
    _levels: Levels
    _ok_level: int
    _inflight_limit: float

    @property
    @abstractmethod
    def concurrency(self) -> int: ...

    @abstractmethod
    def _refused(self) -> None: ...

    def _throttled(self, ticket: Ticket, retry_after: float | None, now: float) -> None:
        self._refused()
        if self._ok_level:  # the first refusals, before any success, are no evidence
            self._levels.note(ticket.level, False, now)
        above = self._ok_level < ticket.level  # nothing succeeded lately this high
        if not self._ok_level:  # nothing to compare with yet: a Retry-After says rate
            inflight: bool | None = retry_after is None
        elif ticket.level > self._inflight_limit and retry_after is None:
            # A probe above the in-flight limit found before, refused: back to it, even if a
            # request at that level got through (the server's count and ours differ by a
            # request on its way); it is not a rate refusal, and sets no rate cap. Not when a
            # few are refused among many there: a rate limit's bunched requests, above an
            # in-flight limit its first burst misread.
            inflight = self._levels.probe(ticket.level)
        else:
            inflight = self._levels.inflight(ticket.level) if above else False
        if inflight is None:
            pass  # one refusal above what worked: no pattern yet, the record just waits
        elif inflight:
            self._inflight(ticket, now)
        else:
            if ticket.level <= self._inflight_limit < math.inf:
                # Refused at a level an in-flight limit admits: the rate is what is refused,
                # and the in-flight limit was a rate limit's refusals misread.
                self._inflight_limit = math.inf
                self.shown = None
                self._limit.relax()
            run = self.hold.in_run(now, self.rtt)
            if self._rate.refused(ticket.paced, now, self.rtt, ticket.started, run=run):
                self._room()
        if self.hold.refused(retry_after, now, self.rtt):
            self._limit.cut(now, 0.0, confirmed=self._ok_level > 0)

    def _inflight(self, ticket: Ticket, now: float) -> None:
        """An in-flight refusal: the limit drops to the level below it, once per round trip."""
        if ticket.started >= self._limit.pressured_at:
            # Before anything succeeded, a refusal cannot tell an in-flight limit from a rate
            # limit's first burst: keep slow start on from the lower level.
            confirmed = self._ok_level > 0
            self._limit.pressure(now, max(1.0, ticket.level - 1.0), confirmed=confirmed)
            self._inflight_limit = self._limit.value
            if confirmed:
                self.shown = self.concurrency

    def _room(self) -> None:
        """The cap sets the pace now: the concurrency limit must leave it room to do so."""
        cap = self._rate.value or 0.0
        need = min(cap * (self.rtt or 0.05) * 1.5 + 1.0, self._inflight_limit)
        if self._limit.value < need:
            self._limit.value = min(float(self.ceiling), need)
            self._limit.relax()
