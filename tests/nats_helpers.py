"""A real NATS JetStream for tests (the machine's, on loopback): streams of a test's own
(deleted afterwards, with their dead letters), published to and inspected from synchronous
tests. Outside CI a missing server skips its tests; with ``CI=true`` it fails them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import nats
from nats.aio.client import Client
from nats.js import JetStreamContext, JetStreamManager
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NotFoundError
from redis_helpers import unavailable

HOST = "127.0.0.1"
PORT = int(os.environ.get("FEEDBACK_PIPELINE_TEST_NATS_PORT", "4222"))
T = TypeVar("T")


async def _with(action: Callable[[Client, JetStreamContext, JetStreamManager], Awaitable[T]]) -> T:
    url = f"nats://{HOST}:{PORT}"
    connection = await nats.connect(url, connect_timeout=5, allow_reconnect=False)
    try:
        return await action(connection, connection.jetstream(), connection.jsm())
    finally:
        await connection.close()


def run(action: Callable[[Client, JetStreamContext, JetStreamManager], Awaitable[T]]) -> T:
    """``action(connection, js, jsm)`` on a connection of its own (from synchronous code)."""
    return asyncio.run(_with(action))


def require_nats() -> None:
    async def probe(_: Client, __: JetStreamContext, jsm: JetStreamManager) -> None:
        await jsm.account_info()  # JetStream enabled, not only NATS

    try:
        run(probe)
    except Exception:  # noqa: BLE001 - any failure means no server to test with
        unavailable(f"NATS JetStream at {HOST}:{PORT}")


@dataclass
class JsStream:
    """A uniquely named stream (subject: its name) and durable consumer ``workers``."""

    name: str = field(default_factory=lambda: f"fptest{uuid.uuid4().hex[:12]}")
    consumer: str = "workers"

    @property
    def dead_stream(self) -> str:
        return f"{self.name}_dead"

    @property
    def dead(self) -> str:
        return f"{self.name}.dead"

    def url(self, port: int = PORT, **extra: str) -> str:
        query = f"stream={self.name}&consumer={self.consumer}"
        for key, value in extra.items():
            query += f"&{key}={value}"
        return f"nats://{HOST}:{port}?{query}"

    def create(self, ack_wait: float = 30.0) -> None:
        async def action(_: Client, __: JetStreamContext, jsm: JetStreamManager) -> None:
            await jsm.add_stream(name=self.name, subjects=[self.name])
            config = ConsumerConfig(
                durable_name=self.consumer, ack_policy=AckPolicy.EXPLICIT, ack_wait=ack_wait,
                max_ack_pending=-1,
            )  # fmt: skip
            await jsm.add_consumer(self.name, config)

        run(action)

    def publish(self, bodies: Sequence[bytes], headers: dict[str, str] | None = None) -> None:
        async def action(_: Client, js: JetStreamContext, __: JetStreamManager) -> None:
            for body in bodies:
                await js.publish(self.name, body, headers=headers)

        run(action)

    def counts(self, consumer: str | None = None) -> tuple[int, int]:
        """A consumer's (``workers``) messages not delivered yet, and delivered not acked."""

        async def action(_: Client, __: JetStreamContext, jsm: JetStreamManager) -> tuple[int, int]:
            try:
                info = await jsm.consumer_info(self.name, consumer or self.consumer)
            except NotFoundError:
                return (await jsm.stream_info(self.name)).state.messages, 0
            return info.num_pending or 0, info.num_ack_pending or 0

        return run(action)

    def messages(self, stream: str) -> list[tuple[bytes, dict[str, str]]]:
        """Every message of ``stream`` (data, headers), read by sequence; [] if none."""

        async def action(_: Client, __: JetStreamContext, jsm: JetStreamManager) -> list[Any]:
            try:
                state = (await jsm.stream_info(stream)).state
            except NotFoundError:
                return []
            found: list[tuple[bytes, dict[str, str]]] = []
            if not state.messages:
                return found
            for seq in range(state.first_seq, state.last_seq + 1):
                with contextlib.suppress(NotFoundError):
                    raw = await jsm.get_msg(stream, seq)
                    found.append((raw.data or b"", dict(raw.headers or {})))
            return found

        return run(action)

    def delete(self) -> None:
        async def action(_: Client, __: JetStreamContext, jsm: JetStreamManager) -> None:
            for name in (self.name, self.dead_stream):
                with contextlib.suppress(NotFoundError):
                    await jsm.delete_stream(name)

        run(action)


def unique_stream() -> Iterator[JsStream]:
    """For a fixture: a stream of the test's own, deleted afterwards."""
    require_nats()
    made = JsStream()
    made.create()
    try:
        yield made
    finally:
        made.delete()
