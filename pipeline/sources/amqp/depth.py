"""How much work a RabbitMQ queue still holds, for ``status``: its ready messages (a passive
declare); how many are delivered and unacked is not told over AMQP, so ``pending`` is None."""

from __future__ import annotations

import aio_pika

from pipeline.errors import SourceError
from pipeline.sources.amqp.link import parse_url as parse_amqp
from pipeline.sources.queue_depth import TIMEOUT_S as _TIMEOUT_S
from pipeline.sources.queue_depth import Depth


async def depth(url: str) -> Depth:
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
