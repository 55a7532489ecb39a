"""Pull requests to a durable JetStream consumer, answered into one inbox read by a callback.

Why not nats-py's ``PullSubscription.fetch``: it waits for each message of a batch with a
timer of its own (``asyncio.wait_for`` per message), about 33 us of CPU a message, where a
callback that gathers what arrives and wakes the reader once per read from the socket costs
about 10: a third of what a drain spent beyond a file's run.

One pull request is open at a time, for at most the batch asked for, lingering for the wait
given (JetStream ends it with a 408 status when that runs out, or says nothing more once the
batch is delivered). What arrives after a reader stopped waiting is kept for the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

# Status headers JetStream answers a pull request with.
_HEARTBEAT = "100"
_OVER = frozenset({"404", "408", "409"})  # no messages, request expired, request refused
_NO_CONSUMER = "503"  # nobody answers the consumer's subject: it does not exist
# Seconds a reader waits past the request's own expiry before it asks again: JetStream's
# 408 normally comes first.
_GRACE = 1.0
API_PREFIX = "$JS.API"  # the default JetStream domain's API, which open_jetstream uses


class PullError(Exception):
    """JetStream answered the pull request with an error; the message says which."""


class Puller:
    """Batches of messages from one consumer, for one reader at a time."""

    def __init__(self, connection: Client, stream: str, consumer: str) -> None:
        self._nc = connection
        self._next = f"{API_PREFIX}.CONSUMER.MSG.NEXT.{stream}.{consumer}"
        self._inbox = connection.new_inbox()
        self._sub: Subscription | None = None
        self._arrived: list[Msg] = []
        self._owed = 0  # messages the open request may still bring; 0: none is open
        self._wake = asyncio.Event()
        self._problem: str | None = None
        #: The last read's request ended without a word from the server, not even its 408:
        #: nobody serves the consumer any more (deleted), or the server is stuck.
        self.unheard = False

    async def start(self) -> None:
        self._sub = await self._nc.subscribe(self._inbox, cb=self._on_message)

    async def _on_message(self, msg: Msg) -> None:
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            self._arrived.append(msg)
            self._owed = max(0, self._owed - 1)
        elif status == _HEARTBEAT:
            return
        else:
            self._owed = 0  # whatever it says, this request is over
            if status not in _OVER:
                said = (msg.headers or {}).get("Description", "")
                what = "the consumer does not exist" if status == _NO_CONSUMER else said
                self._problem = f"pull request refused: {status} {what}".rstrip()
        self._wake.set()

    async def take(self, most: int, wait: float) -> list[Msg]:
        """Up to ``most`` messages: those already here, else the first read of what a pull
        request brings within ``wait`` seconds (none: an empty list)."""
        if not self._arrived:
            self._wake.clear()
            if self._owed == 0:
                request = {"batch": most, "expires": int(wait * 1e9)}
                await self._nc.publish(self._next, json.dumps(request).encode(), self._inbox)
                self._owed = most
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait + _GRACE):
                    await self._wake.wait()
            self.unheard = not self._arrived and self._owed > 0 and not self._wake.is_set()
            if self.unheard:
                self._owed = 0  # ask afresh
        if self._problem is not None:
            problem, self._problem = self._problem, None
            raise PullError(problem)
        taken, self._arrived = self._arrived[:most], self._arrived[most:]
        return taken

    def kept(self) -> list[Msg]:
        """Messages delivered to this reader and not taken yet (their ack wait is running)."""
        return list(self._arrived)

    async def stop(self) -> None:
        """No more requests; what was delivered but not taken goes back at once (a nak)."""
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()
        self._owed = 0  # the server drops a request whose inbox nobody reads
        left, self._arrived = self._arrived, []
        for msg in left:
            with contextlib.suppress(Exception):
                await msg.nak()
