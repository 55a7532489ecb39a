"""``enqueue --to redis://...``: records published to a stream, for workers to ``run``."""

from __future__ import annotations

from collections.abc import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pipeline.errors import AbortedError
from pipeline.models import Accepted
from pipeline.sources.base import SourceOptions
from pipeline.sources.redis.link import Target, connect


class RedisPublisher:
    """``enqueue --to redis://...``: XADD per record, one pipelined round trip per batch."""

    def __init__(self, client: aioredis.Redis, target: Target) -> None:
        self._redis = client
        self._t = target
        self.published = 0

    async def publish(self, batch: Sequence[Accepted]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for item in batch:
                    fields = item.record.model_dump(exclude_none=True)
                    fields["key"] = item.key
                    pipe.xadd(self._t.stream, {k: str(v) for k, v in fields.items()})
                await pipe.execute()
        except RedisError as exc:  # mid-run: exit 3, one line
            raise AbortedError(self._t.error("publish failed", exc)) from None
        self.published += len(batch)

    async def close(self) -> None:
        await self._redis.aclose()


async def open_publisher(url: str, options: SourceOptions) -> RedisPublisher:
    target = Target.parse(url, need_group=False)
    return RedisPublisher(await connect(target), target)
