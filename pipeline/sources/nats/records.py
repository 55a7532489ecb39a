"""A JetStream message as a raw record, and its ack handle (the stream sequence: the same on
every delivery of the message)."""

from __future__ import annotations

from dataclasses import dataclass

from nats.aio.msg import Msg

from pipeline.models import RawRecord
from pipeline.sources.decode import json_object

#: The largest message data read as a record; a larger one is dead-lettered unparsed.
MESSAGE_LIMIT = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Handle:
    seq: int  # the stream sequence: the message, whichever delivery of it is held
    location: str


def location(stream: str, msg: Msg) -> str:
    return f"nats:{stream}/{msg.metadata.sequence.stream}"


def to_record(stream: str, msg: Msg) -> RawRecord:
    """A message as a raw record: parse errors (and a huge body) become the record's error."""
    where = location(stream, msg)
    handle = Handle(msg.metadata.sequence.stream, where)
    if len(msg.data) > MESSAGE_LIMIT:
        reason = f"message of {len(msg.data)} bytes, more than {MESSAGE_LIMIT} (the limit)"
        return RawRecord(where, {}, reason, handle)
    return json_object(where, msg.data, handle=handle)
