"""Connecting to RabbitMQ for :mod:`pipeline.sources.amqp.queue`: the URL, the connection, the
queues (passive-or-declare), each failure as one line without the password."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractConnection
from aio_pika.exceptions import ChannelNotFoundEntity

from pipeline.errors import ConfigError, SourceError
from pipeline.urls import mask_url

_CONNECT_TIMEOUT = 10.0
_OURS = ("queue", "dead")
# aiormq logs a failed connection itself, and with no logging configured Python prints that
# to stderr: a second line, after ours that says the same. Library loggers get a NullHandler.
for _logger in ("aiormq", "aio_pika"):
    logging.getLogger(_logger).addHandler(logging.NullHandler())


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed ``amqp://`` URL: what to connect to, which queues, and how to print it."""

    connect: str  # without our parameters
    queue: str
    dead: str
    shown: str  # the password masked
    password: str | None

    def scrub(self, text: str) -> str:
        """``text`` (an error from the client library) without the password, whatever form."""
        if self.password:
            for form in {self.password, quote(self.password, safe="")}:
                text = text.replace(form, "***")
        return text

    def failure(self, exc: BaseException) -> str:
        return self.scrub(f"{type(exc).__name__}: {exc}")


def parse_url(url: str) -> Target:
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
        password = parts.password
        parts.port  # noqa: B018 - raises ValueError for a port that is no number
    except ValueError as exc:
        raise ConfigError(f"{shown}: not a valid URL ({exc})") from None
    query = parse_qsl(parts.query, keep_blank_values=True)
    ours = {k: v for k, v in query if k in _OURS}
    queue = ours.get("queue", "")
    if not queue:
        raise ConfigError(f"{shown}: name the queue: amqp://HOST/VHOST?queue=NAME")
    rest = urlencode([(k, v) for k, v in query if k not in _OURS])
    connect = urlunsplit(parts._replace(query=rest))
    return Target(connect, queue, ours.get("dead") or f"{queue}.dead", shown, password)


async def _connect(target: Target) -> AbstractConnection:
    try:
        return await aio_pika.connect(target.connect, timeout=_CONNECT_TIMEOUT)
    except Exception as exc:  # noqa: BLE001 - refused, DNS, TLS, login: one line, exit 2
        what = target.failure(exc)
        if "got <Connection.Close" in what:  # aiormq keeps only the frame's repr, not its text
            what = "the broker closed the connection at once (no such vhost, or no access to it)"
        raise SourceError(f"{target.shown}: cannot connect: {what}") from None


async def _ensure_queue(connection: AbstractConnection, name: str) -> None:
    """Passive-or-declare: use the queue as it is, or create it durable if it is missing."""
    probe = await connection.channel()  # a failed passive declare closes its channel
    try:
        await probe.declare_queue(name, passive=True)
    except ChannelNotFoundEntity:
        async with connection.channel() as channel:
            await channel.declare_queue(name, durable=True)
    finally:
        if not probe.is_closed:
            await probe.close()


async def open_channel(target: Target, *queues: str) -> tuple[AbstractConnection, AbstractChannel]:
    connection = await _connect(target)
    try:
        for name in queues:
            await _ensure_queue(connection, name)
        # Confirms: a dead letter (or an enqueued record) counts only once the broker has it.
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
    except Exception as exc:  # noqa: BLE001 - refused by the broker: one line, exit 2
        await connection.close()
        raise SourceError(f"{target.shown}: {target.failure(exc)}") from None
    return connection, channel
