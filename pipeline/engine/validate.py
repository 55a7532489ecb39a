"""Validation stage: a :class:`RawRecord` becomes an :class:`Accepted` or a :class:`Rejection`."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from pipeline.engine.columns import KNOWN_COLUMNS, extra_problem
from pipeline.models import (
    RECORD_FIELDS,
    Accepted,
    FeedbackRecord,
    RawRecord,
    Rejection,
    content_hash,
)

# Sources decode with "surrogateescape" so that one bad byte costs one record, not the file;
# the escaped bytes show up here as lone surrogates. JSON "\ud800" escapes give them too, and
# none of them can be encoded into a request (or the ledger).
_UNDECODABLE = re.compile("[\ud800-\udfff]")


class Validator:
    """Maps source columns to record fields and validates them.

    ``columns`` maps a record field to the source column it is read from (``--map score=rating``);
    ``default_assistant_id`` fills records that have no assistant id of their own. A column
    no record field is read from makes the record invalid (its values would not be sent; see
    :mod:`pipeline.engine.columns`) unless ``ignore_extra``.
    """

    def __init__(
        self,
        *,
        default_assistant_id: str | None,
        columns: Mapping[str, str] | None = None,
        ignore_extra: bool = False,
    ) -> None:
        self._default_assistant_id = default_assistant_id
        self._mapping = mapping = dict(columns or {})
        self._sources = [(field, mapping.get(field, field)) for field in RECORD_FIELDS]
        self._columns = [column for _, column in self._sources]
        self._ignore_extra = ignore_extra
        self._known = frozenset(self._columns) | KNOWN_COLUMNS

    def __call__(self, raw: RawRecord) -> Accepted | Rejection:
        if raw.error is not None:
            return Rejection(raw.location, raw.error, raw.handle)
        given = self._given(raw)
        if "assistant_id" not in given and self._default_assistant_id is not None:
            given["assistant_id"] = self._default_assistant_id
        if not self._ignore_extra and not self._known.issuperset(raw.fields):
            extra = [name for name in raw.fields if name not in self._known]
            return self._reject(raw, extra_problem(extra, raw.fields, self._mapping), given)
        for field, value in given.items():
            if isinstance(value, str):
                # isascii() is a flag lookup: most text skips the search.
                if not value.isascii() and _UNDECODABLE.search(value):
                    return self._reject(raw, f"{field}: not valid UTF-8", given)
                if "\x00" in value:
                    return self._reject(raw, f"{field}: contains a NUL character", given)
        try:
            return Accepted.of(raw.location, FeedbackRecord.model_validate(given), raw.handle)
        except ValidationError as exc:
            return self._reject(raw, describe(exc), given)

    def quick_key(self, raw: RawRecord) -> str | None:
        """The key this record has *if* it is valid, told without validating it; None where
        that cannot be told this cheaply (an explicit key, a value that is not plain text).

        Sound for skipping what an earlier run sent: the five values hashed are the record's
        own (an empty cell is absent, as in validation; a score is read only when it is plain
        ASCII decimal, which validation reads to the same float), and whether a record is
        valid depends on nothing else. So a key found sent belongs to a record with exactly
        these values, which was valid, and this one is valid too."""
        if raw.error is not None:
            return None
        assistant, session, message, score, text, key = map(raw.fields.get, self._columns)
        if key is not None and key != "":
            return None
        if assistant is None or assistant == "":
            assistant = self._default_assistant_id
        if type(assistant) is not str or type(session) is not str:
            return None
        if message == "":
            message = None
        if text == "":
            text = None
        if (message is not None and type(message) is not str) or (
            text is not None and type(text) is not str
        ):
            return None
        number = _plain_score(score)
        if number is _NOT_PLAIN:
            return None
        return content_hash(assistant, session, message, number, text)

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


_NOT_PLAIN = -1.0  # no score is ever this: validation refuses it


def _plain_score(value: object) -> float | None:
    """The score as validation reads it, or :data:`_NOT_PLAIN` when not told this cheaply."""
    if value is None or value == "":
        return None
    if type(value) is str:
        text = value.strip()
        # ASCII digits only: str.isdigit() takes other scripts' digits, which float() reads
        # and validation refuses. No sign, exponent or underscore: those differ too.
        if text.isascii() and text.replace(".", "", 1).isdigit() and text[0] != ".":
            return float(text)
        return _NOT_PLAIN
    if type(value) is float:
        return value + 0.0  # -0.0 becomes 0.0, as validation folds it
    return _NOT_PLAIN


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
