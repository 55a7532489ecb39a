"""The default ledger: one SQLite file, written from a single dedicated thread."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from pipeline.ledger.base import Decision, LedgerRecord, RecordFilter, RunInfo
from pipeline.ledger.lease import HEARTBEAT_S
from pipeline.ledger.lock import LedgerLock, check_ledger_path, lock_holder
from pipeline.ledger.sqlite.store import SqliteStore
from pipeline.models import Accepted, Outcome, Rejection

T = TypeVar("T")


class SqliteLedger:
    """Async facade over :class:`SqliteStore`.

    No leases: the file's lock admits one writing process, so a run's claims are its own
    until it ends, and a later run reconciles them only once it holds the lock.

    sqlite3 connections belong to one thread, and a commit with ``synchronous=FULL`` waits for
    the disk; both are reasons to keep all ledger work on one executor thread, one hop per
    batch, so the event loop never blocks on it.
    """

    def __init__(
        self, store: SqliteStore, executor: ThreadPoolExecutor, lock: LedgerLock | None
    ) -> None:
        self._store = store
        self._executor = executor
        self._lock = lock
        self._path = store.path
        self.lease: float | None = None

    @classmethod
    async def open(
        cls, path: str, run_id: str, *, command: str, read_only: bool = False
    ) -> SqliteLedger:
        check_ledger_path(path)
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        loop = asyncio.get_running_loop()
        lock: LedgerLock | None = None
        store: SqliteStore | None = None
        try:
            # Readers (status, dry runs) take no lock: they never write, and they must work
            # on a ledger they cannot write (a read-only mount, another user's file).
            lock = None if read_only else LedgerLock.acquire(path)
            store = await loop.run_in_executor(
                executor, lambda: SqliteStore(path, run_id, dry_run=read_only)
            )
            await loop.run_in_executor(executor, store.begin_run, command)
        except BaseException:
            if store is not None:
                await loop.run_in_executor(executor, store.close)
            executor.shutdown(wait=True)
            if lock is not None:
                lock.release()  # after SQLite closed the file: see pipeline.ledger.lock
            raise
        return cls(store, executor, lock)

    async def _call(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    async def claim(self, batch: Sequence[Accepted | Rejection]) -> list[Decision]:
        return await self._call(lambda: self._store.claim(batch))

    async def sent_earlier(self, records: Sequence[tuple[str, str]]) -> set[str]:
        return await self._call(lambda: self._store.sent_earlier(records))

    async def record(self, outcomes: Sequence[Outcome]) -> set[str]:
        # One process holds the file (its lock): every claim in it is this run's, so no
        # outcome needs fencing (see pipeline.ledger.lease).
        await self._call(lambda: self._store.record(outcomes))
        return set()

    async def failed(
        self, batch_size: int = 500, *, retryable_only: bool = False
    ) -> AsyncIterator[list[Accepted]]:
        after = ""
        while True:
            batch = await self._call(
                functools.partial(self._store.failed_after, after, batch_size, retryable_only)
            )
            if not batch:
                return
            after = batch[-1].key
            yield batch

    async def records(
        self, which: RecordFilter, batch_size: int = 500
    ) -> AsyncIterator[list[LedgerRecord]]:
        after = ""
        while True:
            batch = await self._call(
                functools.partial(self._store.records_after, which, after, batch_size)
            )
            if not batch:
                return
            after = batch[-1].key
            yield batch

    async def retire(self, which: RecordFilter, reason: str) -> int:
        return await self._call(lambda: self._store.retire(which, reason))

    async def runs(self, limit: int) -> list[RunInfo]:
        return await self._call(lambda: self._store.runs(limit))

    async def holder(self) -> str | None:
        if self._lock is not None:
            return f"pid {os.getpid()}"  # this process holds it
        return lock_holder(self._path)

    async def uncertain(self, this_run: bool) -> list[tuple[Accepted, str]]:
        return await self._call(lambda: self._store.uncertain(this_run))

    async def settle(self, outcomes: Sequence[Outcome], *, this_run: bool) -> set[str]:
        return await self._call(lambda: self._store.settle(outcomes, this_run))

    async def recorded_ids(self, ids: Sequence[str]) -> set[str]:
        return await self._call(lambda: self._store.recorded_ids(ids))

    async def heartbeat(self) -> bool:
        await self._call(self._store.heartbeat)
        return True

    async def last_seen(self, run_ids: Sequence[str]) -> float | None:
        return await self._call(lambda: self._store.last_seen(run_ids))

    async def quiet_in(self, run_ids: Sequence[str]) -> float:
        # The runs that left records here are gone (this run holds the lock): their last
        # request went out before their next heartbeat was due.
        seen = await self.last_seen(run_ids)
        return max(0.0, (seen or 0.0) + HEARTBEAT_S - time.time())

    async def counts(self) -> dict[str, int]:
        return await self._call(self._store.counts)

    async def close(self, summary: str | None = None) -> None:
        try:
            await self._call(lambda: self._store.end_run(summary))
            await self._call(self._store.close)
        finally:
            self._executor.shutdown(wait=True)
            # Only now: closing our descriptor of the file while SQLite still had the database
            # open would drop SQLite's own (POSIX) locks on it. See pipeline.ledger.lock.
            if self._lock is not None:
                self._lock.release()


async def open_ledger(
    url: str, run_id: str, *, command: str, read_only: bool = False, request_bound: float = 0.0
) -> SqliteLedger:
    """The registry's entry point: ``url`` is a path or ``sqlite:///path`` (``request_bound``
    serves leases, which SQLite has no need of)."""
    # Imported here to keep this edit to the end of the module (the URL rules live in urls.py).
    from pipeline.urls import local_path

    path = local_path(url)
    assert path is not None, url
    return await SqliteLedger.open(path, run_id, command=command, read_only=read_only)
