"""The dead-letter copy of a JetStream message: the original data and headers, plus
``reason``, ``location`` and ``stream``, published to the dead letters' subject and confirmed
by the stream that stores it (a copy counts only once JetStream has it).

A message (data and headers together) may not exceed the server's ``max_payload``, and
JetStream refuses headers over 64 KiB: a copy that would not fit (a producer's huge headers,
plus our reason) would be refused for every worker that takes the message in turn. So a
copy is sized before it is sent; one that would not fit keeps our headers and says, in
``truncated``, what was left out.

The original's ``Nats-`` headers are not copied: they are instructions to JetStream (a
message id that would de-duplicate the copy against another dead letter, expectations that
would refuse it), not the record.
"""

from __future__ import annotations

from dataclasses import dataclass

REASON_LIMIT = 4000  # a reason longer than this is cut: it is one line for people
#: Bytes of a message's header block around its fields: ``NATS/1.0\r\n`` ... ``\r\n``.
_FRAME = 12
#: The largest header block JetStream stores.
HEADER_LIMIT = 64 * 1024


@dataclass(frozen=True, slots=True)
class Copy:
    data: bytes
    headers: dict[str, str]
    truncated: str | None  # what was left out (None: the copy is whole)


def _line(text: str) -> str:
    # A header value is one line: a reason or location with a line break would end the block.
    return " ".join(text.split())[:REASON_LIMIT]


def _block(headers: dict[str, str]) -> int:
    return sum(len(k.encode()) + len(v.encode()) + 4 for k, v in headers.items()) + _FRAME


def _fits(data: bytes, headers: dict[str, str], limit: int) -> bool:
    block = _block(headers)
    return block <= HEADER_LIMIT and len(data) + block <= limit


def dead_letter(
    data: bytes, headers: dict[str, str] | None, reason: str, location: str, stream: str, limit: int
) -> Copy:
    """The copy of a message to publish within ``limit`` bytes (the server's max payload)."""
    ours = {"reason": _line(reason), "location": _line(location), "stream": stream}
    theirs = {k: v for k, v in (headers or {}).items() if not k.lower().startswith("nats-")}
    whole = {**theirs, **ours}
    if _fits(data, whole, limit):
        return Copy(data, whole, None)
    left_out = f"the original headers ({_block(theirs) - _FRAME} bytes)"
    if not _fits(data, {**ours, "truncated": "x" * 200}, limit):  # nor the data beside ours
        left_out += f" and data ({len(data)} bytes)"
        data = b""
    cut = f"{left_out} were left out: with them the copy does not fit in {limit} bytes"
    return Copy(data, {**ours, "truncated": cut}, cut)
