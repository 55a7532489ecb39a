"""A local SQS endpoint for tests: moto's server mode, started once per test process on a
free loopback port (and stopped when the process ends), with dummy credentials in the
environment the workers inherit. Real AWS is never reached. With ``CI=true`` a server that
does not start fails the tests (never a skip)."""

from __future__ import annotations

import asyncio
import atexit
import functools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from aiobotocore.session import get_session
from redis_helpers import free_port, unavailable

if TYPE_CHECKING:
    from types_aiobotocore_sqs.client import SQSClient

HOST = "127.0.0.1"
REGION = "us-east-1"
T = TypeVar("T")
_COUNTS: Any = [
    "ApproximateNumberOfMessages",
    "ApproximateNumberOfMessagesNotVisible",
    "ApproximateNumberOfMessagesDelayed",
]


@functools.cache
def moto_port() -> int:
    """Where the test process's moto server listens (started on first use)."""
    # Dummy credentials: moto accepts any; the workers started by the tests inherit them.
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    atexit.register(_stop, server)
    deadline = time.monotonic() + 30
    while True:
        try:
            run(lambda client: client.list_queues(), port)
            return port
        except Exception:  # noqa: BLE001 - not up yet
            if server.poll() is not None or time.monotonic() > deadline:
                unavailable(f"moto's SQS server on {HOST}:{port}")
            time.sleep(0.05)


def _stop(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    server.wait(timeout=10)


def endpoint(port: int | None = None) -> str:
    return f"http://{HOST}:{port or moto_port()}"


async def _with(action: Callable[[SQSClient], Awaitable[T]], port: int | None) -> T:
    async with get_session().create_client(
        "sqs", region_name=REGION, endpoint_url=endpoint(port)
    ) as client:
        return await action(client)


def run(action: Callable[[SQSClient], Awaitable[T]], port: int | None = None) -> T:
    """``action(client)`` with a client of its own (from synchronous code)."""
    return asyncio.run(_with(action, port or moto_port()))  # the port first: not in a loop


@dataclass
class SqsQueue:
    """A uniquely named queue (and its dead letters' queue), deleted when the test ends."""

    fifo: bool = False
    name: str = field(default="")
    created: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.name = self.name or f"fptest-{uuid.uuid4().hex[:12]}" + (".fifo" if self.fifo else "")

    @property
    def dead(self) -> str:
        stem = self.name.removesuffix(".fifo")
        return f"{stem}-dead" + (".fifo" if self.fifo else "")

    def url(self, port: int | None = None, **extra: str) -> str:
        query = f"region={REGION}&endpoint={endpoint(port)}"
        for key, value in extra.items():
            query += f"&{key}={value}"
        return f"sqs://{self.name}?{query}"

    def queue_url(self, name: str | None = None) -> str:
        return f"{endpoint()}/123456789012/{name or self.name}"

    def create(self, name: str | None = None, **attributes: str) -> None:
        name = name or self.name
        self.created.append(name)
        if name.endswith(".fifo"):
            attributes.setdefault("FifoQueue", "true")
        run(lambda client: client.create_queue(QueueName=name, Attributes=attributes))  # type: ignore[arg-type]

    def send(self, bodies: Sequence[str], attributes: dict[str, Any] | None = None) -> None:
        async def action(client: SQSClient) -> None:
            url = (await client.get_queue_url(QueueName=self.name))["QueueUrl"]
            for start in range(0, len(bodies), 10):
                entries: list[Any] = []
                for i, body in enumerate(bodies[start : start + 10]):
                    entry: dict[str, Any] = {"Id": str(i), "MessageBody": body}
                    if attributes:
                        entry["MessageAttributes"] = attributes
                    if self.fifo:
                        entry["MessageGroupId"] = entry["MessageDeduplicationId"] = uuid.uuid4().hex
                    entries.append(entry)
                answer = await client.send_message_batch(QueueUrl=url, Entries=entries)
                assert not answer.get("Failed"), answer["Failed"]

        run(action)

    def counts(self, name: str | None = None) -> tuple[int, int, int]:
        """Visible, in flight (received, not deleted), delayed."""

        async def action(client: SQSClient) -> tuple[int, int, int]:
            url = (await client.get_queue_url(QueueName=name or self.name))["QueueUrl"]
            values: Any = (await client.get_queue_attributes(QueueUrl=url, AttributeNames=_COUNTS))[
                "Attributes"
            ]
            visible, invisible, delayed = (int(values.get(n, "0")) for n in _COUNTS)
            return visible, invisible, delayed

        return run(action)

    def receive(self, count: int, visibility: int, name: str | None = None) -> list[Any]:
        """Up to ``count`` messages (all their attributes), left undeleted."""

        async def action(client: SQSClient) -> list[Any]:
            url = (await client.get_queue_url(QueueName=name or self.name))["QueueUrl"]
            got: list[Any] = []
            while len(got) < count:
                answer = await client.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=min(10, count - len(got)),
                    VisibilityTimeout=visibility, MessageAttributeNames=["All"],
                    WaitTimeSeconds=0,
                )  # fmt: skip
                if not answer.get("Messages"):
                    break
                got += answer["Messages"]
            return got

        return run(action)

    def delete(self) -> None:
        async def action(client: SQSClient) -> None:
            for name in {*self.created, self.name, self.dead}:
                try:
                    url = (await client.get_queue_url(QueueName=name))["QueueUrl"]
                    await client.delete_queue(QueueUrl=url)
                except client.exceptions.QueueDoesNotExist:
                    pass

        run(action)


def unique_queue(fifo: bool = False) -> Iterator[SqsQueue]:
    """For a fixture: a queue of the test's own (created), deleted afterwards."""
    moto_port()
    made = SqsQueue(fifo=fifo)
    made.create()
    try:
        yield made
    finally:
        made.delete()
