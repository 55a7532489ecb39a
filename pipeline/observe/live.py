"""The live display on a terminal (rich), and the final summary as a table.

The display is redrawn four times a second on standard error from :meth:`Monitor.snapshot`:
records read / sent / failed / invalid / skipped, the current rate, the concurrency limit and
rate cap, retries, and a bar with the percentage and ETA when the input's size is known. Log
records written meanwhile appear above it (rich redirects standard error while it is live).
Off a terminal it is never started: :func:`pipeline.observe.monitor.log_progress` runs instead,
so no control codes reach a log file.
"""

from __future__ import annotations

import asyncio
import contextlib

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from pipeline.observe.monitor import Monitor, RateMeter, Snapshot, duration
from pipeline.observe.summary import Summary

REFRESH_PER_SECOND = 4


def stderr_is_terminal() -> bool:
    """A terminal that can redraw in place (TERM=dumb cannot: it gets the log lines)."""
    console = Console(stderr=True)
    return console.is_terminal and not console.is_dumb_terminal


class LiveDisplay:
    def __init__(self, monitor: Monitor, console: Console | None = None) -> None:
        self._monitor = monitor
        self._meter = RateMeter()
        # Redrawn by :meth:`run` on the event loop's thread, where the log lines come from,
        # not by rich's own thread: a log line redraws the display too, rendered in one thread
        # and written after the other's newer frame, so a stale frame could follow it.
        self._live = Live(
            console=console or Console(stderr=True),
            get_renderable=self._render,
            auto_refresh=False,
            redirect_stdout=False,
            redirect_stderr=True,
        )

    def start(self) -> None:
        self._live.start()

    async def run(self, ended: asyncio.Event) -> None:
        """Redraw REFRESH_PER_SECOND times a second until ``ended`` is set."""
        while not ended.is_set():
            self._live.refresh()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(ended.wait(), 1 / REFRESH_PER_SECOND)

    def stop(self) -> None:
        """Draw the final state once more (100% at the end of the files) and stop."""
        self._live.refresh()
        self._live.stop()

    def _render(self) -> RenderableType:
        snap = self._monitor.snapshot()
        return render(snap, self._meter(snap))


def render(snap: Snapshot, rate: float) -> RenderableType:
    counts = Table.grid(padding=(0, 2))
    names = ["read", "sent", "failed", "invalid", "skipped", "rate"]
    values: list[RenderableType] = [
        str(snap.read),
        Text(str(snap.sent), style="green"),
        Text(str(snap.failed), style="red" if snap.failed else ""),
        Text(str(snap.invalid), style="yellow" if snap.invalid else ""),
        str(snap.skipped),
        f"{rate:.0f}/s",
    ]
    if snap.stopped:  # not sent because the run stopped: no failure (see Summary)
        names.insert(3, "stopped")
        values.insert(3, Text(str(snap.stopped), style="yellow"))
    for _ in names:
        counts.add_column(justify="right")
    counts.add_row(*names)
    counts.add_row(*values)
    limit = "-" if snap.limit is None else str(snap.limit)
    flow = Text(
        f"concurrency limit {limit}   {rate_limits(snap.rate_limit, snap.api_cap)}   "
        f"retries {snap.retries}   elapsed {duration(snap.elapsed)}"
    )
    fraction = snap.fraction
    if fraction is None:
        return Group(counts, flow)
    bar = Table.grid(padding=(0, 1))
    bar.add_column(width=40)
    bar.add_column()
    eta = snap.eta
    bar.add_row(
        ProgressBar(total=100, completed=fraction * 100, width=40),
        f"{fraction:.0%} of input" + (f"  ETA {duration(eta)}" if eta else ""),
    )
    return Group(bar, counts, flow)


def rate_limits(user: float | None, api: float | None) -> str:
    """Whose rate limit is whose: the user's --rate, and the cap the API showed (if any)."""
    mine = f"{user:.0f}/s (--rate)" if user else "none (--rate 0)"
    theirs = f"{api:.0f}/s" if api else "none found"
    return f"rate limit {mine}   API rate cap {theirs}"


def summary_table(summary: Summary) -> RenderableType:
    """The summary for a terminal: the counts, then the top failure reasons with counts."""
    counts = Table(title=f"{summary.command} {summary.run_id}", show_header=True)
    names = ["read", "sent", "skipped", "duplicate", "invalid", "failed", "unknown"]
    if summary.stopped_records:
        names.append("stopped_records")
    for name in names:
        counts.add_column(name.removesuffix("_records"), justify="right")
    counts.add_row(*(str(getattr(summary, name)) for name in names))
    parts: list[RenderableType] = [counts, Text("\n".join(summary.details(reasons=False)))]
    top = summary.top_reasons()
    if top:
        reasons = Table(title="top failure reasons")
        reasons.add_column("count", justify="right")
        reasons.add_column("reason")
        for reason, count in top:
            reasons.add_row(str(count), reason)
        parts.append(reasons)
    return Group(*parts)
