"""Reruns: records an earlier run sent are skipped before they are validated.

Validating a record costs several times what reading it does, and a rerun of a large file
mostly meets records the ledger holds as sent. Their keys are told cheaply first
(:meth:`Validator.quick_key`), looked up in one query per batch, and the ones found sent are
skipped; only the rest is validated and claimed. While lookups find records sent, the next
batch is read, keyed and looked up (in the ledger's thread) while this one is handed on.

Where batches stop finding anything sent (new records, a queue), looking costs a query per
batch for nothing: it then stops, and looks again every :data:`LOOK_AGAIN` batches, for a
file whose old records come later.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator, Sequence
from typing import Protocol

from pipeline.engine.reading import closing, validated
from pipeline.engine.stages import Batches, Item
from pipeline.engine.validate import Validator
from pipeline.models import RawRecord, Skipped

#: Batches read without looking before looking again, once looking found too little.
LOOK_AGAIN = 16
#: Looking goes on while at least this share of a batch is found sent.
WORTH_IT = 0.5

#: A batch with each record's quick key, and its lookup (None: not looked up).
_Looked = tuple[list[tuple[str | None, RawRecord]], "asyncio.Future[set[str]] | None"]


class SentLookup(Protocol):
    async def sent_earlier(self, records: Sequence[tuple[str, str]]) -> set[str]: ...


async def skipping_sent(
    raw: AsyncIterator[list[RawRecord]], validator: Validator, ledger: SentLookup
) -> Batches:
    """``raw`` validated, in order, except the records an earlier run sent: Skipped.

    A batch is handed on as soon as its own lookup is done, never held for the next one (a
    queue or a FIFO may give nothing more for a long time)."""
    ahead = _Ahead()
    producer = asyncio.create_task(ahead.read(raw, validator, ledger))
    try:
        while (looked := await ahead.next()) is not None:
            keyed, lookup = looked
            sent = set() if lookup is None else await lookup
            yield [_item(validator, key, record, sent) for key, record in keyed]
        await producer  # its error, if it had one
    finally:
        producer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await producer
        ahead.drop()


class _Ahead:
    """Reads, keys and looks up batches in a task of its own, one batch ahead of the
    consumer (:func:`skipping_sent`).

    Ahead only while lookups find records sent (a rerun): otherwise a batch is read only once
    the consumer asked for it, as without this stage (so a source that fails does so after the
    batch before was claimed, not before)."""

    def __init__(self) -> None:
        self._ready: asyncio.Queue[_Looked | None] = asyncio.Queue(maxsize=1)
        self._asked = 0
        self._wanted = asyncio.Event()

    async def next(self) -> _Looked | None:
        self._asked += 1
        self._wanted.set()
        return await self._ready.get()

    async def read(
        self, raw: AsyncIterator[list[RawRecord]], validator: Validator, ledger: SentLookup
    ) -> None:
        gate, given = _Gate(), 0
        try:
            async with closing(raw) as batches:
                while True:
                    while not gate.on and self._asked <= given:
                        self._wanted.clear()
                        await self._wanted.wait()
                    batch = await anext(batches, None)
                    if batch is None:
                        break
                    given += 1
                    if not gate.look():
                        await self._ready.put(([(None, record) for record in batch], None))
                        continue
                    keyed = [(_quick_key(validator, record), record) for record in batch]
                    lookups = [(k, record.location) for k, record in keyed if k is not None]
                    lookup = asyncio.ensure_future(_sent(ledger, lookups))
                    lookup.add_done_callback(functools.partial(gate.found, size=len(batch)))
                    await self._ready.put((keyed, lookup))
                    if given == 1:  # whether to read on before the consumer asks: wait to know
                        await asyncio.wait([lookup])
        except Exception:
            await self._ready.put(None)  # the end, so that the consumer wakes up to this error
            raise
        await self._ready.put(None)

    def drop(self) -> None:
        """Lookups never used (the run stopped reading): their answers are not needed."""
        while not self._ready.empty():
            left = self._ready.get_nowait()
            if left is not None and left[1] is not None:
                _drop(left[1])


class _Gate:
    """Whether to look a batch's keys up first."""

    def __init__(self) -> None:
        self.on = True
        self._idle = 0

    def look(self) -> bool:
        if not self.on:
            self._idle += 1
            if self._idle < LOOK_AGAIN:
                return False
            self._idle = 0
        return True

    def found(self, lookup: asyncio.Future[set[str]], *, size: int) -> None:
        """As each lookup ends (an error or a stop: the consumer meets it, nothing to learn)."""
        if not lookup.cancelled() and lookup.exception() is None:
            self.on = len(lookup.result()) >= WORTH_IT * size


async def _sent(ledger: SentLookup, lookups: list[tuple[str, str]]) -> set[str]:
    return await ledger.sent_earlier(lookups) if lookups else set()


def _drop(lookup: asyncio.Future[set[str]]) -> None:
    """A lookup whose answer is not needed (an error or a stop came first)."""
    if lookup.done() and not lookup.cancelled():
        lookup.exception()  # retrieved: an error nobody needs is not worth a warning
    lookup.cancel()


def _item(validator: Validator, key: str | None, record: RawRecord, found: set[str]) -> Item:
    if key is not None and key in found:
        return Skipped(record.location, key, record.handle)
    return validated(validator, record)


def _quick_key(validator: Validator, record: RawRecord) -> str | None:
    try:
        return validator.quick_key(record)
    except Exception:  # noqa: BLE001 - a bug here costs the shortcut, never the record
        return None
