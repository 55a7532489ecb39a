"""Sources: where raw records come from, chosen by URL.

A path or ``-`` (stdin) is a file; a URL's scheme picks a broker module from ``_BROKERS``.
Adding a broker is one module exporting ``open_source`` and ``open_publisher`` (see
:mod:`pipeline.sources.base` for the protocols) plus one line here. Broker modules are
imported only when used, so their client library is only needed by those who use them.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from pipeline.config import Settings
from pipeline.errors import ConfigError
from pipeline.extras import load
from pipeline.sources.base import STDIN, Done, Publisher, Reader, Source, SourceOptions
from pipeline.sources.files.csv import CsvSource
from pipeline.sources.files.jsonl import JsonlSource
from pipeline.sources.files.opening import check_readable
from pipeline.sources.files.source import FileSource, Format, detect_format, open_reader
from pipeline.sources.files.source import open_source as _open_file
from pipeline.urls import mask_url, scheme

__all__ = [
    "STDIN",
    "CsvSource",
    "Done",
    "FileSource",
    "Format",
    "JsonlSource",
    "Publisher",
    "Reader",
    "Source",
    "SourceOptions",
    "check_readable",
    "detect_format",
    "is_broker",
    "is_queue",
    "open_publisher",
    "open_reader",
    "open_source",
    "source_options",
]

#: URL scheme -> module exporting ``open_source(url, options)`` and ``open_publisher(...)``.
_BROKERS: dict[str, str] = {
    "amqp": "pipeline.sources.amqp.queue",
    "amqps": "pipeline.sources.amqp.queue",
    "nats": "pipeline.sources.nats.stream",
    "redis": "pipeline.sources.redis.stream",
    "sqs": "pipeline.sources.sqs.queue",
}


def source_options(settings: Settings) -> SourceOptions:
    return SourceOptions(
        format=settings.format,
        columns=dict(settings.columns),
        batch_size=settings.batch_size,
        concurrency=settings.concurrency,
        drain=settings.drain,
        claim_idle=settings.claim_idle,
    )


def is_queue(spec: str) -> bool:
    """Whether ``spec`` names a queue (a URL) rather than a file or stdin."""
    return scheme(spec) is not None


def is_broker(spec: str) -> bool:
    """Whether ``spec`` is the URL of a registered broker (a queue this package reads)."""
    return scheme(spec) in _BROKERS


async def open_source(spec: str, options: SourceOptions) -> Source:
    """The source a path, ``-`` or broker URL names; fails with one line if it cannot be."""
    if not is_queue(spec):
        return await _open_file(spec, options)
    source: Source = await _broker(spec, "open_source", "source")(spec, options)
    return source


async def open_publisher(spec: str, options: SourceOptions) -> Publisher:
    """Where ``enqueue --to`` publishes: a broker URL (a file is not a queue)."""
    if not is_queue(spec):
        known = " or ".join(f"{s}://..." for s in sorted(_BROKERS))
        raise ConfigError(f"--to: {spec} is not a queue URL ({known})")
    publisher: Publisher = await _broker(spec, "open_publisher", "--to")(spec, options)
    return publisher


def _broker(spec: str, entry: str, what: str) -> Callable[[str, SourceOptions], Awaitable[Any]]:
    name = scheme(spec)
    module = _BROKERS.get(name or "")
    if module is None:
        known = ", ".join(f"{s}://" for s in sorted(_BROKERS)) or "none yet"
        raise ConfigError(
            f"{what} {mask_url(spec)}: no source for {name}:// (known: {known}; "
            "anything else is a file path or -)"
        )
    opener: Callable[[str, SourceOptions], Awaitable[Any]] = getattr(
        load(module, what=f"{name}://"), entry
    )
    return opener
