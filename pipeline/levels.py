"""What happened lately at each in-flight level: the evidence that tells the two kinds of 429
apart (see :mod:`pipeline.flow`).

An in-flight limit of N refuses every request sent while more than N were on the wire and
none at or below N: above the level it was refused at, refusals are the rule. A rate limit
refuses at any level, a few among many successes (requests that arrived too close together).
So a refusal at level L is an in-flight refusal when most requests lately at L or above were
refused. Counts fade by half every ``half_life`` seconds, so a limit that moves is found again.
"""

from __future__ import annotations

#: Refusals (faded counts) at a level and above before their share says anything.
MIN_EVIDENCE = 1.5
#: ... and the share of them refused that says "in-flight limit".
INFLIGHT_SHARE = 0.5
#: Above an in-flight limit found before, this share refused says it again (a probe refused).
PROBE_SHARE = 0.2


class Levels:
    def __init__(self, ceiling: int, *, half_life: float, now: float) -> None:
        self._ok = [0.0] * (ceiling + 2)
        self._refused = [0.0] * (ceiling + 2)
        self._half_life = half_life
        self._faded_at = now

    def note(self, level: int, ok: bool, now: float) -> None:
        if now - self._faded_at >= self._half_life:
            self._ok = [n / 2 for n in self._ok]
            self._refused = [n / 2 for n in self._refused]
            self._faded_at = now
        counts = self._ok if ok else self._refused
        counts[max(0, min(level, len(counts) - 1))] += 1.0

    def inflight(self, level: int) -> bool | None:
        """Whether a refusal at ``level`` is an in-flight limit's: most requests lately at
        ``level`` or above were refused. None while too few were refused there to say (one
        refusal is no pattern: two requests that arrived together at a rate limit)."""
        share = self._refused_share(level)
        return None if share is None else share >= INFLIGHT_SHARE

    def probe(self, level: int) -> bool | None:
        """Whether a refusal at ``level``, above an in-flight limit found before, says that
        limit again (a probe refused): ``PROBE_SHARE`` of the requests lately at ``level`` or
        above were refused. None while too few were refused there to say."""
        share = self._refused_share(level)
        return None if share is None else share >= PROBE_SHARE

    def _refused_share(self, level: int) -> float | None:
        """The share refused lately at ``level`` or above; None under ``MIN_EVIDENCE``."""
        level = max(0, min(level, len(self._ok) - 1))
        refused = sum(self._refused[level:])
        if refused < MIN_EVIDENCE:
            return None
        return refused / (refused + sum(self._ok[level:]))
