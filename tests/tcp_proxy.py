"""A TCP proxy of the tests' own, between one worker and a server (PostgreSQL, a broker), so
that a test can stall, freeze or cut that link alone while everything else goes on.

It runs its own event loop in a thread. ``stall()`` stops forwarding in both directions and
holds every connection open (a blackholed link: nothing arrives, nothing fails); ``resume()``
forwards again. ``freeze()`` drops what the client sends for good (a broker never hears its
acks, as when a worker dies between its outcome and its ack). ``cut()`` closes every
connection and refuses new ones until ``restore()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

import pytest


class TcpProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._flowing: asyncio.Event | None = None
        self._refusing = False
        self._frozen = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self.port = 0
        self.connections = 0  # accepted so far

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url_of(self, url: str) -> str:
        """``url`` (postgresql://user@127.0.0.1:PORT/db?...) through this proxy."""
        host_port = f"{self._target[0]}:{self._target[1]}"
        assert host_port in url, url
        return url.replace(host_port, f"127.0.0.1:{self.port}")

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.close()
            return
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer, upstream=True),
            self._pipe(up_reader, writer, upstream=False),
            return_exceptions=True,
        )
        for w in (writer, up_writer):
            self._writers.discard(w)
            w.close()
            with contextlib.suppress(Exception):
                await w.wait_closed()

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        assert self._flowing is not None
        try:
            while data := await reader.read(65536):
                await self._flowing.wait()  # a stall holds the bytes here
                if upstream and self._frozen:
                    continue  # dropped: the server never hears it
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    def _call(self, fn: object) -> None:
        assert callable(fn)
        self._loop.call_soon_threadsafe(fn)

    def stall(self) -> None:
        assert self._flowing is not None
        self._call(self._flowing.clear)

    def resume(self) -> None:
        assert self._flowing is not None
        self._call(self._flowing.set)

    def freeze(self) -> None:
        def freeze() -> None:
            self._frozen = True

        self._call(freeze)

    def cut(self) -> None:
        """Close every connection now, and refuse new ones until :meth:`restore`."""

        def cut() -> None:
            self._refusing = True
            for writer in list(self._writers):
                writer.transport.abort()

        self._call(cut)

    def restore(self) -> None:
        def restore() -> None:
            self._refusing = False

        self._frozen = False

        self._call(restore)

    def close(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            # Connections still being piped end here, not as "destroyed but pending" at exit.
            others = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


@pytest.fixture
def pg_proxy() -> Iterator[TcpProxy]:
    """A proxy in front of the tests' PostgreSQL (127.0.0.1:5432)."""
    proxy = TcpProxy("127.0.0.1", 5432)
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.close()
