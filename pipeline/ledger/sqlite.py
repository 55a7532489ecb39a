"""The default ledger: one SQLite file, written from a single dedicated thread."""

from __future__ import annotations

import asyncio
import fcntl
import functools
import os
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, TypeVar

from pipeline.errors import LedgerError
from pipeline.ledger.base import Decision
from pipeline.ledger.sqlite_store import SqliteStore
from pipeline.models import Accepted, Outcome, Rejection

T = TypeVar("T")


def _lock(path: str) -> IO[str]:
    """Hold an exclusive lock beside the ledger for the whole run.

    Two runs on one ledger could both claim and send the same record; the second fails fast
    instead. The kernel drops the lock when the process dies, even on ``kill -9``.
    """
    lock_path = Path(path + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = open(lock_path, "a+")  # noqa: SIM115 - held until close()
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise LedgerError(f"ledger {path} is in use by another run (pid {owner})") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class SqliteLedger:
    """Async facade over :class:`SqliteStore`.

    sqlite3 connections belong to one thread, and a commit with ``synchronous=FULL`` waits for
    the disk; both are reasons to keep all ledger work on one executor thread, one hop per
    batch, so the event loop never blocks on it.
    """

    def __init__(self, store: SqliteStore, executor: ThreadPoolExecutor, lock: IO[str] | None):
        self._store = store
        self._executor = executor
        self._lock = lock

    @classmethod
    async def open(
        cls, path: str, run_id: str, *, command: str, read_only: bool = False
    ) -> SqliteLedger:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        lock = None
        try:
            lock = None if read_only else _lock(path)
            loop = asyncio.get_running_loop()
            store = await loop.run_in_executor(
                executor, lambda: SqliteStore(path, run_id, dry_run=read_only)
            )
            await loop.run_in_executor(executor, store.begin_run, command)
        except BaseException:
            if lock is not None:
                lock.close()
            executor.shutdown(wait=False)
            raise
        return cls(store, executor, lock)

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def claim(self, batch: Sequence[Accepted | Rejection]) -> list[Decision]:
        return await self._call(lambda: self._store.claim(batch))

    async def record(self, outcomes: Sequence[Outcome]) -> None:
        await self._call(lambda: self._store.record(outcomes))

    async def failed(self, batch_size: int = 500) -> AsyncIterator[list[Accepted]]:
        after = ""
        while True:
            batch = await self._call(functools.partial(self._store.failed_after, after, batch_size))
            if not batch:
                return
            after = batch[-1].key
            yield batch

    async def uncertain(self, this_run: bool) -> list[tuple[Accepted, str]]:
        return await self._call(lambda: self._store.uncertain(this_run))

    async def recorded_ids(self, ids: Sequence[str]) -> set[str]:
        return await self._call(lambda: self._store.recorded_ids(ids))

    async def heartbeat(self) -> None:
        await self._call(self._store.heartbeat)

    async def last_seen(self, run_ids: Sequence[str]) -> float | None:
        return await self._call(lambda: self._store.last_seen(run_ids))

    async def counts(self) -> dict[str, int]:
        return await self._call(self._store.counts)

    async def close(self, summary: str | None = None) -> None:
        try:
            await self._call(lambda: self._store.end_run(summary))
            await self._call(self._store.close)
        finally:
            self._executor.shutdown(wait=True)
            if self._lock is not None:
                self._lock.close()


async def open_ledger(
    url: str, run_id: str, *, command: str, read_only: bool = False
) -> SqliteLedger:
    """The registry's entry point: ``url`` is a path or ``sqlite:///path``."""
    # Imported here to keep this edit to the end of the module (the URL rules live in urls.py).
    from pipeline.urls import local_path

    path = local_path(url)
    assert path is not None, url
    return await SqliteLedger.open(path, run_id, command=command, read_only=read_only)
