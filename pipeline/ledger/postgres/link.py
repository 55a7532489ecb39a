"""The shared ledger's link to PostgreSQL: every call bounded in time, never a hang.

A bound enforced by cancelling the call is not enough: asyncpg answers a cancelled query by
asking the server to cancel it and by resetting the connection, and on a blackholed link both
wait for ever. So each call runs as a task of its own, and the caller waits for it at most
``bound`` seconds: past that the call is abandoned (cancelled, not awaited), the link is
marked broken, and the caller gets a :class:`LedgerError` naming the ledger. Closing a broken
link terminates its connections (closes their sockets), which ends the abandoned calls.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import asyncpg

from pipeline.errors import LedgerError

T = TypeVar("T")

# asyncpg logs a lost connection (with its traceback) itself, and with no handler Python
# prints that to stderr beside our one line that says what it means for the run.
logging.getLogger("asyncpg").addHandler(logging.NullHandler())
log = logging.getLogger(__name__)

#: What asyncpg raises when the server or the connection fails.
DRIVER_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError)
#: Bounds: connecting, and any call (waiting for a pooled connection included). Batches are a
#: few thousand rows at most: far below this on a working server.
CONNECT_S, CALL_BOUND_S = 10.0, 15.0
#: Closing: the run's end is written, then the pool closes; a ledger gone meanwhile is cut off.
CLOSE_S = 5.0


def why(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


class Link:
    """The pool, the URL as shown (password masked), and the bounded calls through them."""

    def __init__(self, pool: asyncpg.Pool, shown: str) -> None:
        self.pool = pool
        self.shown = shown
        self._abandoned: set[asyncio.Task[Any]] = set()  # calls that did not answer in time
        self._stray: set[asyncio.Task[Any]] = set()  # calls whose caller was cancelled

    @classmethod
    async def connect(cls, dsn: str, shown: str) -> tuple[Link, asyncpg.Connection]:
        """A link and one connection of it (to set the ledger up; release it after)."""
        hush_failed_returns(asyncio.get_running_loop())
        # min_size 0: no background task reconnects (and logs) while the server is away.
        pool = asyncpg.create_pool(
            dsn, min_size=0, max_size=4, timeout=CONNECT_S, command_timeout=CALL_BOUND_S
        )
        link = cls(pool, shown)
        try:
            conn: asyncpg.Connection = await link.call(
                "cannot connect", lambda: _first(pool), CONNECT_S + CALL_BOUND_S, verb=""
            )
        except BaseException:
            await link.close(broken=True)
            raise
        return link, conn

    async def call(
        self,
        what: str,
        work: Callable[[], Awaitable[T]],
        bound: float = CALL_BOUND_S,
        *,
        verb: str = " failed",
    ) -> T:
        """``work()`` within ``bound`` seconds; a driver error or no answer is a LedgerError
        (``ledger URL: <what> failed: <why>``)."""
        task: asyncio.Task[T] = asyncio.ensure_future(work())
        try:
            done, _ = await asyncio.wait({task}, timeout=bound)
        except asyncio.CancelledError:
            # The caller gave up (a renewal as the run ends): not a sign of a broken link.
            task.cancel()
            self._stray.add(task)
            raise
        if not done:
            task.cancel()
            self._abandoned.add(task)
            raise LedgerError(f"ledger {self.shown}: {what}: no answer within {bound:g} s")
        try:
            return task.result()
        except DRIVER_ERRORS as exc:
            raise LedgerError(f"ledger {self.shown}: {what}{verb}: {why(exc)}") from exc

    @property
    def broken(self) -> bool:
        return bool(self._abandoned)

    async def close(self, *, broken: bool = False) -> None:
        """Close the pool (bounded); a broken link's connections are terminated instead."""
        try:
            if broken or self.broken:
                self.pool.terminate()
            else:
                await self.call("closing", self.pool.close, CLOSE_S)
        except LedgerError:
            self.pool.terminate()
            raise
        finally:
            await self._bury()

    async def _bury(self) -> None:
        """Let the abandoned and stray calls end (their sockets closed), without waiting long."""
        for task in (*self._abandoned, *self._stray):
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: nobody is left to read it
        tasks = [t for t in (*self._abandoned, *self._stray) if not t.done()]
        if tasks:
            self.pool.terminate()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(CLOSE_S):
                    await asyncio.gather(*tasks, return_exceptions=True)


def hush_failed_returns(loop: asyncio.AbstractEventLoop) -> None:
    """Keep asyncpg's unread "connection could not go back to its pool" errors off stderr.

    asyncpg hands a connection back under ``asyncio.shield``. When the call that held it is
    cancelled meanwhile (an abandoned or stray call above) and the hand-back then fails on a
    dead link, asyncpg has already terminated that connection, but the shielded task's error
    has no reader left, and asyncio prints it with a traceback when the task is collected,
    after our one line about the ledger. Only that task's driver errors are kept back (to the
    debug log); anything else goes to the handler that was there before.
    """
    before = loop.get_exception_handler()
    if getattr(before, "hushes_failed_returns", False):
        return

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        task, exc = context.get("future"), context.get("exception")
        if (
            isinstance(task, asyncio.Task)
            and getattr(task.get_coro(), "__qualname__", "") == _RETURN
            and isinstance(exc, (*DRIVER_ERRORS, TimeoutError))
        ):
            log.debug("a pooled connection could not be returned (terminated): %r", exc)
            return
        if before is None:
            loop.default_exception_handler(context)
        else:
            before(loop, context)

    handler.hushes_failed_returns = True  # type: ignore[attr-defined]
    loop.set_exception_handler(handler)


#: The coroutine asyncpg shields while it hands a connection back to its pool.
_RETURN = "PoolConnectionHolder.release"


async def _first(pool: asyncpg.Pool) -> asyncpg.Connection:
    await pool
    conn: asyncpg.Connection = await pool.acquire()
    return conn


class LedgerParts:
    """What every part of :class:`pipeline.ledger.postgres.ledger.PostgresLedger` (claims, reads,
    fleet) shares, set by its constructor."""

    _link: Link
    _pool: asyncpg.Pool
    _s: str
    _empty: bool
    _read_only: bool
    run_id: str
