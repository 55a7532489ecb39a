"""NATS JetStream passes the broker contract (:mod:`brokers.contract`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import pytest
from nats.aio.client import Client
from nats.js import JetStreamContext, JetStreamManager
from nats_helpers import PORT, JsStream, run, unique_stream
from pg_helpers import pg_schema

from brokers.contract import Broker, BrokerContract

__all__ = ["pg_schema"]  # a fixture, used by name
_MAX_PAYLOAD = 1024 * 1024  # the server's default max_payload: data and headers together


class NatsBroker(Broker):
    name = "nats"
    port = PORT
    # A message not acked within the ack wait (--claim-idle) is delivered again, whether its
    # holder is silent or dead.
    takes_over_idle = True

    def __init__(self, stream: JsStream) -> None:
        self._s = stream

    def url(self, consumer: str, port: int | None = None) -> str:
        # Every worker reads through the one durable consumer; ``consumer`` names the worker.
        return self._s.url(port or PORT)

    def carries(self, body: bytes) -> bool:
        return len(body) + 64 <= _MAX_PAYLOAD  # the server refuses larger messages

    def publish(self, bodies: Sequence[bytes]) -> None:
        self._s.publish(bodies)

    def publish_poison(self) -> int:
        # Headers that fit in the producer's message, but not with the dead letter's own:
        # the copy is written without them, and says so.
        # JetStream stores at most 64 KiB of headers.
        self._s.publish([b"not json"], headers={"x-big": "h" * (64 * 1024 - 100)})
        return 1

    def hold(self, count: int, consumer: str) -> Callable[[], None]:
        async def take(_: Client, js: JetStreamContext, __: JetStreamManager) -> None:
            sub = await js.pull_subscribe_bind(self._s.consumer, self._s.name)
            got = 0
            while got < count:
                got += len(await sub.fetch(count - got, timeout=10))  # and never acked

        run(take)
        return lambda: None  # a silent consumer: delivered again after the ack wait

    def refuse_dead_letters(self) -> None:
        async def refuse(_: Client, __: JetStreamContext, jsm: JetStreamManager) -> None:
            # The dead letters' stream exists (used as it is) and refuses every message.
            await jsm.add_stream(name=self._s.dead_stream, subjects=[self._s.dead], max_msg_size=1)

        run(refuse)

    def left(self) -> int:
        pending, unacked = self._s.counts()
        return pending + unacked

    def dead_letters(self) -> list[dict[str, str]]:
        return [
            {"reason": headers.get("reason", ""), "truncated": headers.get("truncated", "")}
            for _, headers in self._s.messages(self._s.dead_stream)
        ]


class TestNatsContract(BrokerContract):
    @pytest.fixture
    def broker(self) -> Iterator[Broker]:
        for stream in unique_stream():
            yield NatsBroker(stream)
