"""Which ack frames to send for a set of finished deliveries: fewer frames, same meaning.

Each ack frame is a write (a system call) of its own, as many as the HTTP requests. Delivery
tags grow in delivery order on a channel, so once every delivery from the oldest outstanding
one up to tag N is finished, one ``basic.ack(N, multiple=True)`` acks them all. Deliveries
finished out of order (behind one still on the wire, or held until reconciled) are acked one
by one at once, never deferred: a record whose final state the ledger holds is acked now.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class AckPlan:
    def __init__(self) -> None:
        self._order: deque[int] = deque()  # outstanding tags, oldest first
        self._finished: set[int] = set()  # finished, still in _order
        self._single: set[int] = set()  # of those, already acked one by one

    def delivered(self, tag: int) -> None:
        self._order.append(tag)

    def plan(self, tags: Iterable[int]) -> tuple[int | None, list[int]]:
        """For newly finished ``tags``: the tag to ack with ``multiple`` (or None), and the
        tags to ack one by one. The multiple ack never names a tag acked before (RabbitMQ
        closes the channel on an unknown tag)."""
        new = set(tags)
        self._finished |= new
        upto: int | None = None
        while self._order and self._order[0] in self._finished:
            tag = self._order.popleft()
            self._finished.discard(tag)
            if tag in self._single:
                self._single.discard(tag)
            else:
                upto = tag
        singles = sorted(t for t in new if upto is None or t > upto)
        self._single.update(singles)
        return upto, singles
