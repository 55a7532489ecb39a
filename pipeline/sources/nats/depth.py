"""How much work a JetStream consumer still holds, for ``status``: its pending messages (not
delivered yet) and its unacked ones (delivered, not acked), from the consumer's info."""

from __future__ import annotations

import contextlib

from nats.errors import Error as NatsError
from nats.js.errors import NotFoundError

from pipeline.errors import SourceError
from pipeline.sources.nats.link import connect, parse_url
from pipeline.sources.queue_depth import Depth


async def depth(url: str) -> Depth:
    target = parse_url(url, need_consumer=True)
    connection = await connect(target)
    try:
        info = await connection.jsm().consumer_info(target.stream, target.consumer)
    except NotFoundError:  # no consumer yet: no worker has read; the stream's count waits
        try:
            stream = await connection.jsm().stream_info(target.stream)
        except NatsError as exc:
            what = target.failure(exc)
            raise SourceError(f"{target.shown}: reading the stream: {what}") from None
        return Depth(target.shown, stream.state.messages, 0)
    except NatsError as exc:
        raise SourceError(f"{target.shown}: reading the consumer: {target.failure(exc)}") from None
    finally:
        with contextlib.suppress(Exception):
            await connection.close()
    return Depth(target.shown, info.num_pending, info.num_ack_pending)
