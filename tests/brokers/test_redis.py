"""Redis Streams passes the broker contract (:mod:`brokers.contract`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from pg_helpers import pg_schema
from redis_helpers import REDIS_URL, Stream, stream

from brokers.contract import Broker, BrokerContract

__all__ = ["pg_schema", "stream"]  # fixtures, used by name


class RedisBroker(Broker):
    name = "redis"
    takes_over_idle = True

    def __init__(self, made: Stream) -> None:
        self._s = made
        self.port = urlsplit(REDIS_URL).port or 6379

    def url(self, consumer: str, port: int | None = None) -> str:
        url = self._s.url(consumer)
        return url.replace(f":{self.port}/", f":{port}/", 1) if port is not None else url

    def publish(self, bodies: Sequence[bytes]) -> None:
        self._s.add(*({"body": body} for body in bodies))

    def publish_poison(self) -> int:
        self._s.add(
            {"session_id": b"\xff\xfe", "score": "0.5"},  # a field that is not UTF-8
            # More fields than a script can pass on: the dead letter is written truncated.
            {f"f{i}": "x" for i in range(20_000)},
        )
        return 2

    def hold(self, count: int, consumer: str) -> Callable[[], None]:
        self._read(consumer, count)
        return lambda: None  # a silent consumer: its entries are taken over after idle

    def spread(self, consumers: Sequence[str], each: int) -> None:
        for consumer in consumers:
            self._read(consumer, each)

    def _read(self, consumer: str, count: int) -> None:
        s = self._s
        with contextlib.suppress(redis.ResponseError):  # BUSYGROUP: it exists already
            s.redis.xgroup_create(s.name, s.group, id="0", mkstream=True)
        s.redis.xreadgroup(s.group, consumer, {s.name: ">"}, count=count)

    def refuse_dead_letters(self) -> None:
        self._s.redis.set(self._s.dead, "a string, not a stream: XADD fails")

    def left(self) -> int:
        s = self._s
        groups: list[dict[str, Any]] = s.redis.xinfo_groups(s.name)
        group = next((g for g in groups if g["name"] == s.group.encode()), None)
        if group is None:
            return len(s.entries())
        undelivered: Any = s.redis.xrange(s.name, min=b"(" + group["last-delivered-id"])
        return s.pending() + len(undelivered)

    def dead_letters(self) -> list[dict[str, str]]:
        return [
            {
                "reason": fields[b"reason"].decode(),
                "truncated": fields.get(b"truncated", b"").decode(),
            }
            for fields in self._s.dead_letters()
        ]


class TestRedisContract(BrokerContract):
    @pytest.fixture
    def broker(self, stream: Stream) -> Broker:
        return RedisBroker(stream)
