"""The settle wait is a safety wait: nothing is judged before its deadline, whoever calls.

On a fake clock: ``sleep`` advances it, and may end early as a stop-aware sleep does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import pytest

from pipeline.delivery.client import FeedbackClient
from pipeline.engine.reconcile import Reconciler
from pipeline.errors import SettleInterruptedError
from pipeline.ledger import Ledger
from pipeline.ledger.lease import HEARTBEAT_S
from pipeline.models import Accepted, FeedbackRecord, Outcome

SETTLE = 5.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now


class DeadRunLedger:
    """Only what settle_leftovers reads: one record a dead run left in flight."""

    def __init__(self, quiet: float) -> None:
        self._quiet = quiet  # seconds until the dead run's last request surely ended
        self.recorded: list[Outcome] = []

    async def uncertain(self, this_run: bool) -> list[tuple[Accepted, str]]:
        record = FeedbackRecord(assistant_id="aia_asst_x", session_id="s1", score=0.5)
        return [] if this_run else [(Accepted.of("in.csv:2", record), "dead-run")]

    async def quiet_in(self, run_ids: Sequence[str]) -> float:
        return self._quiet

    async def record(self, outcomes: Sequence[Outcome]) -> set[str]:
        self.recorded.extend(outcomes)
        return set()


def _reconciler(clock: Clock, ledger: DeadRunLedger, *, stop_after: float | None) -> Reconciler:
    stopped = False

    async def sleep(seconds: float) -> None:
        # A stop-aware sleep: when the stop comes first, it ends then, not at ``seconds``.
        nonlocal stopped
        clock.sleeps.append(seconds)
        if stop_after is not None and stop_after < seconds:
            clock.now += stop_after
            stopped = True
        else:
            clock.now += seconds

    return Reconciler(
        cast(FeedbackClient, None),  # never reached when nothing may be judged
        cast(Ledger, ledger),
        settle=SETTLE,
        max_attempts=1,
        sleep=sleep,
        clock=clock,
        stopped=lambda: stopped,
    )


async def test_a_stop_during_the_wait_judges_nothing() -> None:
    clock = Clock()
    ledger = DeadRunLedger(quiet=HEARTBEAT_S)
    reconciler = _reconciler(clock, ledger, stop_after=1.0)

    with pytest.raises(SettleInterruptedError, match="1 uncertain records of an earlier run"):
        await reconciler.settle_leftovers()

    assert ledger.recorded == []
    assert clock.sleeps == [HEARTBEAT_S + SETTLE]


async def test_a_sleep_that_ends_short_without_a_stop_is_resumed() -> None:
    clock = Clock()
    reconciler = _reconciler(clock, DeadRunLedger(quiet=HEARTBEAT_S), stop_after=None)

    async def short_sleep(seconds: float) -> None:
        clock.sleeps.append(seconds)
        clock.now += min(seconds, 1.0)  # ends early, as a sleep may on another clock

    reconciler._sleep = short_sleep
    assert await reconciler._wait_until(clock.now + 4.0)
    assert clock.now >= 1_004.0
    assert clock.sleeps == [4.0, 3.0, 2.0, 1.0]


async def test_a_deadline_already_past_needs_no_wait_even_when_stopping() -> None:
    clock = Clock()
    reconciler = _reconciler(clock, DeadRunLedger(quiet=0.0), stop_after=0.0)
    assert await reconciler._wait_until(clock.now - 1)
    assert clock.sleeps == []
