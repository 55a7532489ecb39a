"""JSONL source: one JSON object per line, streamed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pipeline.models import RawRecord
from pipeline.sources.base import READ_ERRORS, display_name, open_binary


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads silently keeps the last of two equal keys; two scores in one record is an
    # error in the data, not something to guess about.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _DuplicateKey(f"duplicated key {dup!r}")
    return obj


class JsonlSource:
    """Reads JSON Lines (optionally gzip); blank lines are skipped."""

    def __init__(self, path: str) -> None:
        self._path = path
        self.name = display_name(path)

    def records(self) -> Iterator[RawRecord]:
        with open_binary(self._path) as fh:
            number = 0
            while True:
                number += 1
                location = f"{self.name}:{number}"
                try:
                    line = fh.readline()
                except READ_ERRORS as exc:
                    yield RawRecord(location, {}, f"unreadable: {exc}")
                    return
                if not line:
                    return
                if line.strip():
                    yield parse_line(location, line)


def parse_line(location: str, line: bytes) -> RawRecord:
    try:
        text = line.decode("utf-8-sig" if location.endswith(":1") else "utf-8")
    except UnicodeDecodeError as exc:
        return RawRecord(location, {}, f"not valid UTF-8 (byte {exc.start + 1})")
    try:
        value = json.loads(text.rstrip("\r\n"), object_pairs_hook=_unique_keys)
    except _DuplicateKey as exc:
        return RawRecord(location, {}, f"invalid JSON object: {exc}")
    except json.JSONDecodeError as exc:
        return RawRecord(location, {}, f"invalid JSON: {exc.msg} (column {exc.colno})")
    except RecursionError:
        return RawRecord(location, {}, "invalid JSON: nested too deep")
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        return RawRecord(location, {}, f"invalid JSON: {exc}")
    if not isinstance(value, dict):
        return RawRecord(location, {}, f"expected a JSON object, got {type(value).__name__}")
    return RawRecord(location, value)
