"""Blocking source reads, awaited from the event loop without being able to hang it."""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")
_Work = tuple[Callable[[], Any], asyncio.AbstractEventLoop, "asyncio.Future[Any]"]


class OffLoop:
    """Runs a source's blocking reads, one after the other, in one daemon thread of its own.

    Not ``asyncio.to_thread``: a read blocked on a FIFO, a pipe or a terminal cannot be
    interrupted, and the default executor's threads are joined when ``asyncio.run`` ends and
    again at interpreter exit, so a run stopped by SIGTERM while waiting for input would hang
    there instead of ending with its summary. A daemon thread is simply left behind at exit
    (nothing of what it would still read was claimed, so nothing is lost). Cancelling the
    await does not stop the read; its late result is dropped.

    One thread for all of a source's reads, not one per read: starting a thread costs the
    event loop about half a millisecond, which was a tenth of a rerun's time.
    """

    def __init__(self) -> None:
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` queued behind the reads already submitted; await the future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        if self._thread is None:
            self._thread = threading.Thread(target=self._serve, name="source-reader", daemon=True)
            self._thread.start()
        self._work.put((lambda: fn(*args), loop, future))
        return future

    def close(self) -> None:
        """The thread ends after the reads submitted so far (at once if it is idle)."""
        self._work.put(None)
        self._thread = None

    def _serve(self) -> None:
        while (work := self._work.get()) is not None:
            fn, loop, future = work
            try:
                result, error = fn(), None
            except BaseException as exc:  # noqa: BLE001 - handed to the awaiting task
                result, error = None, exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, future, result, error)


def _settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    if future.done():  # cancelled meanwhile
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)
