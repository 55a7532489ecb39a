"""JSONL source: one JSON object per line, streamed."""

from __future__ import annotations

from collections.abc import Iterator
from typing import BinaryIO

from pipeline.models import RawRecord
from pipeline.sources.base import READ_ERRORS
from pipeline.sources.decode import json_object
from pipeline.sources.files.opening import Input, display_name, open_input, watch_tail

#: The longest JSON line, in bytes. Without a limit one line without a newline (a binary
#: file, a log without line breaks) is read whole into memory; with it, it costs one record.
LINE_LIMIT = 16 * 1024 * 1024


class JsonlSource:
    """Reads JSON Lines (optionally gzip); blank lines are skipped."""

    def __init__(self, path: str) -> None:
        self._path = path
        self.name = display_name(path)
        self.opened: Input | None = None  # for the run's progress (bytes read)

    def records(self) -> Iterator[RawRecord]:
        opened = self.opened = open_input(self._path)
        with opened.stream as fh:
            lines = _Lines(fh)
            yield from watch_tail(lines.records(self.name), opened, self.name, lines.next_number)


class _Lines:
    """The lines of a stream, numbered, each at most LINE_LIMIT bytes."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self.number = 0

    def next_number(self) -> int:
        return self.number + 1

    def records(self, name: str) -> Iterator[RawRecord]:
        while True:
            self.number += 1
            location = f"{name}:{self.number}"
            try:
                line = self._stream.readline(LINE_LIMIT + 1)
                too_long = len(line) > LINE_LIMIT and not line.endswith(b"\n")
                if too_long:
                    self._skip_rest()
            except READ_ERRORS as exc:
                yield RawRecord(location, {}, f"unreadable: {exc}")
                return
            if too_long:
                yield RawRecord(location, {}, f"line longer than {LINE_LIMIT} bytes (the limit)")
            elif not line:
                return
            elif line.strip():
                yield parse_line(location, line)

    def _skip_rest(self) -> None:
        while True:
            chunk = self._stream.readline(1024 * 1024)
            if not chunk or chunk.endswith(b"\n"):
                return


def parse_line(location: str, line: bytes) -> RawRecord:
    # The first line may start with a byte order mark (files saved by some editors).
    return json_object(location, line, bom=location.endswith(":1"))
