"""``python -m bench.sqs_server --port N [--latency-ms MS]``: an SQS endpoint for the benchmarks.

Why not moto's server, which the tests use for SQS's semantics: moto keeps a queue's messages
in a list that every receive and delete scans, so its cost per call grows with the queue, and
a 50,000-message drain takes hours and measures moto. Here a queue's messages are indexed
(visible ones in a deque, hidden ones in a heap of their deadlines), so a call costs the same
at any depth, and the drain measures the pipeline's SQS client.

It is not SQS: it serves standard queues only, over the JSON protocol botocore speaks, and
only the calls the pipeline makes (queues, SendMessage and its batch, ReceiveMessage with long
polling and visibility, DeleteMessageBatch, ChangeMessageVisibilityBatch, the counts of
GetQueueAttributes). ``--latency-ms`` delays every answer, as a region's round trip would.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import heapq
import json
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

_POLL = 0.05  # seconds a long poll sleeps between looks at its queue


@dataclass
class Message:
    id: str
    body: str
    sent_ms: int
    receipt: str = ""
    receives: int = 0
    hidden_until: float = 0.0


@dataclass
class Queue:
    url: str
    visibility: int
    messages: dict[str, Message] = field(default_factory=dict)
    visible: deque[str] = field(default_factory=deque)
    hidden: list[tuple[float, str, str]] = field(default_factory=list)  # (until, id, receipt)

    def revive(self, now: float) -> None:
        """Messages whose visibility timeout ran out are visible again."""
        while self.hidden and self.hidden[0][0] <= now:
            until, mid, receipt = heapq.heappop(self.hidden)
            m = self.messages.get(mid)
            if m is not None and m.receipt == receipt and m.hidden_until == until:
                m.receipt = ""
                self.visible.append(mid)

    def hide(self, m: Message, seconds: float, now: float) -> None:
        m.hidden_until = now + seconds
        heapq.heappush(self.hidden, (m.hidden_until, m.id, m.receipt))

    def by_receipt(self, receipt: str) -> Message | None:
        mid = receipt.split(":", 1)[0]
        m = self.messages.get(mid)
        return m if m is not None and m.receipt == receipt else None


class Failure(Exception):
    def __init__(self, kind: str, query: str, message: str) -> None:
        super().__init__(message)
        self.kind, self.query = kind, query


def _md5(text: str) -> str:
    return hashlib.md5(text.encode(), usedforsecurity=False).hexdigest()


class Sqs:
    def __init__(self, base: str, latency: float) -> None:
        self._base = base
        self._latency = latency
        self._queues: dict[str, Queue] = {}
        self.calls: Counter[str] = Counter()  # by action, and "received" for messages

    async def stats(self, _: web.Request) -> web.Response:
        """``GET /stats``: the calls served, by action (the benchmark reports them)."""
        return web.json_response(dict(self.calls))

    def _queue(self, body: dict[str, Any]) -> Queue:
        name = str(body.get("QueueUrl", "")).rsplit("/", 1)[-1]
        if name not in self._queues:
            raise Failure("QueueDoesNotExist", "NonExistentQueue", f"no queue {name}")
        return self._queues[name]

    async def handle(self, request: web.Request) -> web.Response:
        action = request.headers.get("X-Amz-Target", "").rpartition(".")[2]
        body = json.loads(await request.read() or b"{}")
        if self._latency:
            await asyncio.sleep(self._latency)
        self.calls[action] += 1
        call = getattr(self, f"_{action}", None)
        try:
            if call is None:
                raise Failure("InvalidAction", "InvalidAction", f"{action}: not served")
            try:
                answer = await call(body)
            except KeyError as exc:
                raise Failure("MissingParameter", "MissingParameter", str(exc)) from None
        except Failure as exc:
            kind, query = exc.kind, exc.query
            headers = {"x-amzn-query-error": f"AWS.SimpleQueueService.{query};Sender"}
            payload = {"__type": f"com.amazonaws.sqs#{kind}", "message": str(exc)}
            return web.json_response(payload, status=400, headers=headers)
        return web.json_response(answer, content_type="application/x-amz-json-1.0")

    async def _CreateQueue(self, body: dict[str, Any]) -> dict[str, Any]:
        name = str(body["QueueName"])
        attributes = body.get("Attributes") or {}
        if name.endswith(".fifo") or attributes.get("FifoQueue") == "true":
            raise Failure("InvalidAttributeValue", "InvalidAttributeValue", "FIFO: not served")
        if name not in self._queues:
            visibility = int(attributes.get("VisibilityTimeout", 30))
            self._queues[name] = Queue(f"{self._base}/000000000000/{name}", visibility)
        return {"QueueUrl": self._queues[name].url}

    async def _GetQueueUrl(self, body: dict[str, Any]) -> dict[str, Any]:
        return {"QueueUrl": self._queue({"QueueUrl": body["QueueName"]}).url}

    async def _DeleteQueue(self, body: dict[str, Any]) -> dict[str, Any]:
        self._queues.pop(self._queue(body).url.rsplit("/", 1)[-1])
        return {}

    async def _GetQueueAttributes(self, body: dict[str, Any]) -> dict[str, Any]:
        q = self._queue(body)
        q.revive(time.monotonic())
        counts = {
            "ApproximateNumberOfMessages": len(q.visible),
            "ApproximateNumberOfMessagesNotVisible": len(q.messages) - len(q.visible),
            "ApproximateNumberOfMessagesDelayed": 0,
            "VisibilityTimeout": q.visibility,
        }
        names = body.get("AttributeNames") or []
        wanted = counts if "All" in names else {k: v for k, v in counts.items() if k in names}
        return {"Attributes": {k: str(v) for k, v in wanted.items()}}

    def _send(self, q: Queue, text: str) -> dict[str, str]:
        m = Message(str(uuid.uuid4()), text, int(time.time() * 1000))
        q.messages[m.id] = m
        q.visible.append(m.id)
        return {"MessageId": m.id, "MD5OfMessageBody": _md5(text)}

    async def _SendMessage(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._send(self._queue(body), str(body["MessageBody"]))

    async def _SendMessageBatch(self, body: dict[str, Any]) -> dict[str, Any]:
        q = self._queue(body)
        sent = [{"Id": e["Id"], **self._send(q, str(e["MessageBody"]))} for e in body["Entries"]]
        return {"Successful": sent, "Failed": []}

    async def _ReceiveMessage(self, body: dict[str, Any]) -> dict[str, Any]:
        q = self._queue(body)
        most = int(body.get("MaxNumberOfMessages", 1))
        seconds = float(body.get("VisibilityTimeout", q.visibility))
        deadline = time.monotonic() + float(body.get("WaitTimeSeconds", 0))
        while True:
            now = time.monotonic()
            q.revive(now)
            if q.visible or now >= deadline:
                break
            await asyncio.sleep(min(_POLL, deadline - now))
        out: list[dict[str, Any]] = []
        while q.visible and len(out) < most:
            m = q.messages[q.visible.popleft()]
            m.receives += 1
            m.receipt = f"{m.id}:{uuid.uuid4().hex}"
            q.hide(m, seconds, now)
            attributes = {"ApproximateReceiveCount": str(m.receives), "SentTimestamp": m.sent_ms}
            out.append(
                {
                    "MessageId": m.id,
                    "ReceiptHandle": m.receipt,
                    "MD5OfBody": _md5(m.body),
                    "Body": m.body,
                    "Attributes": {k: str(v) for k, v in attributes.items()},
                }
            )
        self.calls["received"] += len(out)
        return {"Messages": out} if out else {}

    @staticmethod
    def _batch(
        body: dict[str, Any], q: Queue, act: Callable[[Message, dict[str, Any]], object]
    ) -> dict[str, Any]:
        done, failed = [], []
        for entry in body["Entries"]:
            m = q.by_receipt(str(entry["ReceiptHandle"]))
            if m is None:
                failed.append(
                    {
                        "Id": entry["Id"],
                        "SenderFault": True,
                        "Code": "ReceiptHandleIsInvalid",
                        "Message": "not the message's current receipt",
                    }
                )
            else:
                act(m, entry)
                done.append({"Id": entry["Id"]})
        return {"Successful": done, "Failed": failed}

    async def _DeleteMessageBatch(self, body: dict[str, Any]) -> dict[str, Any]:
        q = self._queue(body)
        return self._batch(body, q, lambda m, _: q.messages.pop(m.id))

    async def _ChangeMessageVisibilityBatch(self, body: dict[str, Any]) -> dict[str, Any]:
        q = self._queue(body)
        now = time.monotonic()
        return self._batch(body, q, lambda m, e: q.hide(m, float(e["VisibilityTimeout"]), now))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.sqs_server", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    sqs = Sqs(f"http://{args.host}:{args.port}", args.latency_ms / 1000)
    app = web.Application(client_max_size=4 * 1024 * 1024)
    app.router.add_post("/", sqs.handle)
    app.router.add_get("/stats", sqs.stats)
    web.run_app(app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
