"""A run over time, for the HTML report: bounded memory whatever the run's length.

Every ``interval`` seconds a point is taken from the monitor (cumulative counts, the
concurrency limit and rate cap) together with the HTTP statuses answered since the last
point. Past :data:`MAX_POINTS`, neighbouring points are merged and the interval doubles, so a
run of days keeps as many points as a run of minutes. Request latencies are kept as a uniform
sample (reservoir sampling, seeded: reports are reproducible) for the percentiles.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import statistics
from collections import Counter
from dataclasses import dataclass, field

from pipeline.observe.monitor import Monitor

MAX_POINTS = 600
RESERVOIR = 10_000
PERCENTILES = (50, 90, 95, 99)


@dataclass
class Point:
    t: float  # seconds since the start
    sent: int
    failed: int
    invalid: int
    limit: int | None
    rate_cap: float | None
    statuses: Counter[str] = field(default_factory=Counter)  # answered since the last point
    retries: int = 0  # retries so far (cumulative, as the counts)
    api_cap: float | None = None  # the rate cap the API showed, if any


class Timeline:
    def __init__(self, monitor: Monitor, interval: float = 0.1) -> None:
        self._monitor = monitor
        self.interval = interval
        self.points: list[Point] = []
        self._statuses: Counter[str] = Counter()
        self._latencies: list[float] = []
        self._seen = 0
        self._random = random.Random(0)

    def on_response(self, status: int | None, seconds: float) -> None:
        self._statuses[str(status) if status is not None else "none"] += 1
        self._seen += 1
        if len(self._latencies) < RESERVOIR:
            self._latencies.append(seconds)
        else:
            slot = self._random.randrange(self._seen)
            if slot < RESERVOIR:
                self._latencies[slot] = seconds

    def sample(self) -> None:
        snap = self._monitor.snapshot()
        point = Point(snap.elapsed, snap.sent, snap.failed, snap.invalid, snap.limit, snap.rate_cap)
        point.retries, point.api_cap = snap.retries, snap.api_cap
        point.statuses, self._statuses = self._statuses, Counter()
        self.points.append(point)
        if len(self.points) > MAX_POINTS:
            self._compact()

    def _compact(self) -> None:
        """Merge each pair of points into the later one (its counts are cumulative; the
        statuses of both intervals add up)."""
        merged = []
        for early, late in zip(self.points[::2], self.points[1::2], strict=False):
            late.statuses = early.statuses + late.statuses
            merged.append(late)
        if len(self.points) % 2:
            merged.append(self.points[-1])
        self.points = merged
        self.interval *= 2

    async def record(self, ended: asyncio.Event) -> None:
        """Sample every ``interval`` seconds until ``ended``, then once more."""
        self.sample()
        while not ended.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), self.interval)
            self.sample()

    def percentiles(self) -> list[tuple[str, float]]:
        """(p50, p90, p95, p99, max) of the request latencies, in milliseconds."""
        if not self._latencies:
            return []
        ms = sorted(s * 1000 for s in self._latencies)
        # quantiles() needs two values; one value is every percentile.
        cuts = statistics.quantiles(ms * 2 if len(ms) == 1 else ms, n=100, method="inclusive")
        return [(f"p{p}", cuts[p - 1]) for p in PERCENTILES] + [("max", ms[-1])]

    def statuses(self) -> list[str]:
        seen: Counter[str] = Counter()
        for point in self.points:
            seen.update(point.statuses)
        return sorted(seen)
