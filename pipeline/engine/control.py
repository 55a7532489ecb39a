"""Run control: the one object that says whether a run goes on, and why it stopped.

The runner owns it and hands it to the parts that need it (delivery, the stages, the acks,
background tasks); none of them reaches into another's state to stop the run. It holds:

- the stop event and the first reason given (``abort``), raised as :class:`AbortedError`
  (``check``) where stopping ends a run;
- ``pause``: a wait that ends early when the run stops, so shutdown is never held hostage;
- ``background``: a task whose failure ends the run with a reason (heartbeat, follow-mode
  housekeeping) instead of escaping as an unhandled error;
- ``signals``: SIGINT/SIGTERM handling (arq's shape: stop taking work, a grace period, cut off).

A run that follows a queue is a service (``service=True``): its first signal is its normal end
(``end``, kept in ``ended``), not an abort: ``reason`` stays None, so the exit code comes from
the records' states alone. A cut-off (a second signal, or the grace period running out) is an
abort in every kind of run.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Iterator

from pipeline.errors import AbortedError


class RunControl:
    """``grace``: seconds requests on the wire may take to finish after the first signal;
    ``service``: a signal is the normal end of the run (a queue followed without ``--drain``);
    ``handle_signals``: whether :meth:`signals` installs SIGINT/SIGTERM handlers (the command
    line does; the Python API only when asked, since signals belong to the program)."""

    def __init__(
        self, *, grace: float = 10.0, service: bool = False, handle_signals: bool = True
    ) -> None:
        self._handle_signals = handle_signals
        self.stop = asyncio.Event()
        self.reason: str | None = None  # why the run was aborted
        self.ended: str | None = None  # why a service ended normally
        #: The run lost its lease on its claims (shared ledger): what it did not send stays in
        #: flight, unwritten, for the other workers to settle (see pipeline.ledger.lease).
        self.lease_lost = False
        self._grace = grace
        self._service = service
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def stopped(self) -> bool:
        return self.stop.is_set()

    def abort(self, reason: str) -> None:
        """Stop the run for good, keeping the first reason given."""
        if self.reason is None:
            self.reason = reason
        self.stop.set()

    def lose_lease(self, reason: str) -> None:
        """Stop the run for good: its claims are no longer its own."""
        self.lease_lost = True
        self.abort(reason)

    def end(self, why: str) -> None:
        """Stop a service normally: take no new work, finish what was taken."""
        if not self.stop.is_set():
            self.ended = why
        self.stop.set()

    @property
    def ended_normally(self) -> bool:
        return self.ended is not None and self.reason is None

    def check(self) -> None:
        """Raise :class:`AbortedError` with the reason once the run has stopped."""
        if self.stop.is_set():
            raise AbortedError(self.reason or self.ended or "run stopped")

    async def pause(self, seconds: float) -> None:
        # A wait that ends early when the run stops, instead of holding shutdown hostage.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)

    def background(self, name: str, work: Callable[[], Awaitable[None]]) -> asyncio.Task[None]:
        """Run ``work`` beside the run; if it fails, the run ends with ``name: error`` as the
        reason. The task is cancelled by :meth:`cancel_background` (or with its parent)."""

        async def guarded() -> None:
            try:
                await work()
            except Exception as exc:  # noqa: BLE001 - any failure here ends the run, cleanly
                self.abort(f"{name} failed: {type(exc).__name__}: {exc}")

        task = asyncio.create_task(guarded(), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def cancel_background(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def heartbeat(self, beat: Callable[[], Awaitable[object]], every: float) -> asyncio.Task[None]:
        """Call ``beat`` every ``every`` seconds until the run stops or the task is cancelled.

        It tells a later run how long this one was alive, should it die with records in flight;
        a heartbeat that cannot be written ends the run (the ledger is unusable)."""

        async def loop() -> None:
            while True:
                await beat()
                await asyncio.sleep(every)

        return self.background("heartbeat", loop)

    @contextlib.contextmanager
    def signals(self, task: asyncio.Task[None]) -> Iterator[None]:
        """First SIGINT/SIGTERM: stop taking records, let requests on the wire finish for up to
        ``grace`` seconds, then cut them off (cancel ``task``). A second signal cuts them off at
        once. Either way the ledger stays truthful: what was cut off is still in flight."""
        loop = asyncio.get_running_loop()

        def cut_off(why: str) -> None:
            if not task.done():
                self.abort(why)  # a service's normal end becomes an abort; an abort keeps its
                task.cancel()

        def handle(name: str) -> None:
            if self.stop.is_set():
                cut_off(f"interrupted by {name} (a second signal)")
                return
            if self._service:
                self.end(f"stopped by {name}")
            else:
                self.abort(f"interrupted by {name}")
            why = f"{self.reason or self.ended}: the grace period of {self._grace:g}s ran out"
            loop.call_later(self._grace, cut_off, why)

        installed = []
        for sig in (signal.SIGINT, signal.SIGTERM) if self._handle_signals else ():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, handle, sig.name)
                installed.append(sig)
        try:
            yield
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)
