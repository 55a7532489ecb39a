"""A broker source's own calls, in process, for the source tests of each broker: the options
they open it with and the first batch it hands out."""

from __future__ import annotations

import asyncio
from typing import Any

from pipeline.models import RawRecord
from pipeline.sources.base import SourceOptions


def source_options(**changes: object) -> SourceOptions:
    """Small batches, a drain, and a claim_idle short enough to see redelivery in a test."""
    base = {"batch_size": 10, "concurrency": 2, "drain": True, "claim_idle": 0.3}
    return SourceOptions(**{**base, **changes})  # type: ignore[arg-type]


async def first_batch(source: Any, stop: asyncio.Event) -> list[RawRecord]:
    batch: list[RawRecord]
    async for batch in source.batches(stop):
        return batch
    return []
