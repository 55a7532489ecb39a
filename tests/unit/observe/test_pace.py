"""Issue 23, item 6: the share done never goes back, and the time left is honest: a run held
to a rate finishes at that rate, whatever a first burst or the read-ahead looked like."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from pipeline.observe.monitor import Monitor
from pipeline.observe.summary import Summary


class Input:
    """A file source's progress: (bytes read, bytes in all)."""

    def __init__(self) -> None:
        self.share = 0.0

    def progress(self) -> tuple[int, int]:
        return int(self.share * 1_000_000), 1_000_000


def _delivery(rate: float | None) -> SimpleNamespace:
    limits = SimpleNamespace(limit=16, cap=rate, rate=rate, api_cap=None, ceiling=16)
    return SimpleNamespace(retries=0, flow=limits)


def test_the_share_done_never_goes_back_as_reading_jumps_ahead() -> None:
    now, source, summary = [0.0], Input(), Summary("run", "r")
    monitor = Monitor(summary, [source], clock=lambda: now[0])
    shown = []
    # (bytes read, records claimed, records settled): a batch claimed before the next chunk
    # is read makes the estimate dip (0.113 -> 0.100); the share shown must not.
    for share, read, settled in [(0.10, 2000, 1500), (0.20, 3000, 1700), (0.20, 3500, 1750)]:
        now[0] += 1
        source.share = share
        summary.read, summary.sent = read, settled
        summary.skipped = 0
        snap = monitor.snapshot()
        assert snap.fraction is not None
        shown.append(snap.fraction)
    assert shown == sorted(shown), shown


def test_a_rate_limited_run_says_the_time_its_rate_takes() -> None:
    # 20,000 rows at --rate 50: a first burst (the bucket's) and the read-ahead made the old
    # estimate (time so far x share left / share done) say 4:25 at 2 s for a 6:37 remainder.
    now, source, summary = [0.0], Input(), Summary("run", "r")
    monitor = Monitor(summary, [source], clock=lambda: now[0], sending=_delivery(50.0))
    monitor.snapshot()
    now[0] = 2.0
    source.share = 0.05  # 1000 of 20,000 rows read
    summary.read, summary.sent = 1000, 150

    eta = monitor.snapshot().eta

    assert eta == pytest.approx((20_000 - 150) / 50, rel=0.01)
