"""How much work an SQS queue still holds, for ``status``: its visible (and delayed) messages
and those in flight (received, not deleted), from the queue's approximate counts."""

from __future__ import annotations

from pipeline.errors import SourceError
from pipeline.sources.queue_depth import Depth
from pipeline.sources.sqs.link import ERRORS, Link, parse_url


async def depth(url: str) -> Depth:
    link = Link(parse_url(url))
    client = await link.open()
    try:
        queue = await link.queue_url(link.target.queue, create=False)
        answer = await client.get_queue_attributes(
            QueueUrl=queue,
            AttributeNames=[
                "ApproximateNumberOfMessages",
                "ApproximateNumberOfMessagesNotVisible",
                "ApproximateNumberOfMessagesDelayed",
            ],
        )
    except ERRORS as exc:
        raise SourceError(
            f"{link.target.shown}: reading the queue: {link.target.failure(exc)}"
        ) from None
    finally:
        await link.close()
    values = answer.get("Attributes", {})
    backlog = int(values.get("ApproximateNumberOfMessages", 0)) + int(
        values.get("ApproximateNumberOfMessagesDelayed", 0)
    )
    return Depth(
        link.target.shown, backlog, int(values.get("ApproximateNumberOfMessagesNotVisible", 0))
    )
