"""How much work a queue still holds, for ``status``: entries not yet handed out (backlog)
and entries handed out and not acked (pending).

- Redis Streams: the group's ``lag`` (entries after its last delivered one; Redis 7) and its
  ``pending`` count, from XINFO GROUPS.
- RabbitMQ: the queue's ready messages (a passive declare); how many are delivered and
  unacked is not told over AMQP, so ``pending`` is None (unknown).
"""

from __future__ import annotations

from dataclasses import dataclass

import aio_pika
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pipeline.errors import SourceError
from pipeline.sources.amqp.link import parse_url as parse_amqp
from pipeline.sources.redis.link import Target as RedisTarget
from pipeline.urls import mask_url, scheme

_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Depth:
    source: str  # the URL, password masked
    backlog: int | None  # not handed out yet (None: not known)
    pending: int | None  # handed out, not acked (None: not known)

    @property
    def empty(self) -> bool:
        """Surely nothing left on the queue (an unknown count is not nothing)."""
        return self.backlog == 0 and self.pending == 0

    def as_dict(self) -> dict[str, object]:
        return {"source": self.source, "backlog": self.backlog, "pending": self.pending}


async def depth(url: str) -> Depth:
    """The queue ``url`` names, read once; a queue that cannot be read is a SourceError."""
    name = scheme(url)
    if name in ("redis", "rediss", "unix"):
        return await _redis(url)
    if name in ("amqp", "amqps"):
        return await _amqp(url)
    raise SourceError(f"--queue {mask_url(url)}: not a queue URL (redis://... or amqp://...)")


async def _redis(url: str) -> Depth:
    target = RedisTarget.parse(url, need_group=True)
    client = aioredis.Redis.from_url(
        target.server, socket_connect_timeout=_TIMEOUT_S, socket_timeout=_TIMEOUT_S
    )
    try:
        groups = await client.xinfo_groups(target.stream)
    except RedisError as exc:
        if "no such key" in str(exc).lower():  # no stream yet: nothing on it
            return Depth(target.shown, 0, 0)
        raise SourceError(target.error("reading the queue's depth", exc)) from None
    finally:
        await client.aclose()
    for group in groups:
        if _text(group["name"]) == target.group:
            lag = group.get("lag")
            return Depth(target.shown, None if lag is None else int(lag), int(group["pending"]))
    # No group yet: no worker has read; everything on the stream waits.
    client = aioredis.Redis.from_url(target.server, socket_connect_timeout=_TIMEOUT_S)
    try:
        length = int(await client.xlen(target.stream))
    except RedisError as exc:
        raise SourceError(target.error("reading the queue's depth", exc)) from None
    finally:
        await client.aclose()
    return Depth(target.shown, length, 0)


async def _amqp(url: str) -> Depth:
    target = parse_amqp(url)
    try:
        connection = await aio_pika.connect(target.connect, timeout=_TIMEOUT_S)
    except Exception as exc:  # noqa: BLE001 - the client's own errors, one line
        raise SourceError(f"{target.shown}: cannot connect: {target.failure(exc)}") from None
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(target.queue, passive=True)
        ready = queue.declaration_result.message_count or 0
    except Exception as exc:  # noqa: BLE001 - e.g. no such queue
        raise SourceError(f"{target.shown}: reading the queue: {target.failure(exc)}") from None
    finally:
        await connection.close()
    return Depth(target.shown, ready, None)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
