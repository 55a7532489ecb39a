"""The Source protocol (async, acknowledging), and the file opening shared by file readers."""

from __future__ import annotations

import asyncio
import gzip
import io
import os
import sys
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Literal, Protocol, cast

from pipeline.errors import SourceError
from pipeline.models import Accepted, RawRecord

STDIN = "-"
#: What reading a file can raise mid-way: I/O errors, a truncated or corrupt gzip stream.
READ_ERRORS = (OSError, EOFError, zlib.error)
_GZIP_MAGIC = b"\x1f\x8b"


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


def check_readable(path: str) -> None:
    """Fail before the run starts, with one line, for a source that cannot be read."""
    if path == STDIN:
        return
    p = Path(path)
    if not p.exists():
        raise SourceError(f"{path}: no such file")
    if p.is_dir():
        raise SourceError(f"{path}: is a directory, not a file")
    if not os.access(p, os.R_OK):
        raise SourceError(f"{path}: permission denied")


def open_binary(path: str) -> BinaryIO:
    """Open a file or stdin for reading, decompressing gzip whatever the file's name."""
    try:
        raw: BinaryIO = sys.stdin.buffer if path == STDIN else open(path, "rb")  # noqa: SIM115
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror or exc}") from exc
    if not hasattr(raw, "peek"):  # a stdin replaced by an in-memory stream
        raw = cast(BinaryIO, io.BufferedReader(raw))
    # Sniffing the magic bytes (not the suffix) also handles gzip piped into stdin.
    if _peek(raw, 2) == _GZIP_MAGIC:
        if path == STDIN:
            return gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[return-value]
        raw.close()
        return gzip.open(path, "rb")  # type: ignore[return-value] # owns and closes the file
    return raw


def _peek(stream: BinaryIO, size: int) -> bytes:
    # Files and a real stdin are buffered readers, whose peek consumes nothing.
    return bytes(stream.peek(size)[:size])  # type: ignore[attr-defined]


def display_name(path: str) -> str:
    """The name used in locations: printable and storable even when the file name's bytes
    are not UTF-8 (they show as \\xNN escapes)."""
    if path == STDIN:
        return "<stdin>"
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
