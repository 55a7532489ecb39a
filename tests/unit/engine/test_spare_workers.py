"""A record waiting out a 429's Retry-After (or a backoff) holds a worker but no slot: a spare
worker stands in for it, so that the other records are sent meanwhile; once the wait is over,
the spare ends. A real SQLite ledger; the delivery is a stand-in that waits on events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, cast

from pipeline.delivery.delivery import Delivery
from pipeline.engine.control import RunControl
from pipeline.engine.spares import WORKERS_PER_SLOT, Spares
from pipeline.engine.stages import Item, Stages
from pipeline.ledger import open_ledger
from pipeline.models import Accepted, FeedbackRecord, Outcome, Status
from pipeline.observe.problems import Progress
from pipeline.observe.summary import Summary

DEADLINE = 10.0


class _Waiting:
    """Sends in two steps of the loop, except that each record in ``waits`` first waits (as
    after a 429, holding no slot) until that many other records were sent."""

    def __init__(self, waits: dict[str, int], on_wait: Callable[[bool], None]) -> None:
        self.on_wait = on_wait
        self._waits = waits
        self.sent: list[str] = []
        self._progress = asyncio.Condition()
        self.sending = 0  # records on the wire now (not waiting)
        self.most_sending = 0
        self.most_after_waits = 0  # the same, once every waiting record was sent

    async def send(self, item: Accepted) -> Outcome:
        location = item.location or ""
        if location in self._waits:
            self.on_wait(True)
            try:
                async with self._progress:
                    await self._progress.wait_for(lambda: len(self.sent) >= self._waits[location])
            finally:
                self.on_wait(False)
        self.sending += 1
        self.most_sending = max(self.most_sending, self.sending)
        if set(self._waits) <= set(self.sent):
            self.most_after_waits = max(self.most_after_waits, self.sending)
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        self.sending -= 1
        self.sent.append(location)
        async with self._progress:
            self._progress.notify_all()
        return Outcome(item.key, Status.SENT, 1, 201, f"aia_fdbk_{item.key[:32]}")

    def not_sent(self, item: Accepted, reason: str) -> Outcome:
        raise AssertionError(f"{item.location} not sent: {reason}")


def _name(i: int) -> str:
    return f"in.csv:{i}"


async def _run(tmp_path: Path, concurrency: int, waits: dict[str, int], n: int) -> _Waiting:
    ledger = await open_ledger(str(tmp_path / "ledger.sqlite3"), "run-1", command="run")
    spares = Spares(concurrency)
    delivery = _Waiting(waits, spares.waiting)
    summary = Summary("run", "run-1")
    stages = Stages(
        ledger,
        cast(Delivery, delivery),
        RunControl(),
        summary,
        Progress(),
        concurrency,
        spares=spares,
    )
    records = [
        Accepted.of(_name(i), FeedbackRecord(assistant_id="aia_asst_t", session_id=f"s{i}"))
        for i in range(n)
    ]

    async def batches() -> AsyncIterator[list[Item]]:
        for start in range(0, n, 10):
            yield list(records[start : start + 10])

    try:
        await asyncio.wait_for(stages.run(batches()), DEADLINE)
        counts: dict[str, Any] = await ledger.counts()
    finally:
        await ledger.close()
    assert summary.sent == n
    assert summary.failed == 0
    assert counts.get("sent") == n, counts
    assert sorted(delivery.sent) == sorted(_name(i) for i in range(n))  # each once
    return delivery


async def test_one_slot_and_a_waiting_record_the_others_go_meanwhile(tmp_path: Path) -> None:
    # One slot: without a spare, the wait (for all the others) would never end.
    delivery = await _run(tmp_path, 1, {_name(0): 19}, 20)
    assert delivery.sent[-1] == _name(0)


async def test_as_many_waits_as_spares_are_covered(tmp_path: Path) -> None:
    # Two slots, two records waiting for all the others: two spares stand in.
    waits = {_name(0): 28, _name(1): 28}
    delivery = await _run(tmp_path, 2, waits, 30)
    assert set(delivery.sent[-2:]) == set(waits)
    assert WORKERS_PER_SLOT == 2


async def test_a_spare_ends_when_the_wait_it_stood_in_for_is_over(tmp_path: Path) -> None:
    # The waits end early in the run: a spare left running would put one record more than
    # there are workers per slot on the wire for the rest of it (flow control's slots are
    # not in this test: the workers alone bound what is on the wire here).
    waits = {_name(0): 3, _name(15): 20}
    delivery = await _run(tmp_path, 3, waits, 60)
    assert delivery.most_sending >= 3
    assert delivery.most_after_waits == 3
    assert delivery.sent.index(_name(0)) >= 3
    assert delivery.sent.index(_name(15)) >= 20
