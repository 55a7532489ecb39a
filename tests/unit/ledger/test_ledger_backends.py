"""The ledger protocol's semantics, the same on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pg_helpers import PgSchema, pg_schema

from pipeline.ledger import Decision, Ledger, open_ledger
from pipeline.ledger.base import RecordFilter
from pipeline.models import Accepted, FeedbackRecord, Outcome, Rejection, Status

__all__ = ["pg_schema"]

SEND, SKIP, DUPLICATE, INVALID = Decision.SEND, Decision.SKIP, Decision.DUPLICATE, Decision.INVALID
UNCERTAIN = Decision.UNCERTAIN


class Ledgers:
    """Opens ledgers on one URL and closes whatever a test left open."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._open: list[Ledger] = []

    async def __call__(
        self, run_id: str, *, read_only: bool = False, command: str = "run"
    ) -> Ledger:
        ledger = await open_ledger(self.url, run_id, command=command, read_only=read_only)
        self._open.append(ledger)
        return ledger

    async def close(self, ledger: Ledger, summary: str | None = None) -> None:
        self._open.remove(ledger)
        await ledger.close(summary)

    async def close_all(self) -> None:
        while self._open:
            await self.close(self._open[-1])


@pytest.fixture(params=["sqlite", "postgres"])
async def opener(
    request: pytest.FixtureRequest, tmp_path: Path, pg_schema: PgSchema
) -> AsyncIterator[Ledgers]:
    url = str(tmp_path / "ledger.sqlite3") if request.param == "sqlite" else pg_schema.url()
    ledgers = Ledgers(url)
    yield ledgers
    await ledgers.close_all()


def item(session: str, *, line: int = 2, score: float = 0.5) -> Accepted:
    record = FeedbackRecord(assistant_id="aia_asst_l", session_id=session, score=score)
    return Accepted.of(f"in.csv:{line}", record)


def sent(a: Accepted, fid: str = "aia_fdbk_1") -> Outcome:
    return Outcome(a.key, Status.SENT, 1, 201, fid)


def failed(a: Accepted, status: int = 503) -> Outcome:
    return Outcome(a.key, Status.FAILED, 2, status, None, 20001, "no")


async def test_decisions_in_one_run(opener: Ledgers) -> None:
    ledger = await opener("r1")
    a, b = item("s1"), item("s2", line=3)
    bad = Rejection("in.csv:4", "score: not a number", None, {"score": "x"})
    assert await ledger.claim([a, b, a, bad]) == [SEND, SEND, DUPLICATE, INVALID]
    assert await ledger.claim([a]) == [DUPLICATE]
    await ledger.record([sent(a), failed(b)])
    assert await ledger.claim([b]) == [DUPLICATE]  # failed in this run: not sent again
    assert await ledger.counts() == {"sent": 1, "failed": 1, "invalid": 1}


async def test_decisions_across_runs_and_outcome_columns(opener: Ledgers) -> None:
    first = await opener("r1")
    a, b, c = item("s1"), item("s2", line=3), item("s3", line=4)
    await first.claim([a, b, c])
    await first.record([sent(a, "aia_fdbk_9"), failed(b, 429)])
    await opener.close(first, '{"exit": 0}')
    second = await opener("r2")
    # c stays in flight from a run that ended: uncertain, for reconciliation.
    assert await second.claim([a, b, c]) == [SKIP, SEND, UNCERTAIN]
    assert await second.recorded_ids(["aia_fdbk_9", "aia_fdbk_0"]) == {"aia_fdbk_9"}
    leftovers = await second.uncertain(this_run=False)
    assert [(r.key, run) for r, run in leftovers] == [(c.key, "r1")]
    assert await second.last_seen(["r1"]) is not None
    await second.record([Outcome(b.key, Status.UNKNOWN, 1, 502)])
    own = await second.uncertain(this_run=True)
    assert [r.key for r, _ in own] == [b.key]
    assert own[0][0].record == b.record  # the body is kept until sent
    runs = await second.runs(5)
    assert [r.run_id for r in runs] == ["r2", "r1"]
    assert runs[1].summary == {"exit": 0}
    assert runs[0].finished_at is None


async def test_settle_writes_only_records_still_uncertain(opener: Ledgers) -> None:
    first = await opener("r1")
    a, b, c = item("s1"), item("s2", line=3), item("s3", line=4)
    await first.claim([a, b, c])
    await opener.close(first)  # all three left in flight
    second = await opener("r2")
    assert len(await second.uncertain(this_run=False)) == 3
    not_stored = Outcome(b.key, Status.FAILED, 0, error_message="not stored")
    assert await second.settle([sent(a), not_stored], this_run=False) == {a.key, b.key}
    assert await second.claim([b]) == [SEND]  # not stored: this run sends it
    # A judgment made before those writes (another worker's pass, or an earlier one of
    # this run) comes late: only c is still uncertain, the rest stands.
    late = [failed(a), Outcome(b.key, Status.FAILED, 0), sent(c, "aia_fdbk_3")]
    assert await second.settle(late, this_run=False) == {c.key}
    every = RecordFilter(states=("in_flight", "sent", "failed", "unknown"))
    states = {r.key: r.state async for batch in second.records(every) for r in batch}
    assert states == {a.key: "sent", b.key: "in_flight", c.key: "sent"}
    # This run's own unknown outcomes: only as this_run, never as another run's leftovers.
    await second.record([Outcome(b.key, Status.UNKNOWN, 1, 502)])
    assert await second.settle([sent(b, "aia_fdbk_4")], this_run=False) == set()
    assert await second.settle([sent(b, "aia_fdbk_4")], this_run=True) == {b.key}


async def test_failed_yields_records_for_replay_and_replay_sends_them(opener: Ledgers) -> None:
    first = await opener("r1")
    records = [item(f"s{i}", line=i) for i in range(5)]
    await first.claim(records)
    await first.record([failed(r, 503 if i % 2 else 400) for i, r in enumerate(records)])
    await opener.close(first)
    replay = await opener("r2", command="replay")
    batches = [b async for b in replay.failed(2, retryable_only=True)]
    retryable = sorted(r.key for i, r in enumerate(records) if i % 2)
    assert [a.key for b in batches for a in b] == retryable
    assert all(len(b) <= 2 for b in batches)
    taken = [a for b in batches for a in b]
    assert await replay.claim(taken) == [SEND] * len(taken)
    await replay.record([sent(a, f"aia_fdbk_{a.key[:6]}") for a in taken])
    assert await replay.counts() == {"sent": 2, "failed": 3}


async def test_records_filter_and_retire(opener: Ledgers) -> None:
    ledger = await opener("r1")
    a, b = item("s1"), item("s2", line=3)
    bad = Rejection("other.csv:7", "bad", None, {"session_id": ""})
    await ledger.claim([a, b, bad])
    await ledger.record([failed(a, 400), Outcome(b.key, Status.UNKNOWN, 1, 500)])
    found = [
        r async for batch in ledger.records(RecordFilter(("failed", "invalid"))) for r in batch
    ]
    assert sorted(r.state for r in found) == ["failed", "invalid"]
    by_state = {r.state: r for r in found}
    assert by_state["failed"].body is not None
    assert by_state["failed"].http_status == 400
    assert by_state["invalid"].fields == {"session_id": ""}
    prefixed = RecordFilter(("failed", "invalid"), location_prefix="other.csv")
    assert [r.state async for b in ledger.records(prefixed) for r in b] == ["invalid"]
    assert await ledger.retire(RecordFilter(("failed", "invalid", "unknown")), "won't fix") == 2
    assert await ledger.counts() == {"retired": 2, "unknown": 1}
    await opener.close(ledger)
    again = await opener("r2")
    assert await again.claim([a]) == [SEND]  # a retired record that comes again is sent


async def test_read_only_writes_nothing(opener: Ledgers) -> None:
    writer = await opener("r1")
    a = item("s1")
    await writer.claim([a])
    await writer.record([sent(a)])
    await opener.close(writer)
    reader = await opener("dry", read_only=True)
    b = item("s2", line=3)
    assert await reader.claim([a, b]) == [SKIP, SEND]
    assert await reader.claim([b]) == [DUPLICATE]
    assert await reader.counts() == {"sent": 1}


async def test_read_only_on_an_empty_target_reads_as_empty(opener: Ledgers) -> None:
    reader = await opener("dry", read_only=True)
    assert await reader.counts() == {}
    assert await reader.runs(3) == []
    assert await reader.uncertain(this_run=False) == []


async def test_sent_earlier_finds_only_what_an_earlier_run_sent(opener: Ledgers) -> None:
    first = await opener("r1")
    a, b, c = item("s1"), item("s2", line=3), item("s3", line=4)
    await first.claim([a, b, c])
    await first.record([sent(a), failed(b)])  # c stays in flight
    await opener.close(first)
    second = await opener("r2")
    d = item("s4", line=5)
    await second.claim([d])
    await second.record([sent(d, "aia_fdbk_2")])  # sent, but by this run: a duplicate
    asked = [(x.key, x.location or "") for x in (a, b, c, d)] + [("no-such-key", "x:1")]
    assert await second.sent_earlier(asked) == {a.key}
    assert await second.sent_earlier([]) == set()
    assert await second.counts() == {"sent": 2, "failed": 1, "in_flight": 1}


async def test_sent_earlier_drops_the_invalid_row_a_fixed_line_left(opener: Ledgers) -> None:
    first = await opener("r1")
    a = item("s1", line=2)
    await first.claim([a, Rejection("in.csv:3", "score: not a number", None, {"score": "x"})])
    await first.record([sent(a)])
    await opener.close(first)
    # Line 3 was fixed to a copy of line 2, which is sent: skipped, and its invalid row goes.
    second = await opener("r2")
    assert await second.sent_earlier([(a.key, "in.csv:3")]) == {a.key}
    assert await second.counts() == {"sent": 1}
    # A dry run reads the same answer and changes nothing.
    await opener.close(second)
    dry = await opener("r3", read_only=True)
    assert await dry.sent_earlier([(a.key, "in.csv:9")]) == {a.key}
