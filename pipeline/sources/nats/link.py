"""Connecting to NATS JetStream for :mod:`pipeline.sources.nats.stream`: the URL, the
connection (no silent reconnects), the stream, the dead letters' stream and the durable pull
consumer (each used as it is when it exists, created when missing), failures as one line
without the password or token."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError
from nats.js import JetStreamContext, JetStreamManager
from nats.js.api import AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy
from nats.js.errors import NotFoundError

from pipeline.errors import ConfigError, SourceError
from pipeline.urls import mask_url

_CONNECT_TIMEOUT = 5
#: Seconds a JetStream API request (stream, consumer, publish) may take.
API_TIMEOUT = 10.0
_OURS = ("stream", "consumer", "subject", "dead", "max_deliver")
# nats-py logs a failed connection (with a traceback) through its logger, which Python
# prints to stderr when logging is not configured: a second report of what our line says.
logging.getLogger("nats").addHandler(logging.NullHandler())


@dataclass(frozen=True, slots=True)
class Target:
    """A parsed ``nats://`` URL: the server, the stream and consumer, how to print it."""

    server: str  # nats://HOST:PORT (credentials passed apart, never printed)
    user: str | None
    password: str | None
    token: str | None
    stream: str
    consumer: str  # "" for a publisher
    subject: str  # where enqueue publishes (and the consumer's filter, when given)
    filtered: bool  # subject= was given: the consumer reads only it
    dead: str  # the dead letters' subject
    max_deliver: int  # -1: no limit
    shown: str

    def scrub(self, text: str) -> str:
        for secret in (self.password, self.token):
            if secret:
                for form in {secret, quote(secret, safe="")}:
                    text = text.replace(form, "***")
        return text

    def failure(self, exc: BaseException) -> str:
        return self.scrub(f"{type(exc).__name__}: {exc}".rstrip(": "))

    @property
    def dead_stream(self) -> str:
        """The stream created for the dead letters when none stores their subject."""
        return f"{self.stream}_dead"


def _name(value: str, what: str, shown: str) -> str:
    # JetStream names: no whitespace, dots or wildcards (they become parts of subjects).
    if not value or any(c in value for c in " \t.*>/\\"):
        raise ConfigError(f"{shown}: {what}={value!r} is not a valid JetStream name")
    return value


def parse_url(url: str, *, need_consumer: bool) -> Target:
    shown = mask_url(url)
    try:
        parts = urlsplit(url)
        user, password = parts.username, parts.password
        host, port = parts.hostname or "127.0.0.1", parts.port or 4222
    except ValueError as exc:
        raise ConfigError(f"{shown}: not a valid URL ({exc})") from None
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(query) - set(_OURS))
    if unknown:
        raise ConfigError(f"{shown}: unknown parameter {unknown[0]}= (known: {', '.join(_OURS)})")
    if not query.get("stream"):
        raise ConfigError(f"{shown}: name the stream: nats://HOST:PORT?stream=NAME&consumer=NAME")
    stream = _name(query["stream"], "stream", shown)
    if need_consumer and not query.get("consumer"):
        raise ConfigError(f"{shown}: name the durable consumer to read with: &consumer=NAME")
    consumer = _name(query["consumer"], "consumer", shown) if query.get("consumer") else ""
    try:
        max_deliver = int(query.get("max_deliver") or -1)
    except ValueError:
        raise ConfigError(f"{shown}: max_deliver= must be a whole number") from None
    if max_deliver == 0 or max_deliver < -1:
        raise ConfigError(f"{shown}: max_deliver= must be at least 1 (or -1: no limit)")
    # A user with no password is a token (nats://TOKEN@HOST), as the NATS tools read it.
    token = unquote(user) if user and password is None else None
    return Target(
        server=urlunsplit(("nats", f"{host}:{port}" if ":" not in host else f"[{host}]:{port}",
                           "", "", "")),
        user=unquote(user) if user and password is not None else None,
        password=unquote(password) if password is not None else None,
        token=token,
        stream=stream,
        consumer=consumer,
        subject=query.get("subject") or stream,
        filtered=bool(query.get("subject")),
        dead=query.get("dead") or f"{stream}.dead",
        max_deliver=max_deliver,
        shown=shown,
    )  # fmt: skip


def consumer_name() -> str:
    """Who reads (for the logs): the host and process, as for the other brokers."""
    return f"{socket.gethostname()}-{os.getpid()}"


async def connect(target: Target, on_lost: Callable[[], None] | None = None) -> Client:
    """A connection that never reconnects silently: a lost link ends the run (exit 3) once
    every outcome is recorded; what was not acked is delivered again after its ack wait."""

    async def lost(*_: object) -> None:
        if on_lost is not None:
            on_lost()

    seen: list[Exception] = []

    async def quiet(exc: Exception) -> None:
        # Kept for our one line (the calls that fail say it): the client prints nothing.
        seen.append(exc)

    try:
        return await nats.connect(
            target.server,
            user=target.user,
            password=target.password,
            token=target.token,
            name=consumer_name(),
            allow_reconnect=False,
            connect_timeout=_CONNECT_TIMEOUT,
            # Tried twice at once, then given up (0 would mean: try for ever).
            max_reconnect_attempts=1,
            reconnect_time_wait=0,
            disconnected_cb=lost,
            closed_cb=lost,
            error_cb=quiet,
        )
    except Exception as exc:  # noqa: BLE001 - refused, DNS, TLS, login: one line, exit 2
        cause = seen[-1] if seen else exc  # "no servers available" says less than its cause
        raise SourceError(f"{target.shown}: cannot connect: {target.failure(cause)}") from None


async def ensure_stream(jsm: JetStreamManager, target: Target) -> None:
    """Use the stream as it is, or create it (file storage, the subject) if it is missing."""
    try:
        await jsm.stream_info(target.stream)
    except NotFoundError:
        await jsm.add_stream(name=target.stream, subjects=[target.subject])


async def ensure_dead(jsm: JetStreamManager, target: Target) -> None:
    """The dead letters' subject must be stored, and not by the stream this run reads (it
    would read its own dead letters back): a stream of their own is created if none is."""
    try:
        holder = await jsm.find_stream_name_by_subject(target.dead)
    except NotFoundError:
        await jsm.add_stream(name=target.dead_stream, subjects=[target.dead])
        return
    if holder == target.stream and (not target.filtered or target.subject == target.dead):
        raise ConfigError(
            f"{target.shown}: dead letters' subject {target.dead} is stored in the stream this "
            "consumer reads: name another with &dead=SUBJECT"
        )


async def ensure_consumer(jsm: JetStreamManager, target: Target, ack_wait: float) -> ConsumerInfo:
    """The durable pull consumer, created if missing; an existing one gets this run's ack wait
    (``--claim-idle``), the rest of its configuration kept."""
    try:
        info: ConsumerInfo = await jsm.consumer_info(target.stream, target.consumer)
    except NotFoundError:
        config = ConsumerConfig(
            durable_name=target.consumer,
            ack_policy=AckPolicy.EXPLICIT,
            deliver_policy=DeliverPolicy.ALL,
            ack_wait=ack_wait,
            max_deliver=target.max_deliver,
            # No server-side cap on unacked messages: each worker bounds its own window.
            max_ack_pending=-1,
            filter_subject=target.subject if target.filtered else None,
        )
        created: ConsumerInfo = await jsm.add_consumer(target.stream, config)
        return created
    if info.config.ack_wait != ack_wait:
        info.config.ack_wait = ack_wait
        info = await jsm.add_consumer(target.stream, info.config)
    return info


async def open_jetstream(
    target: Target, on_lost: Callable[[], None] | None = None
) -> tuple[Client, JetStreamContext, JetStreamManager]:
    connection = await connect(target, on_lost)
    try:
        js = connection.jetstream(timeout=API_TIMEOUT)
        jsm = connection.jsm(timeout=API_TIMEOUT)
        await ensure_stream(jsm, target)
    except NatsError as exc:  # e.g. JetStream not enabled on the server, no access
        await connection.close()
        raise SourceError(f"{target.shown}: {target.failure(exc)}") from None
    except BaseException:
        await connection.close()
        raise
    return connection, js, jsm
