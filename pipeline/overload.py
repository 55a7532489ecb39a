"""Errors that are load, and errors that are noise: the evidence a 503, a timeout or a reset
gives (see :mod:`pipeline.flow`).

A server that sheds load or stalls beyond N requests in flight fails requests above N and
none below; a background of errors comes at the same share at every level, however high that
share. So an error is load when the share of errors at its level and above is several times
the share below (:meth:`~pipeline.levels.Levels.rises`). A run at its limit sends nearly every
request at that level: the share there is compared with what the levels below showed before
(on the way up, or before a probe), and with nothing below to compare with, nothing is load.
"""

from __future__ import annotations

import math

from pipeline.levels import Levels

#: No error was load for this long: errors lately are noise (a retry need not back off).
CALM_AFTER = 5.0


class Overload:
    def __init__(self, ceiling: int, *, half_life: float, now: float) -> None:
        self._levels = Levels(ceiling, half_life=half_life, now=now)
        self.noise = 0  # errors that came at every level: no evidence of load
        self.load = 0  # errors that rose with the level
        self._load_at = -math.inf

    def answered(self, level: int, now: float) -> None:
        """A request sent at ``level`` was answered (not by an error)."""
        self._levels.note(level, True, now)

    def failed(self, level: int, now: float) -> bool | None:
        """A request sent at ``level`` failed (a 503, a timeout, a reset); True when that is
        evidence of load, False when of noise, None while too little says either way."""
        self._levels.note(level, False, now)
        load = self._levels.rises(level)
        if load:
            self.load += 1
            self._load_at = now
        else:
            self.noise += 1
        return load

    def calm(self, now: float) -> bool:
        """No error was load for ``CALM_AFTER`` seconds."""
        return now - self._load_at > CALM_AFTER
