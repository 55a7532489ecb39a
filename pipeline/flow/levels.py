"""What happened lately at each in-flight level: the evidence that tells the two kinds of 429
apart, and errors that are load from errors that are noise (see :mod:`pipeline.flow.compose`).

An in-flight limit of N refuses every request sent while more than N were on the wire and
none at or below N: above the level it was refused at, refusals are the rule. A rate limit
refuses at any level, a few among many successes (requests that arrived too close together).
So a refusal at level L is an in-flight refusal when most requests lately at L or above were
refused. Counts fade by half every ``half_life`` seconds, so a limit that moves is found again.
Errors (503s, timeouts, resets) are load when their share rises with the level
(:mod:`pipeline.flow.overload`).
"""

from __future__ import annotations

import math

#: Refusals (faded counts) at a level and above before their share says anything.
MIN_EVIDENCE = 1.5
#: ... and the share of them refused that says "in-flight limit".
INFLIGHT_SHARE = 0.5
#: Above an in-flight limit found before, this share refused says it again (a probe refused).
PROBE_SHARE = 0.2
#: Errors at a level and above are load when their share there is this many times the share
#: below...
LOAD_FACTOR = 3.0
#: ... and the difference is this many standard errors (a one-sided two-proportion test:
#: about 3 in ten million by chance)...
LOAD_Z = 5.0
#: ... and as unlikely by a bound that holds for few answers too, where the test above does
#: not (a normal approximation: 3 errors among the 14 answers of a level first reached, 2%
#: of errors everywhere, passed it): Chernoff's bound on the chance of that many errors
#: there, were the share the same at every level...
LOAD_CHANCE = 3e-7
#: ... and at least this many errors (faded) at the level and above, among at least
#: ``LOAD_ANSWERS`` answers (a level first reached has a few: their share is anybody's guess).
LOAD_EVIDENCE = 3.0
LOAD_ANSWERS = 8.0
#: ... unless this many answered below.
LOAD_BELOW = 100.0


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

    def rises(self, level: int) -> bool | None:
        """Whether errors at ``level`` are load (errors count as refusals here): at least
        ``LOAD_EVIDENCE`` of them at ``level`` and above (among ``LOAD_ANSWERS``, or fewer
        over ``LOAD_BELOW`` below), at ``LOAD_FACTOR`` times the share below, and a
        difference not down to chance (``LOAD_Z`` and ``LOAD_CHANCE``). A steady share at
        every level never is, whatever the share: False. None while too few answers or
        errors say either way, or the share rises but not yet beyond chance."""
        level = max(1, min(level, len(self._ok) - 1))
        errors, failed = sum(self._refused[level:]), sum(self._refused[:level])
        above, below = errors + sum(self._ok[level:]), failed + sum(self._ok[:level])
        # Few answers above (a probe's) need many below: a few errors among a few answers at
        # levels first reached come by chance, and the share below is then a rough guess.
        few = above < LOAD_ANSWERS and below < LOAD_BELOW
        if few or below < LOAD_ANSWERS or errors < LOAD_EVIDENCE:
            return None
        share, share_below = errors / above, failed / below
        if share < LOAD_FACTOR * share_below:
            return False
        pooled = (errors + failed) / (above + below)
        spread = math.sqrt(pooled * (1.0 - pooled) * (1.0 / above + 1.0 / below))
        if share - share_below < LOAD_Z * spread:
            return None
        return True if _tail_bound(above, share, pooled) <= LOAD_CHANCE else None

    def error_share(self) -> float | None:
        """The share of errors among the answers lately, at every level; None under
        ``LOAD_ANSWERS`` answers."""
        errors = sum(self._refused)
        answers = errors + sum(self._ok)
        return None if answers < LOAD_ANSWERS else errors / answers

    def _refused_share(self, level: int) -> float | None:
        """The share refused lately at ``level`` or above; None under ``MIN_EVIDENCE``."""
        level = max(0, min(level, len(self._ok) - 1))
        refused = sum(self._refused[level:])
        if refused < MIN_EVIDENCE:
            return None
        return refused / (refused + sum(self._ok[level:]))


def _tail_bound(answers: float, share: float, expected: float) -> float:
    """An upper bound on the chance of ``share`` or more errors among ``answers`` when each
    fails with chance ``expected`` < ``share``: exp(-n KL(share || expected)), Chernoff's."""
    if share >= 1.0:
        divergence = -math.log(expected)
    else:
        divergence = share * math.log(share / expected) + (1.0 - share) * math.log(
            (1.0 - share) / (1.0 - expected)
        )
    return math.exp(-answers * divergence)
