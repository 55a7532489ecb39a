"""Spare workers: a record waiting out its own Retry-After (or a backoff between attempts)
holds a worker but no slot (flow control caps requests in flight, not workers). With one
worker per slot, a few 429s at once would idle the run for the whole wait; so while records
wait so, a spare worker starts, up to ``WORKERS_PER_SLOT`` per slot, and ends once the waits
it stood in for are over. One worker per slot runs always: a worker beyond the slots would
wait for one at every record (a task switch each).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

#: Workers per request the concurrency ceiling allows, at most.
WORKERS_PER_SLOT = 2


class Spares:
    """The stages' workers, and the spares among them. The delivery calls :meth:`waiting`
    (its ``on_wait``); the stages start workers while :meth:`spawning`."""

    def __init__(self, concurrency: int) -> None:
        self.concurrency = concurrency
        self.workers: set[asyncio.Task[None]] = set()
        self.active = 0  # workers not in a wait that holds no slot
        self._spawn: Callable[[], asyncio.Task[None]] | None = None

    @contextlib.contextmanager
    def spawning(self, spawn: Callable[[], asyncio.Task[None]]) -> Iterator[None]:
        """While the stages run: ``spawn`` starts a worker in their task group."""
        self._spawn = spawn
        try:
            yield
        finally:
            self._spawn = None

    def start(self) -> None:
        if self._spawn is not None:
            self.workers.add(self._spawn())

    def waiting(self, started: bool) -> None:
        """A record started (or ended) a wait that holds no slot: while fewer workers than
        slots are free to send, a spare one starts."""
        self.active += -1 if started else 1
        if (
            started
            and self.active < self.concurrency
            and len(self.workers) < self.concurrency * WORKERS_PER_SLOT
        ):
            self.start()

    @property
    def surplus(self) -> bool:
        """More workers are free to send than there are slots: a spare may end."""
        return self.active > self.concurrency
