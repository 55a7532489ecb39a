"""CSV source: a header row, then one record per row, streamed."""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Collection, Iterator

from pipeline.models import RECORD_FIELDS, RawRecord
from pipeline.sources.base import READ_ERRORS
from pipeline.sources.files.opening import Input, display_name, open_input, watch_tail

#: The longest CSV field, in characters. The csv module's own default (131072) was an
#: accident of the library; this one is chosen: far above any real feedback text, and low
#: enough that an unbalanced quote, which would otherwise swallow the rest of the file into one
#: field, costs one record ("a field is longer than ...") instead of memory and the file.
FIELD_LIMIT = 1024 * 1024


class CsvSource:
    """Reads a CSV file (UTF-8, optional BOM, optionally gzip) as raw records.

    Header names are matched after trimming spaces. Column mapping happens in validation, so
    every column is passed on; ``columns`` are the names validation will look for, used to
    tell a file without a header row and a header that names one of them twice. Quoting is
    parsed strictly: a malformed row is reported as an invalid record at its line instead of
    being silently merged with its neighbours.
    """

    def __init__(self, path: str, columns: Collection[str] = RECORD_FIELDS) -> None:
        self._path = path
        self._columns = frozenset(columns)
        self.name = display_name(path)
        self.opened: Input | None = None  # for the run's progress (bytes read)

    def records(self) -> Iterator[RawRecord]:
        # The limit is process-wide in the csv module; set it (again) where it matters.
        csv.field_size_limit(FIELD_LIMIT)
        opened = self.opened = open_input(self._path)
        with opened.stream as fh:
            text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="surrogateescape", newline="")
            reader = csv.reader(text, strict=True)
            rows = self._rows(reader)
            yield from watch_tail(rows, opened, self.name, lambda: reader.line_num + 1)

    def _rows(self, reader: Iterator[list[str]]) -> Iterator[RawRecord]:
        header: list[str] | None = None
        problem: str | None = None  # a header no row can be read with
        for location, row, error in self._read(reader):
            if row is None:
                if header is None and error.startswith("malformed"):
                    # Without its header no row of the file can be read as intended.
                    yield RawRecord(location, {}, error.replace("CSV", "CSV header", 1))
                    return
                yield RawRecord(location, {}, error)
            elif header is None:
                header = [name.strip() for name in row]
                problem = self._header_problem(header)
                if problem and not self._columns.intersection(header):
                    yield RawRecord(location, {}, problem)  # the "header" is a record too
            elif problem or len(row) != len(header):
                found = f"expected {len(header)} fields as in the header, found {len(row)}"
                yield RawRecord(location, {}, problem or found)
            else:
                yield RawRecord(location, dict(zip(header, row, strict=True)))

    def _read(self, reader: Iterator[list[str]]) -> Iterator[tuple[str, list[str] | None, str]]:
        """(location, row, "") for each non-blank row, (location, None, error) for a bad one."""
        line = 1
        while True:
            location = f"{self.name}:{line}"
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield location, None, _csv_problem(exc)
                line = reader.line_num + 1  # type: ignore[attr-defined]
                continue
            except READ_ERRORS as exc:
                # A truncated gzip or a read error ends this file; earlier rows stand.
                yield location, None, f"unreadable: {exc}"
                return
            line = reader.line_num + 1  # type: ignore[attr-defined]
            if "".join(row).strip():  # not a blank row (every field empty or spaces)
                yield location, row, ""

    def _header_problem(self, header: list[str]) -> str | None:
        if not self._columns.intersection(header):
            return (
                "no header row: the first row names none of the columns "
                f"{', '.join(sorted(self._columns))}"
            )
        repeated = sorted(n for n, c in Counter(header).items() if c > 1 and n in self._columns)
        if repeated:
            return f"the header has a duplicated column {repeated[0]!r}"
        return None


def _csv_problem(exc: csv.Error) -> str:
    if "field limit" in str(exc):
        return f"malformed CSV: a field is longer than {FIELD_LIMIT} characters (the CSV limit)"
    return f"malformed CSV: {exc}"
