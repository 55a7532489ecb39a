"""Connecting to Redis for :mod:`pipeline.sources.redis.stream`: the URL (our parameters and
redis-py's), the connection, each failure as one line without the password."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from pipeline.errors import ConfigError, SourceError
from pipeline.urls import mask_url

_OWN = ("stream", "group", "consumer", "dead")


@dataclass(frozen=True, slots=True)
class Target:
    """What a ``redis://`` URL names: the server (without our parameters) and the stream."""

    server: str
    stream: str
    group: str  # "" for a publisher
    consumer: str
    dead: str
    shown: str  # the URL with its password masked: for messages and the ledger
    password: str | None

    @classmethod
    def parse(cls, url: str, *, need_group: bool) -> Target:
        shown = mask_url(url)
        try:
            parts = urlsplit(url)
            password = parts.password
        except ValueError as exc:
            raise ConfigError(f"{shown}: not a valid URL ({exc})") from None
        query = dict(parse_qsl(parts.query))
        stream = query.get("stream")
        group = query.get("group")
        if not stream:
            raise ConfigError(f"{shown}: stream= is required (redis://HOST:PORT/DB?stream=NAME)")
        if need_group and not group:
            raise ConfigError(f"{shown}: group= is required to read a stream (&group=NAME)")
        rest = urlencode([(k, v) for k, v in parse_qsl(parts.query) if k not in _OWN])
        return cls(
            server=urlunsplit(parts._replace(query=rest)),
            stream=stream,
            group=group or "",
            consumer=query.get("consumer") or f"{socket.gethostname()}-{os.getpid()}",
            dead=query.get("dead") or f"{stream}:dead",
            shown=shown,
            password=password,
        )

    def gone(self, exc: BaseException) -> str:
        """Mid-run (the caller names the source): the run ends, exit 3."""
        return self._scrub(f"redis went away: {type(exc).__name__}: {exc}")

    def _scrub(self, message: str) -> str:
        return message.replace(self.password, "***") if self.password else message

    def error(self, what: str, exc: BaseException) -> str:
        """One line naming the server (masked), with no password whatever the library says."""
        return self._scrub(f"redis {self.shown}: {what}: {type(exc).__name__}: {exc}")


async def connect(target: Target) -> aioredis.Redis:
    try:
        client = aioredis.Redis.from_url(target.server, socket_connect_timeout=5, socket_timeout=30)
        await client.ping()
    except ValueError as exc:
        raise ConfigError(target.error("bad URL", exc)) from None
    except RedisError as exc:
        raise SourceError(target.error("cannot connect", exc)) from None
    return client
