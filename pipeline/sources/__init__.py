"""Sources: where raw records come from."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pipeline.errors import ConfigError
from pipeline.models import RECORD_FIELDS
from pipeline.sources.base import STDIN, Source, check_readable
from pipeline.sources.csv import CsvSource
from pipeline.sources.jsonl import JsonlSource
from pipeline.sources.offloop import read_off_loop

Format = Literal["csv", "jsonl"]

__all__ = [
    "CsvSource",
    "Format",
    "JsonlSource",
    "Source",
    "check_readable",
    "open_source",
    "read_off_loop",
]


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


def open_source(path: str, fmt: Format | None, columns: Mapping[str, str] | None = None) -> Source:
    """A source for a path (``-`` is stdin), after checking it can be read.

    ``columns`` is the ``--map`` of record fields to source columns."""
    check_readable(path)
    if detect_format(path, fmt) == "csv":
        mapping = columns or {}
        return CsvSource(path, [mapping.get(field, field) for field in RECORD_FIELDS])
    return JsonlSource(path)
