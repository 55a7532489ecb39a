"""The values that flow between stages: raw records, validated records, rejections, outcomes."""

from __future__ import annotations

import functools
import hashlib
import json
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Fields a record may carry; everything else in a row is ignored.
RECORD_FIELDS = ("assistant_id", "session_id", "message_id", "score", "text", "key")

# The assistant id is put into the URL path: refuse anything that could change the path or
# the query, whatever quoting is applied later.
_UNSAFE_ID = re.compile(r"[/?#%\\\s\x00-\x1f\x7f]|\.\.")


@functools.lru_cache(maxsize=1024)
def _unsafe_id(value: str) -> bool:
    # Cached: a file holds the same few assistant ids over and over.
    return value == "." or _UNSAFE_ID.search(value) is not None


class Status(StrEnum):
    """Ledger states. Every input record ends in exactly one of them."""

    IN_FLIGHT = "in_flight"
    UNKNOWN = "unknown"  # the request may have been stored (reset, 500/502/504): reconcile
    SENT = "sent"
    FAILED = "failed"
    INVALID = "invalid"
    RETIRED = "retired"  # a failed or invalid record a person closed (``retire``)


# Not frozen: a frozen dataclass is built through object.__setattr__, field by field, which
# made building one cost 0.55 us instead of 0.15 (a million of them per million rows read).
@dataclass(slots=True)
class RawRecord:
    """One record as a source read it, before validation.

    ``error`` is set when the source could not even split the record into fields
    (bad quoting, invalid JSON, undecodable bytes); such a record becomes a rejection.
    ``handle`` is what the source needs to acknowledge the record (a stream entry id, a
    delivery tag); None for sources that cannot acknowledge (files).
    """

    location: str
    fields: dict[str, Any]
    error: str | None = None
    handle: object | None = None


class FeedbackRecord(BaseModel):
    """A validated record, mirroring ``assistants.v1.service.create_feedback_request``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    assistant_id: Annotated[str, Field(min_length=1, max_length=256)]
    session_id: Annotated[str, Field(min_length=1)]
    message_id: Annotated[str | None, Field(pattern=r"^aia_msg_.+$")] = None
    score: Annotated[float | None, Field(ge=0, le=1, allow_inf_nan=False)] = None
    text: str | None = None
    key: Annotated[str | None, Field(min_length=1, max_length=512)] = None

    @field_validator("assistant_id")
    @classmethod
    def _safe_assistant_id(cls, value: str) -> str:
        if _unsafe_id(value):
            raise ValueError(
                "must not be '.' or contain '/', '?', '#', '%', '\\', '..', whitespace"
            )
        return value

    @field_validator("session_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value

    @field_validator("score", mode="before")
    @classmethod
    def _no_bool_score(cls, value: Any) -> Any:
        # pydantic's lax mode reads True as 1.0; a boolean is never a rating.
        if isinstance(value, bool):
            raise ValueError("must be a number, not a boolean")
        if isinstance(value, str):
            value = value.strip()
        return value

    @field_validator("score")
    @classmethod
    def _canonical_zero(cls, value: float | None) -> float | None:
        # -0.0 passes ge=0; fold it so that it hashes like 0.0.
        if value is not None and value == 0 and math.copysign(1.0, value) < 0:
            return 0.0
        return value

    def body(self) -> dict[str, Any]:
        """The JSON request body: only the fields the record has."""
        body: dict[str, Any] = {"session_id": self.session_id}
        if self.message_id is not None:
            body["message_id"] = self.message_id
        if self.score is not None:
            body["score"] = self.score
        if self.text is not None:
            body["text"] = self.text
        return body

    def idempotency_key(self) -> str:
        """The explicit key, else a stable hash of the canonical request."""
        if self.key is not None:
            return self.key
        return content_hash(
            self.assistant_id, self.session_id, self.message_id, self.score, self.text
        )


# One encoder for every record: json.dumps with non-default options builds a new one per call.
_CANONICAL = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
# The string escaping that encoder uses (the C one where there is one).
_QUOTED = json.encoder.encode_basestring


def content_hash(
    assistant_id: str,
    session_id: str,
    message_id: str | None,
    score: float | None,
    text: str | None,
) -> str:
    """SHA-256 over the canonical JSON of the request's content."""
    canonical = _canonical(assistant_id, session_id, message_id, score, text)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


def _canonical(
    assistant_id: str,
    session_id: str,
    message_id: str | None,
    score: float | None,
    text: str | None,
) -> str:
    """``_CANONICAL([...])`` of the five values, byte for byte (keys in existing ledgers
    depend on it).

    The encoder builds a new C encoder on every call, which cost as much as the rest of the
    key; what a validated record holds (strings, None, finite floats) is put together here
    from the pieces that encoder uses: its string escaping, ``null``, ``float.__repr__``."""
    if (
        type(assistant_id) is str
        and type(session_id) is str
        and (message_id is None or type(message_id) is str)
        and (text is None or type(text) is str)
        and (score is None or (type(score) is float and math.isfinite(score)))
    ):
        message = "null" if message_id is None else _QUOTED(message_id)
        number = "null" if score is None else float.__repr__(score)
        note = "null" if text is None else _QUOTED(text)
        return f"[{_QUOTED(assistant_id)},{_QUOTED(session_id)},{message},{number},{note}]"
    # Anything else (an int score from a listing, a subclass): the encoder itself.
    return _CANONICAL([assistant_id, session_id, message_id, score, text])


# Not frozen (one or more per record): see RawRecord. Hashable all the same; never mutated.
@dataclass(slots=True, unsafe_hash=True)
class Accepted:
    """A valid record with where it came from and its idempotency key (computed once).

    ``handle`` is the source's acknowledgement handle, carried from the :class:`RawRecord`."""

    location: str | None
    record: FeedbackRecord
    key: str
    handle: object | None = None

    @classmethod
    def of(
        cls, location: str | None, record: FeedbackRecord, handle: object | None = None
    ) -> Accepted:
        return cls(location, record, record.idempotency_key(), handle)


@dataclass(slots=True)  # not frozen, as RawRecord: one per record of a rerun
class Skipped:
    """A record an earlier run sent, known by its key before it was validated (a rerun)."""

    location: str
    key: str
    handle: object | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    """A record that failed validation: recorded as ``invalid``, never sent."""

    location: str
    reason: str
    handle: object | None = None  # the source's acknowledgement handle, as in RawRecord
    #: The record's own fields as read (by record field name, after ``--map``), kept in the
    #: ledger so that ``failures`` can export the row for a person to fix. Only the record
    #: fields, never the whole source row: the ledger keeps what a fix needs, no more.
    fields: dict[str, Any] | None = None

    @property
    def key(self) -> str:
        return invalid_key(self.location)


def invalid_key(location: str) -> str:
    """Invalid records are keyed by where they came from: a rerun updates the same row."""
    return "invalid:" + hashlib.sha256(location.encode("utf-8", "replace")).hexdigest()


# Not frozen (one or more per record): see RawRecord. Hashable all the same; never mutated.
@dataclass(slots=True, unsafe_hash=True)
class Outcome:
    """What delivery made of one record; the ledger stores it."""

    key: str
    status: Status
    attempts: int
    http_status: int | None = None
    feedback_id: str | None = None
    error_code: int | None = None
    error_message: str | None = None
    #: Not sent because the run stopped first (a signal, a refused credential, an abort): the
    #: ledger holds it as failed "not sent" (a rerun or replay sends it), the summary counts
    #: it as stopped, never as a failure of the record.
    stopped: bool = False
