"""CSV source: a header row, then one record per row, streamed."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from pipeline.models import RawRecord
from pipeline.sources.base import display_name, open_binary


class CsvSource:
    """Reads a CSV file (UTF-8, optional BOM, optionally gzip) as raw records.

    Header names are matched after trimming spaces. Column mapping happens in validation, so
    every column is passed on. Quoting is parsed strictly: a malformed row is reported as an
    invalid record at its line instead of being silently merged with its neighbours.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self.name = display_name(path)

    def records(self) -> Iterator[RawRecord]:
        with open_binary(self._path) as fh:
            text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
            yield from self._rows(csv.reader(text, strict=True))

    def _rows(self, reader: Iterator[list[str]]) -> Iterator[RawRecord]:
        header: list[str] | None = None
        line = 1
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if header is None:
                    # Without its header no row of the file can be read as intended.
                    yield RawRecord(f"{self.name}:{line}", {}, f"malformed CSV header: {exc}")
                    return
                yield RawRecord(f"{self.name}:{line}", {}, f"malformed CSV: {exc}")
                line = reader.line_num + 1  # type: ignore[attr-defined]
                continue
            except (OSError, EOFError) as exc:
                # A truncated gzip or a read error ends this file; earlier rows stand.
                yield RawRecord(f"{self.name}:{line}", {}, f"unreadable: {exc}")
                return
            location = f"{self.name}:{line}"
            line = reader.line_num + 1  # type: ignore[attr-defined]
            if not row:
                continue
            if header is None:
                header = [name.strip() for name in row]
                continue
            if len(row) != len(header):
                yield RawRecord(
                    location,
                    {},
                    f"expected {len(header)} fields as in the header, found {len(row)}",
                )
                continue
            yield RawRecord(location, dict(zip(header, row, strict=True)))
