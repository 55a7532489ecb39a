"""The ``enqueue`` command: validate records of files and publish them to a queue.

Each published entry carries the record's fields and its idempotency key (``key``), so that
the runs consuming the queue skip what was sent already, whichever file it came from. Invalid
records are reported (one line each) and not published.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Sequence

from pipeline.config import Settings
from pipeline.engine.columns import check_files
from pipeline.engine.control import RunControl
from pipeline.engine.reading import source_batches
from pipeline.engine.validate import Validator
from pipeline.errors import ConfigError, PipelineError
from pipeline.models import Accepted, Rejection
from pipeline.observe.problems import Progress
from pipeline.observe.summary import Summary
from pipeline.sources import Source, is_queue, open_publisher, open_source, source_options
from pipeline.urls import mask_url


async def enqueue_sources(settings: Settings, paths: Sequence[str], to: str) -> Summary:
    """Publish every valid record of ``paths`` (files or ``-``) to the queue ``to``."""
    for path in paths:
        if is_queue(path):
            raise ConfigError(f"enqueue: {mask_url(path)}: reads files or -, not queues")
    check_files(
        paths, settings.format, settings.columns, ignore_extra=settings.ignore_extra_columns
    )
    options = source_options(settings)
    validator = Validator(
        default_assistant_id=settings.assistant_id,
        columns=settings.columns,
        ignore_extra=settings.ignore_extra_columns,
    )
    summary = Summary("enqueue", uuid.uuid4().hex[:16])
    control = RunControl(grace=settings.grace)
    progress = Progress()
    async with contextlib.AsyncExitStack() as stack:
        sources: list[Source] = []
        for path in paths:
            sources.append(await open_source(path, options))
            stack.push_async_callback(sources[-1].close)
        publisher = await open_publisher(to, options)
        stack.push_async_callback(publisher.close)
        async for batch in source_batches(sources, validator, control):
            accepted = [item for item in batch if isinstance(item, Accepted)]
            for item in batch:
                summary.read += 1
                if isinstance(item, Rejection):
                    summary.invalid += 1
                    summary.reason(f"invalid: {item.reason}")
                    progress.problem(item.location, f"invalid: {item.reason}")
            try:
                if accepted:
                    await publisher.publish(accepted)
            except PipelineError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broker's own errors: one line, exit 3
                control.abort(f"publish to {mask_url(to)} failed: {type(exc).__name__}: {exc}")
                break
            summary.sent += len(accepted)
    summary.aborted = control.reason
    summary.finish()
    return summary
