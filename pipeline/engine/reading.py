"""Reading: the sources one after the other, in batches, validated record by record.

What goes wrong here costs one record (a validation bug) or ends the run cleanly (a source
that fails); nothing here knows of the ledger or of sending.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import TypeVar

from pipeline.engine.acks import AckHandle
from pipeline.engine.control import RunControl
from pipeline.engine.validate import Validator
from pipeline.errors import PipelineError
from pipeline.models import Accepted, RawRecord, Rejection
from pipeline.sources import Source

T = TypeVar("T")


def validated(validator: Validator, raw: RawRecord) -> Accepted | Rejection:
    """Validation that costs one record, never the run, whatever goes wrong."""
    try:
        return validator(raw)
    except Exception as exc:  # noqa: BLE001 - a bug must cost one record
        return Rejection(raw.location, f"cannot validate: {what(exc)}", raw.handle)


@contextlib.asynccontextmanager
async def closing(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Close an async generator we stop reading early (a source may hold a file or a
    connection); a plain async iterator has nothing to close."""
    try:
        yield iterator
    finally:
        aclose = getattr(iterator, "aclose", None)
        if aclose is not None:
            await aclose()


def what(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


async def raw_batches(
    sources: Sequence[Source], control: RunControl
) -> AsyncIterator[list[RawRecord]]:
    """The sources one after the other, each record's handle a :class:`AckHandle` to ack it
    by; a source that fails ends the run."""
    for source in sources:
        if control.stopped:
            return
        async with closing(source.batches(control.stop)) as batches:
            try:
                async for raw_batch in batches:
                    # Built directly: dataclasses.replace inspects the fields per record.
                    yield [
                        raw
                        if raw.handle is None
                        else RawRecord(
                            raw.location, raw.fields, raw.error, AckHandle(source, raw.handle)
                        )
                        for raw in raw_batch
                    ]
            except PipelineError as exc:
                control.abort(f"source {source.name}: {exc}")
            except Exception as exc:  # noqa: BLE001 - a broken source ends the run, cleanly
                control.abort(f"source {source.name} failed: {what(exc)}")


async def source_batches(
    sources: Sequence[Source], validator: Validator, control: RunControl
) -> AsyncIterator[list[Accepted | Rejection]]:
    """The sources one after the other, validated; a source that fails ends the run."""
    async with closing(raw_batches(sources, control)) as batches:
        async for raw_batch in batches:
            yield [validated(validator, raw) for raw in raw_batch]
