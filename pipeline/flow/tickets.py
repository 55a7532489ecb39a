"""What flow control hands out and takes back: a :class:`Ticket` per request, and the
:class:`Result` that says what its answer tells about load (see :mod:`pipeline.flow.compose`)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Kind(Enum):
    OK = "ok"
    THROTTLED = "throttled"  # 429
    OVERLOADED = "overloaded"  # 503, 408, timeouts, resets: maybe noise, maybe load
    OTHER = "other"  # says nothing about load (a 400, an ambiguous failure)


# Not frozen (one of each per request): see pipeline.models.RawRecord. Never mutated.
@dataclass(slots=True, unsafe_hash=True)
class Result:
    kind: Kind
    retry_after: float | None = None


@dataclass(slots=True)  # one per request; not frozen: see Result
class Ticket:
    started: float
    level: int  # requests on the wire when this one left, itself included
    paced: float  # when it took its place under the rate cap (at most ``started``)
    #: Still unanswered many round trips after it left: flow control counted it as failed
    #: then, and no longer counts it on the wire (see pipeline.flow.overdue).
    overdue: bool = False
    #: Gave its slot back when it became overdue (pipeline.flow.slots): its answer gives none.
    freed: bool = False
    answered: bool = False
