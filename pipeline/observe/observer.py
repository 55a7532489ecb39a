"""Everything that watches one run, started and ended in one place by the runner.

- the view while it goes: the live display (a terminal, not ``--quiet``/``--no-progress``)
  or one progress log line every ``log_every`` seconds (off a terminal, quiet, following);
- the metrics (served on ``--metrics-port``; written to ``--metrics-textfile`` at the end);
- the outputs at the end, written **whatever way the run ended** (finished, aborted by a
  401 or an outage, interrupted, cut off, the ledger failing, an internal error): the
  ``--report`` JSON and the metrics textfile, so a scheduler always has them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence

from pipeline.config import Settings
from pipeline.errors import ConfigError, PipelineError, SourceError
from pipeline.ledger.fleet import Identity
from pipeline.logs import event, log
from pipeline.observe.html.report import is_html, write_html
from pipeline.observe.html.sections import RunFacts
from pipeline.observe.live import LiveDisplay, stderr_is_terminal
from pipeline.observe.metrics import RunMetrics
from pipeline.observe.monitor import Monitor, ResponseListener, SendingView, log_progress
from pipeline.observe.problems import Progress
from pipeline.observe.pulse import Pulse
from pipeline.observe.summary import Summary
from pipeline.observe.timeline import Timeline
from pipeline.urls import mask_url


class Observer:
    def __init__(
        self,
        settings: Settings,
        summary: Summary,
        sources: Sequence[object],
        sending: SendingView | None = None,
    ) -> None:
        """``sending``: the delivery's live state, for a run that sends."""
        self._settings = settings
        self.summary = summary
        self.monitor = Monitor(summary, sources, sending=sending)
        self.progress = Progress()
        self._sources = sources
        consumers = [c for s in sources if isinstance(c := getattr(s, "consumer", None), str)]
        self.pulse = Pulse(summary.run_id, ", ".join(consumers))
        wanted = settings.metrics_port is not None or settings.metrics_textfile is not None
        self.metrics = RunMetrics(self.monitor, self.pulse) if wanted else None
        html = settings.report is not None and is_html(settings.report)
        self.timeline = Timeline(self.monitor) if html else None
        self._facts = RunFacts.of(settings, sources) if html else None

    @property
    def listeners(self) -> list[ResponseListener]:
        """What hears each POST attempt (status, seconds)."""
        listeners: list[ResponseListener] = []
        if self.metrics is not None:
            listeners.append(self.metrics.on_response)
        if self.timeline is not None:
            listeners.append(self.timeline.on_response)
        if log.isEnabledFor(logging.DEBUG):
            listeners.append(_debug_attempt)
        return listeners

    async def beating(self, every: float) -> None:
        """The run's pulse for its metrics (heartbeat, last progress, queue lag), until
        cancelled."""
        await self.pulse.keep(self.summary, self._sources, every)

    def live(self) -> bool:
        settings = self._settings
        return settings.progress and not settings.quiet and stderr_is_terminal()

    @contextlib.asynccontextmanager
    async def watching(self) -> AsyncIterator[None]:
        """The view and the metrics endpoint, for as long as the run goes."""
        settings = self._settings
        if self.metrics is not None and settings.metrics_port is not None:
            self.metrics.serve(
                settings.metrics_port, settings.origin("metrics_port"), settings.metrics_address
            )
        display = LiveDisplay(self.monitor) if self.live() else None
        ended = asyncio.Event()
        tasks = []
        if display is not None:
            display.start()
            tasks.append(asyncio.create_task(display.run(ended)))
        else:
            tasks.append(asyncio.create_task(log_progress(self.monitor, settings.log_every, ended)))
        if self.timeline is not None:
            tasks.append(asyncio.create_task(self.timeline.record(ended)))
        try:
            yield
        finally:
            ended.set()
            await asyncio.gather(*tasks)
            if display is not None:
                display.stop()
            if self.metrics is not None:
                self.metrics.close()

    def started(self, who: Identity | None = None) -> None:
        """Said once the ledger is open (a usage error found opening it is the only line);
        ``who``: the process, its queue consumer and job, so that a fleet's logs say which
        worker each run is."""
        summary = self.summary
        where = mask_url(self._settings.ledger)
        message = f"{summary.command} started: run {summary.run_id}, ledger {where}"
        fields: dict[str, object] = {}
        if who is not None:
            fields = {"pid": who.pid, "consumer": who.consumer, "job": who.job}
            message += f", pid {who.pid}"
            message += f", consumer {who.consumer}" if who.consumer else ""
            message += f", job {who.job}" if who.job else ""
        event(logging.INFO, message, "start", run_id=summary.run_id, **fields)

    def ended(self, error: BaseException | None) -> None:
        """Note how the run ended and write its outputs; never raises over ``error``.

        A usage error (exit 2: found opening the ledger, say) is no run: its one line says
        it all, and no report is written. An error that escapes the run is said by the
        command line, in one line; the end event is for runs that end on their own."""
        summary = self.summary
        if isinstance(error, ConfigError | SourceError):
            return
        if error is not None and summary.aborted is None:
            summary.aborted = _why(error)
        summary.finish()
        self._write("--report", self._settings.report, self._write_report)
        if self.metrics is not None:
            self._write(
                "--metrics-textfile", self._settings.metrics_textfile, self.metrics.write_textfile
            )
        if error is not None:
            return
        data = summary.as_dict()
        fields = {k: v for k, v in data.items() if isinstance(v, int | float)}
        fields["failure_reasons"] = data["failure_reasons"]
        level = logging.ERROR if summary.aborted else logging.INFO
        what = f"aborted: {summary.aborted}" if summary.aborted else "finished"
        event(level, f"{summary.command} {what} (exit {summary.exit_code})", "end", **fields)

    def _write_report(self, path: str) -> None:
        if self.timeline is not None:
            write_html(path, self.summary, self.timeline, self._facts, self.progress.first)
        else:
            self.summary.write_json(path)

    def _write(self, name: str, path: str | None, write: Callable[[str], None]) -> None:
        if path is None:
            return
        try:
            write(path)
        except OSError as exc:
            log.error("%s: cannot write %s: %s", name, path, exc.strerror or exc)
            if self.summary.aborted is None:
                self.summary.aborted = f"{name}: cannot write {path}: {exc.strerror or exc}"


def _debug_attempt(status: int | None, seconds: float) -> None:
    answer = f"HTTP {status}" if status is not None else "no answer"
    event(logging.DEBUG, f"POST: {answer} in {seconds * 1000:.1f} ms", "attempt", status=status)


def _why(error: BaseException) -> str:
    if isinstance(error, KeyboardInterrupt | asyncio.CancelledError):
        return "interrupted"
    text = str(error) or type(error).__name__
    if isinstance(error, PipelineError):
        return text
    return f"internal error: {type(error).__name__}: {text}"
