"""How far a run is, and how long it has left: honest, and a share that never goes back.

The share done is estimated from the bytes of the input read, times the share of the records
read that are settled (reading runs ahead of sending by a batch or two, and in chunks). That
estimate wobbles as reading jumps ahead a chunk at a time; a bar that goes 76% -> 72% -> 65%
tells the watcher nothing true, so the share shown is the highest estimated so far.

The time left is the records left (the records the input is estimated to hold, less those
settled) at the pace records settle lately (over :data:`PACE_WINDOW` seconds), never faster
than the rate limit in force (``--rate``, or the cap the API showed): a run held to 50/s
finishes at 50/s, whatever a first burst looked like. The old estimate (time so far times
the share left over the share done) took the start-up and the read-ahead for pace, and said
3:38 for a 7:00 run.
"""

from __future__ import annotations

from collections import deque

#: Seconds of history behind the pace.
PACE_WINDOW = 30.0


class Pace:
    def __init__(self, window: float = PACE_WINDOW) -> None:
        self._window = window
        self._best = 0.0
        self._samples: deque[tuple[float, int]] = deque()

    def __call__(
        self,
        now: float,
        input_share: float | None,
        read: int,
        settled: int,
        limit: float | None,
    ) -> tuple[float | None, float | None]:
        """(share done, seconds left) at ``now``; None where the input's size is unknown or
        nothing settled yet. ``read``: the records read from the input so far (by the
        sources: the claims lag behind by the batches read ahead, and counting those made the
        input look smaller, and the time left shorter, than it was); ``settled``: those done;
        ``limit``: the rate limit in force (requests per second)."""
        if input_share is None:
            return None, None
        share = min(1.0, max(0.0, input_share))
        estimate = share * min(1.0, settled / read if read else 0.0)
        self._best = max(self._best, estimate)
        self._samples.append((now, settled))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window:
            self._samples.popleft()
        first_t, first = self._samples[0]
        pace = (settled - first) / (now - first_t) if now > first_t else 0.0
        if limit:
            pace = min(pace, limit)
        if pace <= 0 or share <= 0:
            return self._best, None
        left = max(0.0, read / share - settled)
        return self._best, left / pace
