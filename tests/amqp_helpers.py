"""A real RabbitMQ for tests: unique queues (deleted afterwards), publishing and inspecting them
from synchronous tests, a user with a password of its own, and a TCP proxy a test can cut."""

from __future__ import annotations

import asyncio
import functools
import os
import shutil
import subprocess
import threading
import uuid
from collections.abc import Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aio_pika
import pytest
from aio_pika.abc import AbstractChannel

HOST, PORT = "127.0.0.1", 5672
T = TypeVar("T")


def _sync(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def amqp_url(queue: str, *, user: str = "guest", password: str = "guest", port: int = PORT) -> str:
    return f"amqp://{user}:{password}@{HOST}:{port}/?queue={queue}"


async def _channel_do(action: Any) -> Any:
    connection = await aio_pika.connect(amqp_url("x"), timeout=10)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        return await action(channel)


def _available() -> bool:
    try:
        _sync(_channel_do(lambda channel: asyncio.sleep(0)))
    except Exception:  # noqa: BLE001 - any failure means no broker to test with
        return False
    return True


@functools.cache
def require_rabbitmq() -> None:
    """Fails (never skips) in CI when RabbitMQ cannot be reached; skips elsewhere."""
    if _available():
        return
    message = f"RabbitMQ is not reachable on {HOST}:{PORT}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class Msg:
    body: bytes
    message_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)


@dataclass
class Queue:
    """A uniquely named queue (and its ``.dead``), deleted when the test ends."""

    name: str

    @property
    def dead(self) -> str:
        return f"{self.name}.dead"

    def url(self, **kwargs: Any) -> str:
        return amqp_url(self.name, **kwargs)

    def publish(self, bodies: Sequence[bytes | Msg]) -> None:
        async def action(channel: AbstractChannel) -> None:
            await channel.declare_queue(self.name, durable=True)
            for item in bodies:
                msg = item if isinstance(item, Msg) else Msg(item)
                message = aio_pika.Message(
                    msg.body, message_id=msg.message_id, headers=msg.headers or None
                )
                await channel.default_exchange.publish(message, routing_key=self.name)

        _sync(_channel_do(action))

    def declare(self, name: str, arguments: dict[str, Any]) -> None:
        async def action(channel: AbstractChannel) -> None:
            await channel.declare_queue(name, durable=True, arguments=arguments)

        _sync(_channel_do(action))

    def ready(self, name: str | None = None) -> int:
        """Messages ready in the queue (a passive declare); -1 if it does not exist."""

        async def action(channel: AbstractChannel) -> int:
            try:
                queue = await channel.declare_queue(name or self.name, passive=True)
            except aio_pika.exceptions.ChannelNotFoundEntity:
                return -1
            return queue.declaration_result.message_count or 0

        result: int = _sync(_channel_do(action))
        return result

    def take_all(self, name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
        """Every message of ``name``, taken (and acked) one by one."""

        async def action(channel: AbstractChannel) -> list[Any]:
            queue = await channel.declare_queue(name, passive=True)
            taken = []
            while (message := await queue.get(fail=False)) is not None:
                await message.ack()
                taken.append(message)
            return taken

        result: list[Any] = _sync(_channel_do(action))
        return result

    def delete_queue(self, *names: str) -> None:
        async def action(channel: AbstractChannel) -> None:
            for name in names:
                await channel.queue_delete(name)

        _sync(_channel_do(action))

    def delete(self) -> None:
        self.delete_queue(self.name, self.dead)


def unique_queue() -> Iterator[Queue]:
    """For a fixture: a queue of the test's own, deleted afterwards."""
    require_rabbitmq()
    queue = Queue(f"fp-test-{uuid.uuid4().hex[:12]}")
    yield queue
    queue.delete()


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=60)


def password_user() -> Iterator[tuple[str, str]]:
    """For a fixture: a user with a password of its own (guest's password is also its name,
    so a masked ``guest:***`` would still show it): made with rabbitmqctl, deleted after."""
    require_rabbitmq()
    if shutil.which("rabbitmqctl") is None:
        if os.environ.get("CI") == "true":
            pytest.fail("rabbitmqctl is needed to create a test user")
        pytest.skip("rabbitmqctl is not installed")
    user, password = f"fp-test-{uuid.uuid4().hex[:8]}", f"pw-{uuid.uuid4().hex}"
    _rabbitmqctl("add_user", user, password)
    try:
        _rabbitmqctl("set_permissions", "-p", "/", user, ".*", ".*", ".*")
        yield user, password
    finally:
        _rabbitmqctl("delete_user", user)


class CutProxy:
    """A TCP proxy to RabbitMQ in a thread of its own. ``cut()`` closes every connection and
    stops listening: to the client, the broker is gone (a real connection loss)."""

    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._writers: list[asyncio.StreamWriter] = []
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._handle, HOST, 0))
        self.port: int = self._server.sockets[0].getsockname()[1]

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(HOST, PORT)
        self._writers += [writer, up_writer]
        await asyncio.gather(
            self._pipe(reader, up_writer), self._pipe(up_reader, writer), return_exceptions=True
        )

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def _cut(self) -> None:
        self._server.close()
        for writer in self._writers:
            writer.transport.abort()

    def cut(self) -> None:
        self._call(self._cut())

    def close(self) -> None:
        self.cut()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
