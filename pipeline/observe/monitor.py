"""What a run looks like while it goes, for the people and programs watching it.

- :class:`Monitor` takes a :class:`Snapshot` of the run on demand: the summary's counts, the
  delivery's retries, concurrency limit and rate cap, and how much of the input was read (the
  bytes of the files, when every source knows its size). Views pull; nothing is pushed to
  them, so the stages only count, as they did.
- :func:`log_progress` writes one timestamped progress line every ``log_every`` seconds: the
  view off a terminal (cron, CI), with ``--quiet``, and for a run that follows a queue.
- :class:`ObservedClient` is the Feedback API client with a listener on every POST attempt
  (HTTP status or None for a transport error, seconds): metrics and latency hang off it, and
  delivery needs no hook of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from pipeline.delivery.client import Created, FeedbackClient
from pipeline.errors import ApiError
from pipeline.logs import event
from pipeline.observe.pace import Pace
from pipeline.observe.summary import Summary
from pipeline.sources.base import Waiting

#: Seconds of history behind the "current rate".
RATE_WINDOW = 10.0
#: Listens to each POST attempt: HTTP status (None: no answer), seconds it took.
ResponseListener = Callable[[int | None, float], None]


class FlowView(Protocol):
    """The parts of :class:`pipeline.flow.compose.FlowControl` a view shows."""

    @property
    def limit(self) -> int: ...

    @property
    def cap(self) -> float | None: ...

    @property
    def api_cap(self) -> float | None: ...

    @property
    def rate(self) -> float | None: ...

    #: --concurrency: the most the adaptive limit may reach (a limit far below it collapsed).
    ceiling: int


class SendingView(Protocol):
    """What a view shows of a sending run (:class:`pipeline.delivery.delivery.Sending`)."""

    @property
    def flow(self) -> FlowView: ...

    @property
    def retries(self) -> int: ...


@dataclass(frozen=True)
class Snapshot:
    elapsed: float
    read: int
    sent: int
    failed: int
    invalid: int
    skipped: int
    duplicate: int
    unknown: int
    settled: int  # records read whose outcome is known (all but those in flight)
    retries: int
    limit: int | None
    rate_cap: float | None
    input: tuple[int, int] | None  # (bytes read, bytes in all) when every size is known
    waiting: str | None = None  # what a draining queue source waits for, in its words
    released: int = 0  # taken, not sent before a stop: left on the queue (not failed)
    stopped: int = 0  # not sent because the run stopped (no failure)
    rate_limit: float | None = None  # the user's --rate (None: no limit)
    api_cap: float | None = None  # the rate cap the API showed by refusing, if any
    progress: tuple[float | None, float | None] = (None, None)  # (share done, seconds left)
    ceiling: int | None = None  # --concurrency, the adaptive limit's ceiling

    @property
    def fraction(self) -> float | None:
        """The share of the input done (see :mod:`pipeline.observe.pace`): never lower than
        before."""
        return self.progress[0]

    @property
    def eta(self) -> float | None:
        """Seconds left at the pace lately, never faster than the rate limit in force."""
        eta = self.progress[1]
        return None if eta is None or self.fraction is None else eta


class Monitor:
    def __init__(
        self,
        summary: Summary,
        sources: Sequence[object] = (),
        clock: Callable[[], float] = time.monotonic,
        sending: SendingView | None = None,
    ) -> None:
        """``sending``: the delivery's live state, for a run that sends (a dry run has none)."""
        self.summary = summary
        self._sources = sources
        self._clock = clock
        self._started = clock()
        self._sending = sending
        self._pace = Pace()

    def snapshot(self) -> Snapshot:
        s, d = self.summary, self._sending
        elapsed = self._clock() - self._started
        measured = self._input()
        share = measured[0] / measured[1] if measured and measured[1] > 0 else None
        parsed = self._records_read()
        user = d.flow.rate if d is not None else None
        api = d.flow.api_cap if d is not None else None
        limits = [r for r in (user, api) if r]
        settled = s.read - s.in_flight
        done = settled - s.stopped_records  # a stopped record is not done
        return Snapshot(
            elapsed=elapsed,
            read=s.read,
            sent=s.would_send if s.dry_run else s.sent,
            failed=s.failed,
            invalid=s.invalid,
            skipped=s.skipped,
            duplicate=s.duplicate,
            unknown=s.unknown,
            settled=settled,
            retries=d.retries if d is not None else 0,
            limit=d.flow.limit if d is not None else None,
            rate_cap=d.flow.cap if d is not None else None,
            input=measured,
            waiting=self._waiting(),
            released=s.released,
            stopped=s.stopped_records,
            rate_limit=user or None,
            api_cap=api,
            progress=self._pace(elapsed, share, parsed or s.read, done, min(limits, default=None)),
            ceiling=d.flow.ceiling if d is not None else None,
        )

    def _waiting(self) -> str | None:
        said = [w for s in self._sources if isinstance(s, Waiting) and (w := s.waiting())]
        return "; ".join(said) or None

    def _records_read(self) -> int | None:
        """Records the sources read so far (ahead of the claims), where all of them count."""
        counts = [getattr(s, "records", None) for s in self._sources]
        if not counts or any(count is None for count in counts):
            return None
        return int(sum(count() for count in counts if count is not None))

    def _input(self) -> tuple[int, int] | None:
        done = total = 0
        for source in self._sources:
            progress = getattr(source, "progress", None)
            measured = progress() if progress is not None else None
            if measured is None:
                return None  # a queue or a pipe: no end to measure against
            done, total = done + measured[0], total + measured[1]
        return (done, total) if self._sources else None


class RateMeter:
    """Records settled per second over the last ``window`` seconds of samples."""

    def __init__(self, window: float = RATE_WINDOW) -> None:
        self._window = window
        self._samples: deque[tuple[float, int]] = deque()

    def __call__(self, snap: Snapshot) -> float:
        settled = snap.sent + snap.failed
        self._samples.append((snap.elapsed, settled))
        while len(self._samples) > 2 and snap.elapsed - self._samples[1][0] >= self._window:
            self._samples.popleft()
        first_t, first = self._samples[0]
        span = snap.elapsed - first_t
        return (settled - first) / span if span > 0 else 0.0


def duration(seconds: float) -> str:
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def progress_line(snap: Snapshot, rate: float) -> str:
    parts = [
        f"read {snap.read}",
        f"sent {snap.sent} ({rate:.0f}/s)",
        f"failed {snap.failed}",
        f"invalid {snap.invalid}",
        f"skipped {snap.skipped}",
        f"duplicate {snap.duplicate}",
    ]
    if snap.released:
        parts.append(f"released {snap.released}")
    if snap.limit is not None:
        parts.append(f"limit {snap.limit}")
    parts.append(f"retries {snap.retries}")
    if snap.fraction is not None:
        eta = snap.eta
        parts.append(f"{snap.fraction:.0%} of input" + (f", ETA {duration(eta)}" if eta else ""))
    if snap.waiting:
        parts.append(f"waiting for {snap.waiting}")
    return f"progress: {', '.join(parts)} ({duration(snap.elapsed)} elapsed)"


def log_snapshot(snap: Snapshot, rate: float) -> None:
    fields = {k: v for k, v in snap.__dict__.items() if k != "input"}
    if snap.input is not None:
        fields.update(bytes_read=snap.input[0], bytes_total=snap.input[1])
    event(logging.INFO, progress_line(snap, rate), "progress", rate=round(rate, 1), **fields)


async def log_progress(monitor: Monitor, every: float, ended: asyncio.Event) -> None:
    """One progress line every ``every`` seconds until ``ended`` is set."""
    meter = RateMeter(window=every)
    meter(monitor.snapshot())
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), every)
        if ended.is_set():
            return
        snap = monitor.snapshot()
        log_snapshot(snap, meter(snap))


def observed_client(
    session: aiohttp.ClientSession,
    base_url: str,
    listeners: Sequence[ResponseListener],
    last_check: Callable[[], None] | None = None,
) -> FeedbackClient:
    """The client, observed when anything listens (a wrapper costs every POST a coroutine)."""
    if not listeners:
        return FeedbackClient(session, base_url, last_check=last_check)
    return ObservedClient(session, base_url, listeners=listeners, last_check=last_check)


class ObservedClient(FeedbackClient):
    """The client, telling ``listeners`` how each POST attempt ended and how long it took."""

    def __init__(self, *args: Any, listeners: Sequence[ResponseListener], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._listeners = listeners

    async def create(self, assistant_id: str, body: dict[str, Any]) -> Created:
        started = time.perf_counter()
        status: int | None = None
        try:
            created = await super().create(assistant_id, body)
            status = created.status
            return created
        except ApiError as exc:
            status = exc.status
            raise
        finally:
            elapsed = time.perf_counter() - started
            for listener in self._listeners:
                listener(status, elapsed)
