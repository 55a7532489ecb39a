"""Connecting to Amazon SQS for :mod:`pipeline.sources.sqs.queue`: the URL, the client
(aiobotocore; credentials from the usual AWS chain: environment, config files, roles), the
queues (used as they are, created when missing), each failure as one line.

Credentials are never in the URL, and never printed: botocore's errors name the operation
and AWS's error code, not the keys.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from pipeline.errors import ConfigError, SourceError
from pipeline.urls import mask_url

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient

_OURS = ("region", "endpoint", "dead", "wait")
_NAME = re.compile(r"^[A-Za-z0-9_-]{1,75}(\.fifo)?$")
#: Errors of the network or the service, as one line each (the run ends, or does not start).
ERRORS = (BotoCoreError, ClientError, OSError, TimeoutError)
logging.getLogger("botocore").addHandler(logging.NullHandler())
logging.getLogger("aiobotocore").addHandler(logging.NullHandler())


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed ``sqs://`` URL: the queue, the dead letters' queue, where and how to ask."""

    queue: str
    dead: str
    region: str | None  # None: the AWS configuration's
    endpoint: str | None  # None: AWS's own for the region
    wait: int  # long polling: seconds a receive waits for messages (0-20)
    shown: str

    @property
    def fifo(self) -> bool:
        return self.queue.endswith(".fifo")

    def failure(self, exc: BaseException) -> str:
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            return f"{error.get('Code', 'ClientError')}: {error.get('Message', '')}".rstrip(": ")
        return f"{type(exc).__name__}: {exc}".rstrip(": ")


def _default_dead(queue: str) -> str:
    # A FIFO queue's dead letters go to a FIFO queue (SQS's own redrive asks the same).
    stem, fifo = (queue[: -len(".fifo")], ".fifo") if queue.endswith(".fifo") else (queue, "")
    return f"{stem}-dead{fifo}"


def parse_url(url: str) -> Target:
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise ConfigError(f"{shown}: not a valid URL ({exc})") from None
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - set(_OURS))
    if unknown:
        raise ConfigError(f"{shown}: unknown parameter {unknown[0]}= (known: {', '.join(_OURS)})")
    queue = parts.netloc
    if not _NAME.match(queue):
        raise ConfigError(
            f"{shown}: name the queue: sqs://QUEUE-NAME?region=... (letters, digits, - and _, "
            "up to 80 characters with .fifo for a FIFO queue)"
        )
    dead = query.get("dead") or _default_dead(queue)
    if not _NAME.match(dead):
        raise ConfigError(f"{shown}: dead={dead} is not a valid queue name")
    try:
        wait = int(query.get("wait") or 1)
    except ValueError:
        wait = -1
    if not 0 <= wait <= 20:
        raise ConfigError(f"{shown}: wait= is seconds of long polling, 0 to 20")
    endpoint = query.get("endpoint") or None
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ConfigError(f"{shown}: endpoint= must be an http:// or https:// URL")
    return Target(queue, dead, query.get("region") or None, endpoint, wait, shown)


def visibility(claim_idle: float) -> int:
    """The visibility timeout for ``--claim-idle``: whole seconds, at least 1 (SQS's unit)."""
    return max(1, math.ceil(claim_idle))


class Link:
    """The SQS client of a run (closed with it) and the queues' URLs."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self._stack = contextlib.AsyncExitStack()
        self.client: SQSClient | None = None

    async def open(self, connections: int = 10) -> SQSClient:
        config = AioConfig(
            connect_timeout=5,
            read_timeout=self.target.wait + 10,
            # Few retries: a service that is gone ends the run (exit 3); the ledger and the
            # visibility timeout make the rerun exact.
            retries={"max_attempts": 2, "mode": "standard"},
            max_pool_connections=connections,
            # botocore's checks of each call's parameters repeat what this module builds and
            # SQS checks again; they cost a fifth of a call's CPU, and a drain makes two calls
            # for every ten records.
            parameter_validation=False,
        )
        session = get_session()
        try:
            client: SQSClient = await self._stack.enter_async_context(
                session.create_client(
                    "sqs",
                    region_name=self.target.region,
                    endpoint_url=self.target.endpoint,
                    config=config,
                )
            )
        except ERRORS as exc:  # e.g. no region anywhere in the configuration
            await self.close()
            raise SourceError(f"{self.target.shown}: {self.target.failure(exc)}") from None
        self.client = client
        return client

    async def queue_url(self, name: str, *, create: bool) -> str:
        """The queue's URL; a missing queue is created when ``create`` (FIFO by its name)."""
        assert self.client is not None
        try:
            try:
                return (await self.client.get_queue_url(QueueName=name))["QueueUrl"]
            except ClientError as exc:
                if not create or "NonExistentQueue" not in _code(exc):
                    raise
            attributes: dict[Any, str] = {"FifoQueue": "true"} if name.endswith(".fifo") else {}
            made = await self.client.create_queue(QueueName=name, Attributes=attributes)
            return made["QueueUrl"]
        except ERRORS as exc:
            raise SourceError(
                f"{self.target.shown}: queue {name}: {self.target.failure(exc)}"
            ) from None

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self._stack.aclose()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
