"""``enqueue --to sqs://...``: records sent in batches of ten (SendMessageBatch, SQS's most),
the batches of one call in flight together. A FIFO queue gets the idempotency key as the
de-duplication id (SQS drops a copy sent within 5 minutes) and as the message group (records
need no order among themselves, and one group per record lets every worker take any)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from pipeline.errors import AbortedError
from pipeline.models import Accepted
from pipeline.sources.base import SourceOptions
from pipeline.sources.sqs.link import ERRORS, Link, Target, parse_url

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient

BATCH = 10  # SendMessageBatch's most
_ID = re.compile(r"^[\x21-\x7e]{1,128}$")  # what a de-duplication or group id may hold


def fifo_id(key: str) -> str:
    """``key`` as an SQS id: as it is when allowed, else its SHA-256 (same key, same id)."""
    return key if _ID.match(key) else hashlib.sha256(key.encode()).hexdigest()


class SqsPublisher:
    def __init__(self, link: Link, client: SQSClient, url: str) -> None:
        self._link = link
        self._t: Target = link.target
        self._client = client
        self._url = url
        self.published = 0

    def _entry(self, index: int, item: Accepted) -> Any:  # a SendMessageBatch entry
        body = {**item.record.model_dump(exclude_none=True), "key": item.key}
        entry: dict[str, Any] = {
            "Id": str(index),
            "MessageBody": json.dumps(body, ensure_ascii=False),
        }
        if self._t.fifo:
            entry["MessageDeduplicationId"] = entry["MessageGroupId"] = fifo_id(item.key)
        return entry

    async def publish(self, batch: Sequence[Accepted]) -> None:
        chunks = [batch[i : i + BATCH] for i in range(0, len(batch), BATCH)]
        try:
            answers = await asyncio.gather(
                *(
                    self._client.send_message_batch(
                        QueueUrl=self._url,
                        Entries=[self._entry(i, item) for i, item in enumerate(chunk)],
                    )
                    for chunk in chunks
                )
            )
        except ERRORS as exc:  # mid-run: exit 3, one line
            raise AbortedError(f"{self._t.shown}: send failed: {self._t.failure(exc)}") from None
        failed = [f for answer in answers for f in answer.get("Failed", [])]
        if failed:
            first = failed[0]
            raise AbortedError(
                f"{self._t.shown}: {len(failed)} messages refused "
                f"({first.get('Code')}: {first.get('Message', '')})"
            )
        self.published += len(batch)

    async def close(self) -> None:
        await self._link.close()


async def open_publisher(url: str, options: SourceOptions) -> SqsPublisher:
    link = Link(parse_url(url))
    client = await link.open()
    try:
        queue = await link.queue_url(link.target.queue, create=True)
    except BaseException:
        await link.close()
        raise
    return SqsPublisher(link, client, queue)
