"""NATS JetStream (nats-py): a source for ``run`` and a destination for ``enqueue --to``.

``nats://[USER:PASS@|TOKEN@]HOST:PORT?stream=NAME&consumer=NAME[&subject=SUBJECT]
[&dead=SUBJECT][&max_deliver=N]``. One JSON object per message, keyed like the CSV columns.
Choices, and why:

- **A durable pull consumer** (``consumer=``), shared by every worker of the job: each fetch
  hands a batch to one worker, and the consumer remembers what was acked across runs. It is
  created when missing (explicit acks, from the stream's start, no cap on unacked messages,
  filtered on ``subject=`` when given), else used as it is, but for its **ack wait**, set to
  this run's ``--claim-idle``: a message not acked within it is delivered again (to any
  worker), which is how a dead worker's messages are taken over.
- **The ack wait never lapses on a record still in flight**: every message this run holds
  (handed out, given back, or whose dead-letter copy was refused) gets a progress ack
  (``+WPI``) every third of the ack wait, so it is delivered again only once this run is gone.
  A message delivered again to this run while it still holds it (a late progress ack) is not
  handed out twice: its newer delivery replaces the one held.
- **Acks after the ledger**, as for every broker; a dead letter is a copy published to the
  ``dead=`` subject (default ``STREAM.dead``, in a stream ``STREAM_dead`` created when no
  stream stores it) and confirmed by JetStream before the original is acked.
- **max_deliver=N** (default: no limit) is set on a consumer this run creates; JetStream
  delivers a message no more than N times, then forgets it unacked. So on a message's last
  delivery this run does not risk it: it is dead-lettered at once, with the reason, and acked.
- **Pulls** (:mod:`pipeline.sources.nats.pull`): one pull request open at a time, for a
  batch, read by a callback; messages delivered but not taken yet get progress acks too, and
  go back at once (a nak) when the run stops reading.
- **A plain connection**, never reconnecting silently: a lost link ends the run (exit 3)
  once every outcome is recorded; the rerun's ledger skips what was sent.
- **Location** ``nats:STREAM/SEQUENCE`` (the stream sequence: the same on every delivery, so
  a rerun updates the same invalid row).
- **Drain**: done once a fetch finds nothing, no message is pending on the consumer (not yet
  delivered) and none is unacked but those this run holds: the others' are waited for (a dead
  worker's come back after the ack wait and are taken; a live one acks them).
- **Released** messages (their record is uncertain, see :mod:`pipeline.sources.release`)
  are held for ``claim_idle`` seconds (their ack wait kept from lapsing), then handed on
  again by this run, not nak'ed: a nak'ed message comes straight back while its record is
  still uncertain, and each delivery counts towards ``max_deliver``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.js import JetStreamContext, JetStreamManager
from nats.js.api import ConsumerInfo
from nats.js.errors import NotFoundError

from pipeline.errors import DeadLetterError, SourceError
from pipeline.logs import event
from pipeline.models import RawRecord
from pipeline.sources.base import Done, SourceOptions
from pipeline.sources.copies import copied, raise_problems
from pipeline.sources.nats.dead import dead_letter
from pipeline.sources.nats.link import (
    API_TIMEOUT,
    Target,
    ensure_consumer,
    ensure_dead,
    open_jetstream,
    parse_url,
)
from pipeline.sources.nats.publish import NatsPublisher, open_publisher
from pipeline.sources.nats.pull import Puller, PullError
from pipeline.sources.nats.records import Handle, location, to_record
from pipeline.sources.release import Holding

_IDLE = 0.25  # seconds a drain run's fetch waits before it asks what is left
_WAIT = 1.0  # seconds a following run's fetch waits: a stop is seen within this


class NatsSource:
    """Fetches from one durable pull consumer; see the module's docstring for the choices."""

    def __init__(
        self,
        target: Target,
        connection: Client,
        js: JetStreamContext,
        jsm: JetStreamManager,
        options: SourceOptions,
        max_deliver: int,
    ) -> None:
        self.name = target.shown
        self._t = target
        self._nc = connection
        self._js = js
        self._jsm = jsm
        self._options = options
        self._max_deliver = max_deliver
        self._ack_wait = options.claim_idle
        self._held: dict[int, Msg] = {}  # every message this run holds unacked, by sequence
        self._given_back: Holding[int] = Holding(options.claim_idle)
        self._lost: str | None = None
        self._closing = False
        self._waiting: str | None = None
        self._beat: asyncio.Task[None] | None = None
        self._puller = Puller(connection, target.stream, target.consumer)

    def lost(self) -> None:
        """The connection went (the client's callback)."""
        if not self._closing and self._lost is None:
            self._lost = "the server closed the connection, or it was cut"

    def _check(self) -> None:
        if self._lost is not None or self._nc.is_closed:
            raise SourceError(f"{self.name}: connection to the server lost ({self._lost})")

    def _gone(self, exc: BaseException) -> SourceError:
        self.lost()
        return SourceError(f"{self.name}: connection to the server lost ({self._t.failure(exc)})")

    async def batches(self, stop: asyncio.Event) -> AsyncIterator[list[RawRecord]]:
        try:
            await self._puller.start()
        except (NatsError, OSError) as exc:
            raise self._gone(exc) from None
        if self._beat is None:
            self._beat = asyncio.create_task(self._heartbeat())
        wait = _IDLE if self._options.drain else _WAIT
        try:
            while not stop.is_set():
                self._check()
                again = [self._held[s] for s in self._given_back.due() if s in self._held]
                if again:
                    yield [to_record(self._t.stream, m) for m in again]
                    continue
                batch = await self._fetch(wait)
                if batch:
                    self._waiting = None
                    yield [to_record(self._t.stream, m) for m in batch]
                elif self._options.drain and await self._drained():
                    return
        finally:
            await self._puller.stop()

    async def _fetch(self, wait: float) -> list[Msg]:
        try:
            msgs = await self._puller.take(self._options.batch_size, wait)
            if self._puller.unheard:  # no answer at all: is the consumer still there?
                await self._consumer_info()
        except PullError as exc:
            raise SourceError(f"{self.name}: {exc}") from None
        except (NatsError, OSError) as exc:
            raise self._gone(exc) from None
        fresh: list[Msg] = []
        last: list[Msg] = []
        for msg in msgs:
            seq = msg.metadata.sequence.stream
            known = seq in self._held
            self._held[seq] = msg  # a newer delivery of one still held: ack that one
            if known:
                continue
            if 0 < self._max_deliver <= msg.metadata.num_delivered:
                last.append(msg)
            else:
                fresh.append(msg)
        if last:
            await self._last_deliveries(last)
        return fresh

    async def _last_deliveries(self, msgs: list[Msg]) -> None:
        """Dead-letter at once what JetStream would not deliver again (``max_deliver``)."""
        done = [
            Done(
                Handle(m.metadata.sequence.stream, location(self._t.stream, m)),
                f"delivered {m.metadata.num_delivered} times without an outcome "
                f"(max_deliver={self._max_deliver}): the server would not deliver it again",
            )
            for m in msgs
        ]  # fmt: skip
        try:
            await self.ack(done)
        except DeadLetterError as exc:  # said; the message stays unacked, held by this run
            for where, what in exc.problems:
                event(logging.WARNING, f"{where}: {what}", "dead_letter_problem")

    async def _heartbeat(self) -> None:
        """Progress acks for every message held, a third of the ack wait apart."""
        every = max(0.05, self._ack_wait / 3)
        while not self._closing:
            await asyncio.sleep(every)
            if self._lost is not None or self._nc.is_closed:
                return
            with contextlib.suppress(NatsError, OSError):
                for msg in [*self._held.values(), *self._puller.kept()]:
                    await msg.in_progress()

    async def _drained(self) -> bool:
        if self._given_back:
            self._waiting = (
                f"{len(self._given_back)} messages given back (uncertain records), offered "
                f"again every {self._options.claim_idle:g} s until reconciliation settles them"
            )
            return False
        try:
            await self._nc.flush(timeout=int(API_TIMEOUT))  # our acks reach the server first
            info = await self._consumer_info()
        except (NatsError, OSError, TimeoutError) as exc:
            raise self._gone(exc) from None
        if info.num_pending or self._puller.kept():
            return False  # not delivered or not taken yet: the next fetch takes them
        others = (info.num_ack_pending or 0) - len(self._held)
        self._waiting = (
            f"{others} messages held by other consumers of {self._t.consumer} (delivered "
            f"again {self._ack_wait:g} s after the last sign of the one holding them)"
            if others > 0
            else None
        )
        return others <= 0

    async def _consumer_info(self) -> ConsumerInfo:
        """The consumer's counts; one that was deleted under the run is said as such."""
        try:
            info: ConsumerInfo = await self._jsm.consumer_info(self._t.stream, self._t.consumer)
        except NotFoundError:
            raise SourceError(  # said after the source's name by the run
                f"consumer {self._t.consumer} of stream {self._t.stream} no longer exists "
                "(deleted while this run read it); the ledger keeps what was sent, and a "
                "rerun creates the consumer again"
            ) from None
        return info

    def waiting(self) -> str | None:
        return self._waiting

    async def depth(self) -> tuple[int | None, int | None]:
        """Messages not delivered yet and delivered but unacked, for the queue-lag metrics."""
        await self._nc.flush(timeout=int(API_TIMEOUT))  # this run's acks counted first
        info = await self._jsm.consumer_info(self._t.stream, self._t.consumer)
        return info.num_pending, info.num_ack_pending

    def release(self, handles: Sequence[object]) -> None:
        self._given_back.hold(h.seq for h in handles if isinstance(h, Handle))

    async def ack(self, done: Sequence[Done]) -> None:
        """Plain acks at once; a dead letter's original only once its copy is confirmed. A
        copy JetStream refuses leaves its message unacked and held (said, the run goes on)."""
        self._check()
        plain = [d.handle for d in done if d.dead_letter is None and isinstance(d.handle, Handle)]
        dead = [d for d in done if d.dead_letter is not None and isinstance(d.handle, Handle)]
        copies = await asyncio.gather(*(self._dead_letter(d) for d in dead), return_exceptions=True)
        self._check()  # a copy that failed because the connection went: the run ends
        confirmed = [d.handle for d, r in zip(dead, copies, strict=True) if copied(r)]
        try:
            for handle in [*plain, *confirmed]:
                assert isinstance(handle, Handle)
                msg = self._held.pop(handle.seq, None)
                if msg is not None:
                    await msg.ack()
        except (NatsError, OSError) as exc:
            raise self._gone(exc) from None
        located = [
            (d.handle.location, r)
            for d, r in zip(dead, copies, strict=True)
            if isinstance(d.handle, Handle)
        ]
        raise_problems(
            located, self._t.dead, self._t.failure, "the message stays on its stream, unacked"
        )

    async def _dead_letter(self, done: Done) -> str | None:
        """Publish the copy and wait for JetStream's ack; what was left out (None: whole)."""
        handle = done.handle
        assert isinstance(handle, Handle)
        assert done.dead_letter is not None
        msg = self._held[handle.seq]
        copy = dead_letter(
            msg.data, msg.headers, done.dead_letter, handle.location, self._t.stream,
            self._nc.max_payload,
        )  # fmt: skip
        await self._js.publish(self._t.dead, copy.data, headers=copy.headers)
        return copy.truncated

    async def close(self) -> None:
        self._closing = True
        if self._beat is not None:
            self._beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat
        with contextlib.suppress(Exception):
            await self._nc.flush(timeout=2)  # the last acks reach the server before the close
        with contextlib.suppress(Exception):
            await self._nc.close()


async def open_source(url: str, options: SourceOptions) -> NatsSource:
    """Connect; the stream, the dead letters' stream and the consumer, created if missing."""
    target = parse_url(url, need_consumer=True)
    holder: list[NatsSource] = []

    def lost() -> None:  # the client's callback, before the source exists
        for source in holder:
            source.lost()

    connection, js, jsm = await open_jetstream(target, lost)
    try:
        await ensure_dead(jsm, target)
        info = await ensure_consumer(jsm, target, options.claim_idle)
    except NatsError as exc:
        await connection.close()
        raise SourceError(f"{target.shown}: {target.failure(exc)}") from None
    except BaseException:
        await connection.close()
        raise
    source = NatsSource(target, connection, js, jsm, options, info.config.max_deliver or -1)
    holder.append(source)
    return source


__all__ = ["NatsPublisher", "NatsSource", "open_publisher", "open_source"]
