"""An in-memory, acknowledging queue source for tests (registered as ``mem://NAME``).

Each ack is checked against the ledger at the moment it arrives: the source records, for
every handle acked, the ledger state of that record's key as another connection sees it.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.engine.validate import Validator
from pipeline.models import Accepted, RawRecord
from pipeline.sources import Done, SourceOptions

#: Sources by name, filled by the test before the run opens ``mem://NAME``.
SOURCES: dict[str, MemorySource] = {}
OPENED: list[tuple[str, SourceOptions]] = []


@dataclass(frozen=True)
class Acked:
    handle: int
    dead_letter: str | None
    state: str | None  # the record's ledger state when the ack arrived


@dataclass
class MemorySource:
    rows: list[dict[str, Any]]
    ledger: Path
    batch_size: int = 3
    #: Awaited (with the stop event) after the first batch is handed out.
    after_first: Callable[[asyncio.Event], Awaitable[None]] | None = None
    fail_ack: bool = False
    #: Like a queue without --drain: once the rows are out, wait for new ones until stopped.
    follow: bool = False
    acked: list[Acked] = field(default_factory=list)
    closed: bool = False

    @property
    def name(self) -> str:
        return "mem"

    def key(self, handle: int) -> str:
        return Validator(default_assistant_id=None)(self.raw(handle)).key

    def raw(self, handle: int) -> RawRecord:
        return RawRecord(f"mem:{handle}", self.rows[handle], handle=handle)

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[list[RawRecord]]:
        for start in range(0, len(self.rows), self.batch_size):
            if stop.is_set():
                return
            end = min(start + self.batch_size, len(self.rows))
            yield [self.raw(i) for i in range(start, end)]
            if start == 0 and self.after_first is not None:
                await self.after_first(stop)
        if self.follow:
            await stop.wait()

    async def ack(self, done: Sequence[Done]) -> None:
        if self.fail_ack:
            raise ConnectionError("broker connection lost")
        with sqlite3.connect(self.ledger) as db:
            for item in done:
                assert isinstance(item.handle, int)
                row = db.execute(
                    "SELECT state FROM records WHERE key = ?", (self.key(item.handle),)
                ).fetchone()
                self.acked.append(Acked(item.handle, item.dead_letter, row[0] if row else None))

    async def close(self) -> None:
        self.closed = True

    def acks_by_handle(self) -> dict[int, Acked]:
        by_handle = {a.handle: a for a in self.acked}
        assert len(by_handle) == len(self.acked), "a record was acked twice"
        return by_handle


async def open_source(url: str, options: SourceOptions) -> MemorySource:
    OPENED.append((url, options))
    return SOURCES[url.removeprefix("mem://")]


@dataclass
class MemoryPublisher:
    published: list[list[dict[str, Any]]] = field(default_factory=list)
    closed: bool = False

    async def publish(self, batch: Sequence[Accepted]) -> None:
        self.published.append(
            [{**a.record.model_dump(exclude_none=True), "key": a.key} for a in batch]
        )

    async def close(self) -> None:
        self.closed = True


PUBLISHERS: dict[str, MemoryPublisher] = {}


async def open_publisher(url: str, options: SourceOptions) -> MemoryPublisher:
    return PUBLISHERS.setdefault(url.removeprefix("mem://"), MemoryPublisher())
