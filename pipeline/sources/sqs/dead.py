"""The dead-letter copy of an SQS message: an explicit copy, sent to the dead letters' queue,
with the original body and message attributes plus ``reason``, ``location`` and ``queue``.

Why a copy and not SQS's redrive policy: a redrive moves a message after ``maxReceiveCount``
receives, without saying why; the copy says why (the validation error, the API's answer), and
is made as soon as the ledger holds the outcome. A queue may have a redrive policy too (for
consumers that crash on a message): this run receives a message again only after a crash or
a lapsed visibility, so a ``maxReceiveCount`` of a few is enough not to move records early.

A message carries at most 10 attributes and, all told, at most the queue's maximum size: a
copy that would not fit keeps our three attributes and says, in ``truncated``, what was left
out (the original attributes, and the body if even that does not fit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

REASON_LIMIT = 4000  # a reason longer than this is cut: it is one line for people
MAX_ATTRIBUTES = 10  # SQS's limit per message


@dataclass(frozen=True, slots=True)
class Copy:
    body: str
    attributes: dict[str, Any]
    truncated: str | None  # what was left out (None: the copy is whole)


def _text(value: str) -> dict[str, Any]:
    return {"DataType": "String", "StringValue": value}


def _size(body: str, attributes: dict[str, Any]) -> int:
    size = len(body.encode())
    for name, value in attributes.items():
        size += len(name.encode()) + len(str(value.get("DataType", "")).encode())
        size += len(str(value.get("StringValue", "")).encode()) + len(value.get("BinaryValue", b""))
    return size


def dead_letter(
    body: str, attributes: dict[str, Any] | None, reason: str, location: str, queue: str,
    limit: int,
) -> Copy:  # fmt: skip
    ours = {
        "reason": _text(" ".join(reason.split())[:REASON_LIMIT]),
        "location": _text(location[:REASON_LIMIT]),
        "queue": _text(queue),
    }
    # Only what SendMessage takes back: a received attribute may carry list fields too.
    theirs = {
        name: {k: v for k, v in value.items() if k in ("DataType", "StringValue", "BinaryValue")}
        for name, value in (attributes or {}).items()
        if name not in ours
    }
    whole = {**theirs, **ours}
    if len(whole) <= MAX_ATTRIBUTES and _size(body, whole) <= limit:
        return Copy(body, whole, None)
    why = (
        f"a message carries at most {MAX_ATTRIBUTES} attributes"
        if len(whole) > MAX_ATTRIBUTES
        else f"with them the copy is over {limit} bytes"
    )
    left_out = f"the original attributes ({len(theirs)})"
    if _size(body, ours) + 300 > limit:
        left_out += f" and body ({len(body.encode())} bytes)"
        body = "-"  # SQS refuses an empty body
    cut = f"{left_out} were left out: {why}"
    return Copy(body, {**ours, "truncated": _text(cut)}, cut)
