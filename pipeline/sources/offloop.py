"""Blocking source reads, awaited from the event loop without being able to hang it."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


async def read_off_loop(fn: Callable[..., T], *args: Any) -> T:
    """``await fn(*args)`` run in a daemon thread of its own.

    Not ``asyncio.to_thread``: a read blocked on a FIFO, a pipe or a terminal cannot be
    interrupted, and the default executor's threads are joined when ``asyncio.run`` ends and
    again at interpreter exit, so a run stopped by SIGTERM while waiting for input would hang
    there instead of ending with its summary. A daemon thread is simply left behind at exit
    (nothing of what it would still read was claimed, so nothing is lost). Cancelling the
    await does not stop the thread; its late result is dropped.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def settle(result: T | None, error: BaseException | None) -> None:
        if future.done():  # cancelled meanwhile
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = fn(*args), None
        except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
            result, error = None, exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="source-reader", daemon=True).start()
    return await future
