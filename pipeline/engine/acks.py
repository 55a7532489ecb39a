"""Acknowledging sources: only once the ledger durably holds a record's final state.

The stages tell :class:`Acks` when that is: skipped, duplicate and invalid records right
after the claim commit; sent and permanently failed ones after the outcome commit. An
``unknown`` record is held until reconciliation settles it: stored -> acked; not stored -> not
acked but released (the entry is offered again, and the ledger lets it through since it is
``failed``, so this run sends it; a file's record waits for the next run).
Whatever is not acked (records cut off in flight, "not sent" because the run stopped) is
delivered again by the queue, and the ledger decides what to do with it then.

A record the ledger calls uncertain (another worker holds it, or a dead one left it for
reconciliation) is neither acked nor kept: it is *released* (:meth:`Acks.release`), and its
source offers it again later (:mod:`pipeline.sources.release`).

Handles are wrapped with their source (:class:`AckHandle`) as records are read, so that several
sources can be acked each with its own handles. A failing ack ends the run through
:class:`RunControl`; the entries it did not ack are redelivered. A dead-letter copy that could
not be written whole (or at all) is one entry's trouble, not the run's: it is said, and the
run goes on.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from pipeline.engine.control import RunControl
from pipeline.errors import DeadLetterError
from pipeline.sources import Done, Source
from pipeline.sources.release import Releasing


@dataclass(frozen=True, slots=True)
class AckHandle:
    """A record's ack handle together with the source it came from."""

    source: Source
    handle: object


class Acks:
    def __init__(
        self,
        control: RunControl,
        problem: Callable[[str | None, str], None] = lambda *_: None,
        refused: Callable[[int], None] = lambda _: None,
    ) -> None:
        """``problem(location, message)``: how an entry's own trouble is said (a dead-letter
        copy written truncated, or refused): it never stops the run. ``refused(n)``: told how
        many copies were refused (their entries stay unacked: the run's work is not done)."""
        self._control = control
        self._problem = problem
        self._refused = refused
        self._held: dict[str, list[AckHandle]] = defaultdict(list)  # unknown, by ledger key
        self._broken = False

    async def done(self, finished: Iterable[tuple[object | None, str | None]]) -> None:
        """Ack ``(handle, dead_letter)`` pairs; handles that are not tickets are ignored."""
        if self._broken:
            return
        # By identity: a source need not be hashable.
        by_source: dict[int, tuple[Source, list[Done]]] = {}
        for handle, dead_letter in finished:
            if isinstance(handle, AckHandle):
                entry = by_source.setdefault(id(handle.source), (handle.source, []))
                entry[1].append(Done(handle.handle, dead_letter))
        for source, dones in by_source.values():
            try:
                await source.ack(dones)
            except DeadLetterError as exc:  # the others were acked; these are said, no more
                for location, message in exc.problems:
                    self._problem(location, message)
                self._refused(exc.refused)
            except Exception as exc:  # noqa: BLE001 - any failure ends the run, cleanly
                self._broken = True  # later acks would fail alike; their entries are redelivered
                self._control.abort(f"ack to {source.name} failed: {type(exc).__name__}: {exc}")
                return

    def hold(self, key: str, handle: object | None) -> None:
        """Keep an ``unknown`` record's handle until reconciliation settles it."""
        if isinstance(handle, AckHandle):
            self._held[key].append(handle)

    async def settled(self, found: Iterable[str], missing: Iterable[str]) -> None:
        """Reconciliation settled these keys: ack what was stored, give the rest back to be
        offered again (left unacked, a drain would end with them unsent, or wait for them)."""
        self.release(t for key in missing for t in self._held.pop(key, []))
        tickets = [t for key in found for t in self._held.pop(key, [])]
        await self.done((ticket, None) for ticket in tickets)

    @staticmethod
    def releasable(handle: object | None) -> bool:
        """Whether the record's source can offer it again later (queues; not files)."""
        return isinstance(handle, AckHandle) and isinstance(handle.source, Releasing)

    def release(self, handles: Iterable[object | None]) -> None:
        """Give these (releasable) entries back to their sources, which offer them again."""
        by_source: dict[int, tuple[Releasing, list[object]]] = {}
        for handle in handles:
            if isinstance(handle, AckHandle) and isinstance(handle.source, Releasing):
                entry = by_source.setdefault(id(handle.source), (handle.source, []))
                entry[1].append(handle.handle)
        for source, raw in by_source.values():
            source.release(raw)
