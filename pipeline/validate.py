"""Validation stage: a :class:`RawRecord` becomes an :class:`Accepted` or a :class:`Rejection`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from pipeline.models import RECORD_FIELDS, Accepted, FeedbackRecord, RawRecord, Rejection

# Sources decode with "surrogateescape" so that one bad byte costs one record, not the file;
# the escaped bytes show up here as lone surrogates. JSON "\ud800" escapes give them too, and
# none of them can be encoded into a request (or the ledger).
_UNDECODABLE = re.compile("[\ud800-\udfff]")


class Validator:
    """Maps source columns to record fields and validates them.

    ``columns`` maps a record field to the source column it is read from (``--map score=rating``);
    ``default_assistant_id`` fills records that have no assistant id of their own.
    """

    def __init__(
        self, *, default_assistant_id: str | None, columns: Mapping[str, str] | None = None
    ) -> None:
        self._default_assistant_id = default_assistant_id
        mapping = dict(columns or {})
        self._sources = [(field, mapping.get(field, field)) for field in RECORD_FIELDS]

    def __call__(self, raw: RawRecord) -> Accepted | Rejection:
        if raw.error is not None:
            return Rejection(raw.location, raw.error, raw.handle)
        given = self._given(raw)
        if "assistant_id" not in given and self._default_assistant_id is not None:
            given["assistant_id"] = self._default_assistant_id
        for field, value in given.items():
            if isinstance(value, str):
                if _UNDECODABLE.search(value):
                    return self._reject(raw, f"{field}: not valid UTF-8", given)
                if "\x00" in value:
                    return self._reject(raw, f"{field}: contains a NUL character", given)
        try:
            return Accepted.of(raw.location, FeedbackRecord.model_validate(given), raw.handle)
        except ValidationError as exc:
            return self._reject(raw, describe(exc), given)

    def _given(self, raw: RawRecord) -> dict[str, Any]:
        """The record fields the row has, by field name (``--map`` applied)."""
        given: dict[str, Any] = {}
        for field, column in self._sources:
            value = raw.fields.get(column)
            # An empty CSV cell or a JSON null means "absent", as the contract says.
            if value is not None and value != "":
                given[field] = value
        return given

    @staticmethod
    def _reject(raw: RawRecord, reason: str, given: dict[str, Any]) -> Rejection:
        # With the default assistant filled in (when it was used), so that an exported row
        # is whole: `run` sends it as it is, without the flags of the first run.
        return Rejection(raw.location, reason, raw.handle, given or None)


def describe(exc: ValidationError) -> str:
    """One line per record: ``field: message (got 'value')`` joined by ``; ``."""
    parts = []
    for error in exc.errors(include_url=False):
        field = ".".join(str(p) for p in error["loc"]) or "record"
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "missing":
            if field == "assistant_id":
                message = "missing (no column value and no --assistant-id default)"
            parts.append(f"{field}: {message}")
            continue
        shown = repr(error.get("input"))
        if len(shown) > 40:
            shown = shown[:37] + "..."
        parts.append(f"{field}: {message} (got {shown})")
    return "; ".join(parts)
