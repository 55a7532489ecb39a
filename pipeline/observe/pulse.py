"""A run's pulse for its metrics: when it was last alive, when a record of it last settled,
and how far behind its queue is. A scrape (a thread of prometheus-client's) reads these plain
values; the run's event loop writes them, every heartbeat.

Told apart, these answer the fleet's questions: a dead worker's heartbeat stops; a stuck one
beats on while its last progress ages; a slow fleet's queue lag grows.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from pipeline.observe.summary import Summary

#: How often the queue's lag is read (a round trip to the broker), in heartbeats.
LAG_EVERY = 5


@runtime_checkable
class Deep(Protocol):
    """A queue source that can tell how much it holds: (not handed out yet, pending)."""

    async def depth(self) -> tuple[int | None, int | None]: ...


@dataclass
class Pulse:
    run_id: str
    consumer: str = ""
    heartbeat_at: float | None = None  # seconds since the epoch
    progress_at: float | None = None
    backlog: int | None = None
    pending: int | None = None
    _settled: int = -1

    def tick(self, settled: int, now: float) -> None:
        """One heartbeat; ``settled``: records settled so far (progress if it moved)."""
        self.heartbeat_at = now
        if settled != self._settled:
            self._settled = settled
            self.progress_at = now

    async def keep(
        self,
        summary: Summary,
        sources: Sequence[object],
        every: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """Tick every ``every`` seconds until cancelled; read the queue's depth now and then.
        A broker that does not answer leaves the last depth shown (the run itself notices)."""
        deep = [s for s in sources if isinstance(s, Deep)]
        beats = 0
        while True:
            self.tick(summary.read - summary.in_flight, clock())
            if deep and beats % LAG_EVERY == 0:
                try:
                    depths = [await s.depth() for s in deep]
                except Exception:  # noqa: BLE001 - a gauge, never a reason to end the run
                    depths = []
                if depths:
                    self.backlog = _total([d[0] for d in depths])
                    self.pending = _total([d[1] for d in depths])
            beats += 1
            await asyncio.sleep(every)


def _total(values: list[int | None]) -> int | None:
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)
