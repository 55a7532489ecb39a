"""The Source protocol (async, acknowledging), the Publisher and Reader protocols, and what
a source is told and tells back (:class:`SourceOptions`, :class:`Done`). Opening files is
:mod:`pipeline.sources.files.opening`'s."""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from pipeline.models import Accepted, RawRecord

STDIN = "-"
#: What reading a file can raise mid-way: I/O errors, a truncated or corrupt gzip stream.
READ_ERRORS = (OSError, EOFError, zlib.error)


@dataclass(frozen=True, slots=True)
class Done:
    """Told to a source once the ledger durably holds a record's final state.

    ``dead_letter`` None: a plain ack. A reason (invalid or permanently failed records): copy
    the entry, with this reason, to the dead letters first, then ack."""

    handle: object
    dead_letter: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class SourceOptions:
    """Everything a source may need, built once from the settings (defaults live there)."""

    format: Literal["csv", "jsonl"] | None = None
    columns: Mapping[str, str] = field(default_factory=dict)
    batch_size: int
    concurrency: int
    drain: bool  # queues: end once no new and no pending entries are left
    claim_idle: float  # queues: seconds before another consumer's pending entry is taken over


class Source(Protocol):
    """Yields raw records lazily in batches, each with its location and ack handle.

    ``name`` and locations are printed and stored: build them with ``mask_url`` (no password).
    """

    @property
    def name(self) -> str: ...

    def batches(self, stop: asyncio.Event) -> AsyncIterator[list[RawRecord]]:
        """Files end at their end. Queues end when drained (``drain``), or soon (within about
        a second) after ``stop`` is set; otherwise they wait for new entries."""
        ...

    async def ack(self, done: Sequence[Done]) -> None:
        """Acknowledge records whose final state the ledger holds (file sources: nothing)."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Waiting(Protocol):
    """A queue source that can tell what its drain is waiting for (the progress line says it:
    a run that waits must say for what)."""

    def waiting(self) -> str | None:
        """E.g. "3 entries held by consumer w1 (idle 12 s)"; None while not waiting."""
        ...


class Publisher(Protocol):
    """Where ``enqueue`` puts validated records (broker modules implement it)."""

    async def publish(self, batch: Sequence[Accepted]) -> None:
        """Publish each record's fields and its idempotency key as ``key``."""
        ...

    async def close(self) -> None: ...


class Reader(Protocol):
    """A synchronous, finite reader of one file (CSV, JSONL); :class:`FileSource` wraps it."""

    @property
    def name(self) -> str: ...

    def records(self) -> Iterator[RawRecord]: ...
