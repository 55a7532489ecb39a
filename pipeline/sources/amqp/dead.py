"""The dead-letter copy of a RabbitMQ message: the original body and headers, plus ``reason``,
``location`` and ``queue``, persistent, published to the dead-letter queue with a confirm.

A message's properties (its headers among them) travel in one frame, which may not exceed the
``frame_max`` the connection negotiated: a copy whose headers do not fit (a producer's huge
header, plus our reason) is refused with FRAME_ERROR, and the broker closes the connection,
for every worker that takes the message in turn. So a copy is checked before it is sent; one
that would not fit keeps our three headers and says, in ``truncated``, what was left out.
"""

from __future__ import annotations

from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage
from pamqp.encode import field_table

#: RabbitMQ's default ``frame_max``, for a connection that does not tell its own.
DEFAULT_FRAME_MAX = 131072
#: Room kept in the frame for the other properties (message id, content type: each at most
#: 255 bytes) and the frame's own header.
_OTHER_PROPERTIES = 2048
REASON_LIMIT = 4000  # a reason longer than this is cut: it is one line for people


def frame_max(transport: object) -> int:
    """The negotiated ``frame_max`` of an aiormq connection (0 means no limit)."""
    tune = getattr(transport, "connection_tune", None)
    size = getattr(tune, "frame_max", None)
    return size if isinstance(size, int) and size > 0 else DEFAULT_FRAME_MAX


def _size(headers: dict[str, Any]) -> int:
    try:
        return len(field_table(headers))
    except (TypeError, ValueError):  # a value the encoder refuses: treat it as not fitting
        return 1 << 30


def dead_letter(
    original: AbstractIncomingMessage, reason: str, location: str, queue: str, limit: int
) -> tuple[aio_pika.Message, str | None]:
    """The copy to publish, and what was left out of it (None: the copy is whole)."""
    ours: dict[str, Any] = {
        "reason": reason[:REASON_LIMIT],
        "location": location[:REASON_LIMIT],
        "queue": queue,
    }
    headers = {**dict(original.headers or {}), **ours}
    cut: str | None = None
    if _size(headers) > limit - _OTHER_PROPERTIES:
        theirs = _size(dict(original.headers or {}))
        cut = (
            f"the original headers ({theirs} bytes) were left out: with them the copy does "
            f"not fit in one frame ({limit} bytes)"
        )
        headers = {**ours, "truncated": cut}
    copy = aio_pika.Message(
        original.body,
        headers=headers,
        content_type=original.content_type,
        message_id=original.message_id,
        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
    )
    return copy, cut
