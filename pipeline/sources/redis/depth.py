"""How much work a Redis stream still holds, for ``status``: the group's ``lag`` (entries after
its last delivered one; Redis 7) and its ``pending`` count, from XINFO GROUPS."""

from __future__ import annotations

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pipeline.errors import SourceError
from pipeline.sources.queue_depth import TIMEOUT_S as _TIMEOUT_S
from pipeline.sources.queue_depth import Depth
from pipeline.sources.redis.link import Target as RedisTarget


async def depth(url: str) -> Depth:
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


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
