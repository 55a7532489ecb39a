"""Amazon SQS (moto's server on loopback) passes the broker contract (:mod:`brokers.contract`)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence

import pytest
from pg_helpers import pg_schema
from sqs_helpers import SqsQueue, moto_port, unique_queue

from brokers.contract import _SPREAD_IDLE, Broker, BrokerContract

__all__ = ["pg_schema"]  # a fixture, used by name
#: What an SQS body may hold (XML's characters) and its largest size (moto's, and AWS's).
_ALLOWED = re.compile("^[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*$")
_MAX_BODY = 1024 * 1024


class SqsBroker(Broker):
    name = "sqs"
    # A message received and not deleted is visible again after its visibility timeout
    # (--claim-idle), whether its holder is silent or dead.
    takes_over_idle = True

    def __init__(self, queue: SqsQueue) -> None:
        self._q = queue
        self.port = moto_port()
        self._dead: str | None = None

    def url(self, consumer: str, port: int | None = None) -> str:
        # SQS has no consumer names: every worker receives from the queue.
        extra = {"dead": self._dead} if self._dead else {}
        return self._q.url(port or self.port, **extra)

    def carries(self, body: bytes) -> bool:
        try:
            text = body.decode()
        except UnicodeDecodeError:
            return False  # a body is text
        return len(text) <= _MAX_BODY and _ALLOWED.match(text) is not None

    def publish(self, bodies: Sequence[bytes]) -> None:
        self._q.send([body.decode() for body in bodies])

    def publish_poison(self) -> int:
        # Ten attributes (SQS's most): the copy cannot add its three, and is written
        # without the originals, saying so.
        attributes = {f"a{i}": {"DataType": "String", "StringValue": "x"} for i in range(10)}
        self._q.send(["not json"], attributes)
        return 1

    def hold(self, count: int, consumer: str) -> Callable[[], None]:
        # Invisible for the contract's --claim-idle of this story, then visible again.
        assert len(self._q.receive(count, visibility=int(_SPREAD_IDLE))) == count
        return lambda: None

    def refuse_dead_letters(self) -> None:
        # A dead letters' queue of the other type: SQS refuses every copy (no group id).
        self._dead = f"{self._q.dead}-refusing.fifo"
        self._q.create(self._dead)

    def left(self) -> int:
        return sum(self._q.counts())

    def dead_letters(self) -> list[dict[str, str]]:
        messages = self._q.receive(10_000, visibility=600, name=self._q.dead)
        return [
            {
                "reason": m["MessageAttributes"]["reason"]["StringValue"],
                "truncated": m["MessageAttributes"].get("truncated", {}).get("StringValue", ""),
            }
            for m in messages
        ]


class TestSqsContract(BrokerContract):
    @pytest.fixture
    def broker(self) -> Iterator[Broker]:
        for queue in unique_queue():
            yield SqsBroker(queue)
