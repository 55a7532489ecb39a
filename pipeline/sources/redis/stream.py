"""Redis Streams: a consumer-group source and an ``enqueue`` publisher (redis-py, asyncio).

``redis://[:PASS@]HOST:PORT/DB?stream=NAME&group=GROUP[&consumer=NAME][&dead=NAME]``

Reading order, each time the source looks for work:

1. once, at the start: this consumer's own pending entries (ID ``0``): a restarted worker
   with the same consumer name gets back what it had taken and not acked;
2. entries pending on any consumer for longer than ``claim_idle`` (XAUTOCLAIM): a dead
   worker's entries are taken over; our own entries still being worked on are never handed
   out twice (they are in ``_out`` until acked or released);
3. new entries (``>``), blocking at most ``_BLOCK_MS`` so that a stop is seen quickly.

A released entry (its record is uncertain: see :mod:`pipeline.sources.release`) leaves
``_out`` and stays pending here, so step 2 offers it again after ``claim_idle`` (to this
consumer or to another one).

``drain`` ends once nothing new is left, no entry is pending on another consumer, and none
this run released is still pending. Entries pending on a live consumer are waited for (it acks
them) and a dead one's become claimable after ``claim_idle``, so the wait is bounded by
``claim_idle``; released ones are waited for until the ledger settles their records. Other
entries pending on this consumer (handed out, not final) do not hold the drain up: their
outcome decides.

An entry is flat fields named like the CSV columns, or one field ``body`` with a JSON object
(read by :mod:`pipeline.sources.decode`, as files and RabbitMQ messages are). Entries that
cannot be read (bytes that are not UTF-8, a body that is not a JSON object, an entry over
``MAX_ENTRY_BYTES``) become records with ``error`` set: invalid, dead-lettered.
Dead letters (a copy, then the ack, atomically; truncated when the whole copy is refused) are
:mod:`pipeline.sources.redis.dead`'s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from pipeline.errors import DeadLetterError, SourceError
from pipeline.logs import event
from pipeline.models import RawRecord
from pipeline.sources.base import Done, SourceOptions
from pipeline.sources.decode import json_object
from pipeline.sources.redis.dead import DeadLetters, Letter
from pipeline.sources.redis.link import Target, connect
from pipeline.sources.redis.publish import RedisPublisher, open_publisher

#: An entry larger than this (all its fields) is refused as invalid rather than parsed.
MAX_ENTRY_BYTES = 1024 * 1024
_BLOCK_MS = 1000  # the longest a read waits for new entries: a stop is seen within this
Fields = dict[bytes, bytes]


@dataclass(frozen=True, slots=True)
class Entry:
    """A record's ack handle: its entry id and the fields as stored (for the dead letter)."""

    id: bytes
    fields: Fields


def decode(location: str, entry_id: bytes, fields: Fields) -> RawRecord:
    """An entry as a raw record; what cannot be read is an ``error``, never an exception."""
    handle = Entry(entry_id, fields)
    size = sum(len(k) + len(v) for k, v in fields.items())
    if size > MAX_ENTRY_BYTES:
        return RawRecord(location, {}, f"entry of {size} bytes, over {MAX_ENTRY_BYTES}", handle)
    try:
        text = {k.decode(): v.decode() for k, v in fields.items()}
    except UnicodeDecodeError:
        return RawRecord(location, {}, "entry is not valid UTF-8", handle)
    if "body" not in text:
        return RawRecord(location, text, None, handle)
    return json_object(location, fields[b"body"], handle=handle)


class RedisStreamSource:
    def __init__(self, client: aioredis.Redis, target: Target, options: SourceOptions) -> None:
        self._redis = client
        self._t = target
        self._count = options.batch_size
        self._drain = options.drain
        self._idle_ms = max(1, int(options.claim_idle * 1000))
        self._out: set[bytes] = set()  # handed out and not acked: never handed out twice
        self._released: set[bytes] = set()  # given back, not offered again yet: drain waits
        self._said: str | None = None  # what a drain waits for (the progress line says it)
        self._dead = DeadLetters(client, target.stream, target.group, target.dead)

    @property
    def name(self) -> str:
        return self._t.shown

    @property
    def consumer(self) -> str:
        """The consumer name this source reads as (``status`` shows it for each worker)."""
        return self._t.consumer

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[list[RawRecord]]:
        try:
            async for batch in self._own_pending(stop):
                yield batch
            while not stop.is_set():
                found = False
                async for batch in self._claimable(stop):
                    found = True
                    yield batch
                batch = await self._new(block=not self._drain)
                if batch:
                    self._said = None
                    yield batch
                elif not found and self._drain:
                    if not await self._waiting():
                        return
                    await _pause(stop, min(1.0, self._idle_ms / 1000))
        except RedisError as exc:
            raise SourceError(self._t.gone(exc)) from None

    async def _own_pending(self, stop: asyncio.Event) -> AsyncIterator[list[RawRecord]]:
        after = b"0"
        while not stop.is_set():
            entries = await self._read(after, block=None)
            if not entries:
                return
            after = entries[-1][0]
            # Deleted from the stream while pending (nil fields, which redis-py gives as {}:
            # a real entry has at least one field): nothing left to deliver.
            gone = [eid for eid, fields in entries if not fields]
            if gone:
                await self._redis.xack(self._t.stream, self._t.group, *gone)
            kept = [(eid, f) for eid, f in entries if f]
            if kept:
                yield self._records(kept)

    async def _claimable(self, stop: asyncio.Event) -> AsyncIterator[list[RawRecord]]:
        start: bytes = b"0-0"
        while not stop.is_set():
            reply = await self._redis.xautoclaim(
                self._t.stream,
                self._t.group,
                self._t.consumer,
                self._idle_ms,
                start_id=start,
                count=self._count,
            )
            start, entries = reply[0], [(e, f) for e, f in reply[1] if e not in self._out]
            taken = sum(1 for e, _ in entries if e not in self._released)
            if taken:
                event(
                    logging.INFO,
                    f"takeover: {self.name}: took {taken} entries pending on another consumer "
                    f"for over {self._idle_ms / 1000:g} s (--claim-idle): a dead or stopped "
                    "worker's, a slow one's, or given back as uncertain",
                    "takeover",
                    entries=taken,
                )
            if entries:
                yield self._records(entries)
            if start in (b"0-0", "0-0"):
                return

    async def _new(self, *, block: bool) -> list[RawRecord]:
        entries = await self._read(b">", block=_BLOCK_MS if block else None)
        return self._records(entries) if entries else []

    async def _read(self, after: bytes, *, block: int | None) -> list[tuple[bytes, Any]]:
        reply: Any = await self._redis.xreadgroup(
            self._t.group,
            self._t.consumer,
            {self._t.stream: after},
            count=self._count,
            block=block,
        )
        if not reply:
            return []
        entries: list[tuple[bytes, Any]] = reply[0][1]  # RESP2: [[stream, entries]]
        return entries

    async def _waiting(self) -> bool:
        """Whether a drain must wait: for entries pending on another consumer, or for those
        this run released that are still pending on it (XAUTOCLAIM offers them again)."""
        consumers = await self._redis.xinfo_consumers(self._t.stream, self._t.group)
        mine, own = self._t.consumer.encode(), 0
        holders = []
        for consumer in consumers:
            name, pending = consumer["name"], int(consumer["pending"])
            if name in (mine, self._t.consumer):
                own = pending
            elif pending:
                holders.append((_text(name), pending, int(consumer["idle"]) / 1000))
        if holders:
            name, pending, idle = max(holders, key=lambda h: h[1])
            more = f" (and {len(holders) - 1} other consumer(s))" if len(holders) > 1 else ""
            self._said = f"{pending} entries held by consumer {name}, idle {idle:.0f} s{more}"
            return True
        if self._released and own:
            # Another consumer may have taken one over and acked it: forget those.
            rows = await self._redis.xpending_range(
                self._t.stream, self._t.group, "-", "+", own, consumername=self._t.consumer
            )
            self._released &= {row["message_id"] for row in rows}
        else:
            self._released.clear()
        self._said = (
            f"{len(self._released)} entries given back (uncertain records), offered again "
            f"every {self._idle_ms / 1000:g} s until reconciliation settles them"
            if self._released
            else None
        )
        return bool(self._released)

    def waiting(self) -> str | None:
        return self._said

    async def depth(self) -> tuple[int | None, int | None]:
        """The group's entries not handed out yet (its lag; None where Redis cannot tell)
        and those handed out and not acked (pending), for the queue-lag metrics."""
        for group in await self._redis.xinfo_groups(self._t.stream):
            if _text(group["name"]) == self._t.group:
                lag = group.get("lag")
                return (None if lag is None else int(lag)), int(group["pending"])
        return None, None

    def release(self, handles: Sequence[object]) -> None:
        ids = {h.id for h in handles if isinstance(h, Entry)}
        self._out -= ids
        self._released |= ids

    def _records(self, entries: Sequence[tuple[bytes, Fields]]) -> list[RawRecord]:
        prefix = f"redis:{self._t.stream}/"
        self._out.update(eid for eid, _ in entries)
        self._released.difference_update(eid for eid, _ in entries)
        return [decode(prefix + eid.decode(), eid, fields) for eid, fields in entries]

    async def ack(self, done: Sequence[Done]) -> None:
        stream, group = self._t.stream, self._t.group
        plain = [d.handle.id for d in done if isinstance(d.handle, Entry) and not d.dead_letter]
        prefix = f"redis:{stream}/"
        letters = [
            Letter(d.handle.id, prefix + d.handle.id.decode(), d.handle.fields, d.dead_letter)
            for d in done
            if isinstance(d.handle, Entry) and d.dead_letter
        ]
        try:
            if plain:
                await self._redis.xack(stream, group, *plain)
            problems = await self._dead.write(letters)
        except RedisError as exc:
            raise SourceError(self._t.gone(exc)) from None
        refused = {where for where, what in problems if "stays pending" in what}
        settled = [*plain, *(lt.id for lt in letters if lt.location not in refused)]
        for ids in (self._out, self._released):
            ids.difference_update(settled)
        if problems:
            raise DeadLetterError(problems, len(refused))

    async def close(self) -> None:
        await self._redis.aclose()


def _text(name: bytes | str) -> str:
    return name.decode(errors="replace") if isinstance(name, bytes) else name


async def _pause(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def open_source(url: str, options: SourceOptions) -> RedisStreamSource:
    """Connect, and create the group (from the stream's start, MKSTREAM) if it is missing."""
    target = Target.parse(url, need_group=True)
    client = await connect(target)
    try:
        await client.xgroup_create(target.stream, target.group, id="0", mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            await client.aclose()
            raise SourceError(target.error("cannot create the group", exc)) from None
    except RedisError as exc:
        await client.aclose()
        raise SourceError(target.error("cannot connect", exc)) from None
    return RedisStreamSource(client, target, options)


__all__ = ["RedisPublisher", "RedisStreamSource", "open_publisher", "open_source"]
