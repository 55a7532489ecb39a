"""Files and stdin as a :class:`Source`: the synchronous readers, read in a worker thread."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import stat
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Literal

from pipeline.errors import ConfigError
from pipeline.models import RECORD_FIELDS, RawRecord
from pipeline.sources.base import STDIN, Done, Reader, SourceOptions
from pipeline.sources.files.csv import CsvSource
from pipeline.sources.files.jsonl import JsonlSource
from pipeline.sources.files.offloop import OffLoop
from pipeline.sources.files.opening import check_readable

Format = Literal["csv", "jsonl"]


def detect_format(path: str, fmt: Format | None) -> Format:
    if fmt is not None:
        return fmt
    name = path.lower().removesuffix(".gz")
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".jsonl", ".ndjson", ".json")):
        return "jsonl"
    what = "stdin" if path == STDIN else path
    raise ConfigError(f"format: cannot tell the format of {what}; pass --format csv|jsonl")


def open_reader(path: str, fmt: Format | None, columns: Mapping[str, str] | None = None) -> Reader:
    """A reader for a path (``-`` is stdin), after checking it can be read.

    ``columns`` is the ``--map`` of record fields to source columns."""
    check_readable(path)
    if detect_format(path, fmt) == "csv":
        mapping = columns or {}
        return CsvSource(path, [mapping.get(field, field) for field in RECORD_FIELDS])
    return JsonlSource(path)


class FileSource:
    """A finite file as an async source. Nothing to acknowledge: a rerun reads it again."""

    def __init__(self, reader: Reader, batch_size: int, path: str = STDIN) -> None:
        self._reader = reader
        self._size = batch_size
        self._total = _regular_size(path)
        self._ended = False
        self._records = 0  # records read from the file so far (ahead of the claims)

    def progress(self) -> tuple[int, int] | None:
        """(bytes read, bytes in all) of a regular file; None where the size is unknown (stdin,
        a pipe). Optional in the Source protocol: queues have no end to measure against."""
        if self._total is None:
            return None
        if self._ended:
            return self._total, self._total
        opened = getattr(self._reader, "opened", None)
        done = opened.consumed if opened is not None else 0
        return min(done or 0, self._total), self._total

    def records(self) -> int:
        """Records read so far: with :meth:`progress`, how many the file holds in all (the
        run's own count lags by the batches read ahead)."""
        return self._records

    @property
    def name(self) -> str:
        return self._reader.name

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[list[RawRecord]]:
        # Reading runs in a worker thread: a blocking read (a slow stdin, a large gzip block)
        # must not stall the event loop that drives the requests; and a read that never
        # returns (a FIFO without a writer) must not keep a stopped run from ending.
        records = self._reader.records()
        reads = OffLoop()
        # One batch read ahead: the next one is read while this one is validated and sent.
        ahead = reads.submit(self._take, records)
        try:
            more = True
            while more and not stop.is_set():
                batch, more = await ahead
                if more:
                    ahead = reads.submit(self._take, records)
                if batch:
                    self._records += len(batch)
                    yield batch
            self._ended = not more
        finally:
            if not ahead.done():
                ahead.cancel()  # a stop: the batch read ahead is not wanted
            elif not ahead.cancelled():
                ahead.exception()  # retrieved, so that an error there warns nobody
            reads.close()
            # A read still blocked in its thread keeps the generator running: leave it there.
            with contextlib.suppress(ValueError):
                records.close()  # type: ignore[attr-defined]

    def _take(self, records: Iterator[RawRecord]) -> tuple[list[RawRecord], bool]:
        """Up to a batch of records, and whether the reader can give more.

        Readers report the errors they expect as records; anything else (a bug, an error
        nobody foresaw) costs the rest of this file, never the run."""
        batch: list[RawRecord] = []
        try:
            batch.extend(itertools.islice(records, self._size))
        except Exception as exc:  # noqa: BLE001
            reason = f"unreadable from here on: {type(exc).__name__}: {exc}"
            batch.append(RawRecord(self.name, {}, reason))
            return batch, False
        return batch, len(batch) == self._size

    async def ack(self, done: Sequence[Done]) -> None:
        return None

    async def close(self) -> None:
        return None


async def open_source(path: str, options: SourceOptions) -> FileSource:
    reader = open_reader(path, options.format, options.columns)
    return FileSource(reader, options.batch_size, path)


def _regular_size(path: str) -> int | None:
    if path == STDIN:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_size if stat.S_ISREG(info.st_mode) else None
