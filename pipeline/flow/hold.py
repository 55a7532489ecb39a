"""Holding everyone back: what flow control does when nothing but refusals comes back.

A Retry-After is obeyed by the request that got it (``pipeline.delivery.delivery``); everyone else
keeps going, paced by the limits. Only when refusals are all there is does everyone hold back:

- a **dry spell**: four refusals or more, for two round trips, and not one success (a window
  used up). Everyone waits until the API's Retry-After (at most ``MAX_HOLD``), else for a
  back-off that doubles while it lasts; then one request at a time goes, as through a
  half-open circuit, until one succeeds. The first success after it means a new window.
- a **burst**: refusals from a quarter of the requests the limit allows at once (at least
  four), without a success in between. Only a short
  back-off: it may be one burst, or an in-flight limit's first refusals, and is no sign yet
  that a window is used up.

Before anything has come back there is no dry spell: an in-flight limit refuses at once and
its successes take a round trip, so refusals alone for a while say nothing then.
"""

from __future__ import annotations

import math

#: The longest everyone holds back when only refusals come back.
MAX_HOLD = 1.0
#: The first back-off, before a round trip is known.
_FIRST_BACKOFF = 0.02


class Hold:
    def __init__(self, ceiling: int, *, dry: bool = True) -> None:
        self.until = -math.inf  # everyone waits until then
        self.count = 0  # holds so far (the summary's "pauses")
        #: Refusals without a success in between that make a burst.
        self._burst = max(4.0, ceiling / 4)
        self._dry_spells = dry  # a dry spell holds back too (else bursts only)
        self._dry: tuple[float, int] | None = None  # refusals only since: when, how many
        self._backoff = _FIRST_BACKOFF
        self._held = False  # a dry-spell hold came, and no success since

    def refused(
        self, retry_after: float | None, now: float, rtt: float | None, *, burst: float = 0.0
    ) -> bool:
        """A refusal; True when everyone holds back from now on (the caller lets one request
        at a time go after it). ``burst``: the refusals that make a burst, if not the
        ceiling's share."""
        if self._dry is None:
            self._dry = (now, 0)
        began, refusals = self._dry[0], self._dry[1] + 1
        self._dry = (began, refusals)
        if now < self.until:
            return False
        dry = self._held or self._dry_spell(now, rtt)
        if dry:
            hold = retry_after if retry_after else self._backoff
        elif self._dry[1] >= (burst or self._burst):
            hold = self._backoff
        else:
            return False
        self._backoff = min(MAX_HOLD / 4, 2 * self._backoff)
        self.until = now + min(MAX_HOLD, hold)
        self._held = dry
        self._dry = (now, 0)
        self.count += 1
        return True

    def ended_by(self, started: float, now: float, rtt: float) -> bool:
        """A success of a request sent at ``started``. Only one sent after the refusals began
        says they are over (not one already on its way); True when they were a dry spell or
        its hold: the window is new."""
        if self._dry is not None and started < self._dry[0]:
            return False
        was_dry = self._held or self._dry_spell(now, rtt)
        self._held = False
        self._dry = None
        self._backoff = max(_FIRST_BACKOFF, 2 * rtt)
        return was_dry

    def in_run(self, now: float, rtt: float | None) -> bool:
        """Refusals are all that comes back lately: a hold in force, or a dry spell."""
        return now < self.until or self._held or self._dry_spell(now, rtt)

    def _dry_spell(self, now: float, rtt: float | None) -> bool:
        if self._dry is None or rtt is None or not self._dry_spells:
            return False  # nothing came back yet: the first successes may be on their way
        began, refusals = self._dry
        return refusals >= 4 and now - began >= 2 * max(0.01, rtt)
