"""Which source columns a run reads, and the two mistakes that cost data: a column that maps
to no record field, and a ``--map`` that names a column the source does not have.

A column (a JSONL key, a queue entry's field) that no record field is read from is an error,
unless the run is told to ignore extra columns: otherwise a CSV with ``rating,comment``
columns would be records without a score or a text, every row "valid", sent empty, and fixing
the mapping later would change their keys and send them a second time. The columns of a
``failures`` export (what went wrong with a record) are known and stay accepted, so an export
can be fixed and run as it is.

Files are checked before anything is sent (:func:`check_files`: the header of a CSV file, the
keys of the first lines of a JSONL file); every record is checked again as it is validated
(:func:`extra_problem`), which covers stdin, pipes and queues, where nothing can be read
ahead: such a record is invalid, never sent without the fields it was meant to have.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import io
import os
import stat
import zlib
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import BinaryIO

from pipeline.errors import ConfigError
from pipeline.models import RECORD_FIELDS

#: What a ``failures`` export adds after a record's own columns: what went wrong with it.
PROBLEM_COLUMNS = ("state", "location", "http_status", "error_code", "reason")
#: Columns never extra: the export's, and a record field's own name even when ``--map`` reads
#: that field from another column (an explicit choice not to read it).
KNOWN_COLUMNS = frozenset(RECORD_FIELDS) | frozenset(PROBLEM_COLUMNS)
#: JSONL lines read before a run to learn a file's keys (their union): a key that shows only
#: later is still caught, record by record, as the file is validated.
SAMPLE_LINES = 100
#: Names people give record fields; a suggestion for ``--map``, never applied by itself.
_SYNONYMS = {
    "rating": "score",
    "stars": "score",
    "grade": "score",
    "comment": "text",
    "comments": "text",
    "feedback": "text",
    "note": "text",
    "session": "session_id",
    "conversation_id": "session_id",
    "message": "message_id",
    "msg_id": "message_id",
    "assistant": "assistant_id",
    "idempotency_key": "key",
}
_IGNORE = "--ignore-extra-columns"
#: What reading a file can raise (as pipeline.sources.base, which imports this module).
READ_ERRORS = (OSError, EOFError, zlib.error)


def read_columns(mapping: Mapping[str, str]) -> dict[str, str]:
    """Source column -> the record field read from it (``--map`` applied)."""
    return {mapping.get(field, field): field for field in RECORD_FIELDS}


def extra_columns(names: Iterable[str], mapping: Mapping[str, str]) -> list[str]:
    """The columns of ``names`` no record field is read from (export columns excepted)."""
    known = set(read_columns(mapping)) | set(KNOWN_COLUMNS)
    return [name for name in names if name not in known]


def extra_problem(
    extra: Sequence[str], present: Collection[str], mapping: Mapping[str, str]
) -> str:
    """One line: which columns map to nothing, and the ``--map`` that would read them."""
    columns = read_columns(mapping)
    unread = [f for c, f in columns.items() if c not in present and f not in ("key",)]
    hints = []
    for name in extra:
        field = _SYNONYMS.get(name.lower())
        if field is None or field not in unread:
            close = difflib.get_close_matches(name.lower(), unread, n=1, cutoff=0.6)
            field = close[0] if close else None
        if field is not None:
            hints.append(f"--map {field}={name}")
    suggestion = " ".join(hints) if hints else "--map FIELD=COLUMN"
    named = ", ".join(repr(name) for name in extra)
    what = "columns {} map" if len(extra) > 1 else "column {} maps"
    return (
        f"{what.format(named)} to no record field, so their values would not be sent "
        f"(fields not read: {', '.join(unread) or 'none'}); read them with {suggestion}, "
        f"or pass {_IGNORE} to leave them out"
    )


def check_columns(
    where: str, present: Collection[str], mapping: Mapping[str, str], *, ignore_extra: bool
) -> None:
    """The columns ``present`` in a source, judged before anything is sent (a ConfigError)."""
    missing = [(f, c) for f, c in mapping.items() if c not in present]
    if missing:
        field, column = missing[0]
        raise ConfigError(
            f"configuration error: --map {field}={column}: {where} has no column {column!r} "
            f"(its columns: {', '.join(present) or 'none'}); nothing was sent"
        )
    extra = [] if ignore_extra else extra_columns(present, mapping)
    if extra:
        raise ConfigError(
            f"configuration error: {where}: {extra_problem(extra, present, mapping)}; "
            "nothing was sent"
        )


def check_files(
    paths: Sequence[str], fmt: str | None, mapping: Mapping[str, str], *, ignore_extra: bool
) -> None:
    """Check the columns of every regular file in ``paths`` before any record is read for
    sending. Stdin, pipes and queues cannot be read ahead: their records are checked one by
    one as they are validated."""
    from pipeline.sources import is_queue  # here: the sources package imports this one
    from pipeline.sources.files.source import detect_format

    for path in paths:
        if is_queue(path) or not _regular(path):
            continue
        kind = detect_format(path, fmt)  # type: ignore[arg-type]
        with _open(path) as fh:
            if kind == "csv":
                text = io.TextIOWrapper(fh, encoding="utf-8-sig", errors="replace", newline="")
                present = _csv_header(text)
            else:
                present = _jsonl_keys(fh)
        if present is not None:
            check_columns(path, present, mapping, ignore_extra=ignore_extra)


def _open(path: str) -> BinaryIO:
    """The file's bytes, gunzipped when they are gzip (by content, as the sources tell). A
    look of its own, not the sources' open: that one notes the file's size to tell at its
    end whether it changed while it was read, which this look must not disturb."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the caller's with
    except OSError:
        return io.BytesIO()  # reading reports it, at the source
    if raw.read(2) == b"\x1f\x8b":
        raw.close()
        return gzip.open(path, "rb")  # type: ignore[return-value] # a regular file, by name
    raw.seek(0)
    return raw


def _regular(path: str) -> bool:
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _csv_header(text: io.TextIOWrapper) -> list[str] | None:
    """The header's names; None when there is none to judge (an empty or malformed file:
    reading reports that, at its line)."""
    try:
        for row in csv.reader(text, strict=True):
            if "".join(row).strip():
                header = [name.strip() for name in row]
                return header if set(header) & set(RECORD_FIELDS) else None
    except (csv.Error, ValueError, *READ_ERRORS):
        return None
    return None


def _jsonl_keys(stream: BinaryIO) -> list[str] | None:
    """The keys of the first :data:`SAMPLE_LINES` objects, in order of appearance, decoded as
    the run decodes them (a line that is no object is reported at its line as it is read)."""
    from pipeline.sources.files.jsonl import LINE_LIMIT, parse_line

    keys: dict[str, None] = {}
    try:
        for number in range(1, SAMPLE_LINES + 1):
            line = stream.readline(LINE_LIMIT + 1)
            if not line or len(line) > LINE_LIMIT:
                break
            if line.strip():
                keys.update(dict.fromkeys(parse_line(f"-:{number}", line).fields))
    except (ValueError, *READ_ERRORS):
        pass
    return list(keys) or None
