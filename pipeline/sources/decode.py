"""One decoder for every source's JSON object (a JSONL line, a RabbitMQ message, a Redis
``body``): the same input is read, or refused with the same reason, whichever way it came.

Refused, each as the record's error (invalid, dead-lettered; never an exception that would
stop the run): bytes that are not UTF-8, text that is not JSON, JSON nested deeper than the
parser's stack (a RecursionError), a value that is no object, and an object with a key given
twice (``json`` would silently keep the last: two scores in one record is an error in the
data, not something to guess about).
"""

from __future__ import annotations

import json
from typing import Any

from pipeline.models import RawRecord


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        dup = next(k for k, _ in pairs if k in seen or seen.add(k))  # type: ignore[func-returns-value]
        raise _DuplicateKey(f"duplicated key {dup!r}")
    return obj


# One decoder for every call: ``json.loads`` with a hook builds a new one each time, which
# cost a queue's drain half of its decoding.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def json_object(
    location: str, data: bytes, *, bom: bool = False, handle: object = None
) -> RawRecord:
    """``data`` (UTF-8; a leading BOM allowed when ``bom``) as a record's fields, or an error;
    ``handle`` is the record's ack handle (a broker's), kept either way."""
    try:
        text = data.decode("utf-8-sig" if bom else "utf-8")
    except UnicodeDecodeError as exc:
        return RawRecord(location, {}, f"not valid UTF-8 (byte {exc.start + 1})", handle)
    try:
        value = _DECODER.decode(text.rstrip("\r\n"))
    except _DuplicateKey as exc:
        reason = f"invalid JSON object: {exc}"
    except json.JSONDecodeError as exc:
        reason = f"invalid JSON: {exc.msg} (column {exc.colno})"
    except RecursionError:
        reason = "invalid JSON: nested too deep"
    except ValueError as exc:  # e.g. an integer of more digits than Python converts
        reason = f"invalid JSON: {exc}"
    else:
        if isinstance(value, dict):
            return RawRecord(location, value, None, handle)
        reason = f"expected a JSON object, got {type(value).__name__}"
    return RawRecord(location, {}, reason, handle)
