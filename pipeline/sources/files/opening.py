"""Opening a file for the file readers: checked readable, gzip sniffed, standard input, a
file that grows while read (``watch_tail``), its name for locations."""

from __future__ import annotations

import gzip
import io
import os
import stat
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

from pipeline.errors import SourceError
from pipeline.models import RawRecord
from pipeline.sources.base import STDIN

_GZIP_MAGIC = b"\x1f\x8b"
_BUFFER = 64 * 1024


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
    return open_input(path).stream


class _Tail(io.RawIOBase):
    """A raw file that remembers the last byte read: did the data end with a newline?"""

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self.last = b""
        self.consumed = 0  # bytes read from the file so far (compressed, for a gzip file)

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        count: int = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if count:
            self.last = bytes(memoryview(buffer)[count - 1 : count])
            self.consumed += count
        return count

    def fileno(self) -> int:
        return self._raw.fileno()

    def close(self) -> None:
        self._raw.close()
        super().close()


class _Available:
    """``read(n)`` gives what a buffered stream has (``read1``), not a full ``n`` bytes: gzip
    reads 128 KiB blocks, and over a slow pipe it must decode what has arrived so far instead
    of waiting for a whole block."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream

    def read(self, size: int = -1) -> bytes:
        return self._stream.read1(size)  # type: ignore[attr-defined,no-any-return]

    def close(self) -> None:
        self._stream.close()


class _OwningGzip(gzip.GzipFile):
    """A gzip reader over a stream it was handed, which it closes with itself."""

    def __init__(self, stream: BinaryIO, owns: bool) -> None:
        available = _Available(stream)
        super().__init__(fileobj=cast(Any, available), mode="rb")
        self._owned = available if owns else None

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._owned is not None:
                self._owned.close()


class Input:
    """An open source file: the (decompressed) stream, and what is needed to tell at its end
    whether the file changed while it was read (regular files only; a pipe has no size)."""

    def __init__(self, stream: BinaryIO, tail: _Tail | None, compressed: bool) -> None:
        self.stream = stream
        self._tail = tail
        self._compressed = compressed
        self._opened = _stamp(tail.fileno()) if tail is not None else None

    @property
    def consumed(self) -> int | None:
        """Bytes of the file read so far (None for stdin replaced by a stream)."""
        return self._tail.consumed if self._tail is not None else None

    @property
    def watched(self) -> bool:
        return self._opened is not None

    def change(self) -> str | None:
        """How the file changed since it was opened (call at its end), or None."""
        if self._tail is None or self._opened is None:
            return None
        now = _stamp(self._tail.fileno())
        if now is None or now == self._opened:
            return None
        (before, _), (after, _) = self._opened, now
        if after > before:
            return f"grew from {before} to {after} bytes"
        if after < before:
            return f"shrank from {before} to {after} bytes"
        return f"was rewritten ({after} bytes)"

    def ends_mid_line(self) -> bool:
        """Whether the bytes read end without a line break (a line still being written)."""
        return self._tail is not None and not self._compressed and self._tail.last not in NEWLINES


NEWLINES = (b"", b"\n", b"\r")


def _stamp(fd: int) -> tuple[int, int] | None:
    """(size, mtime in ns) of a regular file, None for a pipe, a FIFO or a terminal."""
    info = os.fstat(fd)
    return (info.st_size, info.st_mtime_ns) if stat.S_ISREG(info.st_mode) else None


def open_input(path: str) -> Input:
    """Open a file, a FIFO, ``/dev/fd/N`` or stdin (``-``) once, and sniff gzip by peeking at
    the open stream: reopening by name would lose what a pipe already gave (a FIFO or a
    process substitution cannot be read twice), or block for a writer that never comes."""
    tail: _Tail | None = None
    try:
        file = _stdin_file() if path == STDIN else open(path, "rb", buffering=0)  # noqa: SIM115
    except OSError as exc:
        raise SourceError(f"{path}: {exc.strerror or exc}") from exc
    if file is None:  # a stdin replaced by a stream without a file descriptor
        raw: BinaryIO = sys.stdin.buffer
    else:
        tail = _Tail(file)
        raw = cast(BinaryIO, io.BufferedReader(tail, buffer_size=_BUFFER))
    if not hasattr(raw, "peek"):  # a stdin replaced by an in-memory stream
        raw = cast(BinaryIO, io.BufferedReader(raw))
    # Sniffing the magic bytes (not the suffix) also handles gzip piped into stdin.
    if _peek(raw, 2) == _GZIP_MAGIC:
        stream = cast(BinaryIO, _OwningGzip(raw, owns=True))
        return Input(stream, tail, compressed=True)
    return Input(raw, tail, compressed=False)


def _stdin_file() -> BinaryIO | None:
    """Standard input as a file of our own (a duplicate of its descriptor), not
    ``sys.stdin.buffer``: a read blocked in a reader thread would hold that object's lock,
    and the interpreter takes the lock at exit: "could not acquire lock for <stdin> at
    interpreter shutdown", and an abort instead of the summary."""
    try:
        fd = sys.stdin.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    return open(os.dup(fd), "rb", buffering=0)


def _peek(stream: BinaryIO, size: int) -> bytes:
    # Buffered readers' peek consumes nothing; it returns fewer bytes only at the end.
    return bytes(stream.peek(size)[:size])  # type: ignore[attr-defined]


def watch_tail(
    records: Iterator[RawRecord], opened: Input, name: str, next_line: Callable[[], int]
) -> Iterator[RawRecord]:
    """Pass records on, and at the end say so if the file changed while it was read.

    A regular file that changed (a writer still appending, a file rewritten in place) may
    end in a line that is being written: that line is not sent cut off but reported as
    incomplete, and the change is reported at the line where the unread rest begins. Both
    are invalid records (so the run exits 1 and the summary counts them); a rerun picks up
    the rest, since nothing of it was recorded as sent, and its records replace these rows.
    """
    if not opened.watched:
        yield from records
        return
    last: RawRecord | None = None
    for record in records:  # one behind: the last record is only known at the end
        if last is not None:
            yield last
        last = record
    change = opened.change()
    if change is None:
        if last is not None:
            yield last
        return
    note = f"{name}: changed while it was read ({change}); rerun to pick up the rest"
    if last is not None and opened.ends_mid_line():
        yield RawRecord(last.location, {}, f"incomplete last line, not sent: {note}")
        return
    if last is not None:
        yield last
    yield RawRecord(f"{name}:{next_line()}", {}, note)


def display_name(path: str) -> str:
    """The name used in locations: printable and storable even when the file name's bytes
    are not UTF-8 (they show as \\xNN escapes)."""
    if path == STDIN:
        return "<stdin>"
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
