"""Giving entries back: a queue entry whose record this run may neither send nor ack yet.

The ledger calls a record *uncertain* when another worker holds it in flight (alive: it
finishes it; killed: reconciliation settles it once its lease expired) or left it
``unknown``. The entry must not be acked (its record may still turn out not stored, and then
someone has to send it), and it must not be dropped either: left with this run and never
offered again, a ``--drain`` run would wait for it forever. So the stages *release* it: the
source offers it again later (after ``claim_idle``), by when the ledger can usually tell
(sent: skipped and acked; failed "not stored": sent).

Not at once: the record stays uncertain until the other worker or reconciliation is done,
and offering it again at once would claim it in a hot loop meanwhile.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, Protocol, TypeVar, runtime_checkable

T = TypeVar("T")


@runtime_checkable
class Releasing(Protocol):
    """A source that can give entries back (queues); file sources cannot and need not: an
    uncertain record of a file stays unsent, and the next run settles it first."""

    def release(self, handles: Sequence[object]) -> None:
        """Offer these entries (ack handles of this source) again after ``claim_idle``; they
        stay unacked meanwhile, and a drain does not end while they are pending."""
        ...


class Holding(Generic[T]):
    """Entries kept unacked for ``delay`` seconds, then due to be offered again (in the order
    they were held: the delay is the same for all)."""

    def __init__(self, delay: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._delay = delay
        self._clock = clock
        self._held: deque[tuple[float, T]] = deque()

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, items: Iterable[T]) -> None:
        due = self._clock() + self._delay
        self._held.extend((due, item) for item in items)

    def due(self) -> list[T]:
        """The entries whose delay is over, no longer held."""
        now, ready = self._clock(), []
        while self._held and self._held[0][0] <= now:
            ready.append(self._held.popleft()[1])
        return ready

    def wait(self) -> float | None:
        """Seconds until the next entry is due (0 if one is), None when none is held."""
        return max(0.0, self._held[0][0] - self._clock()) if self._held else None
