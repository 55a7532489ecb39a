"""Ledger schema v3: listing records for people, retiring them, run history, old ledgers."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from ledger_v2 import build_v2_ledger

from pipeline.ledger import Decision, SqliteLedger
from pipeline.ledger.base import LedgerRecord, RecordFilter
from pipeline.models import Accepted, FeedbackRecord, Outcome, Rejection, Status, invalid_key

ASSISTANT = "aia_asst_v3"
PROBLEMS = RecordFilter(("failed", "invalid", "unknown"))


@pytest.fixture
async def path(tmp_path: Path) -> Path:
    return tmp_path / "ledger.sqlite3"


async def opened(path: Path, run_id: str, *, read_only: bool = False) -> SqliteLedger:
    return await SqliteLedger.open(str(path), run_id, command="run", read_only=read_only)


def accepted(session: str, line: int) -> Accepted:
    record = FeedbackRecord(assistant_id=ASSISTANT, session_id=session, score=0.5, text="t")
    return Accepted.of(f"in.csv:{line}", record)


async def listed(ledger: SqliteLedger, which: RecordFilter, size: int = 500) -> list[LedgerRecord]:
    return [r async for batch in ledger.records(which, size) for r in batch]


async def fill(path: Path) -> tuple[Accepted, Accepted, Accepted, Rejection]:
    """One run: a 400, a 503 that ran out of attempts, an unknown, and an invalid row."""
    rejected, exhausted, unsure = accepted("s1", 2), accepted("s2", 3), accepted("s3", 4)
    bad = Rejection("in.csv:5", "score: too high", fields={"session_id": "s4", "score": "7"})
    ledger = await opened(path, "r1")
    try:
        await ledger.claim([rejected, exhausted, unsure, bad])
        await ledger.record(
            [
                Outcome(rejected.key, Status.FAILED, 1, 400, None, 20001, "Invalid score"),
                Outcome(exhausted.key, Status.FAILED, 5, 503, None, 20503, "unavailable"),
                Outcome(unsure.key, Status.UNKNOWN, 1, 502, None, None, "bad gateway"),
            ]
        )
    finally:
        await ledger.close('{"exit_code": 1}')
    return rejected, exhausted, unsure, bad


async def test_records_list_problems_with_what_a_fix_needs(path: Path) -> None:
    rejected, exhausted, unsure, bad = await fill(path)
    ledger = await opened(path, "reader", read_only=True)
    try:
        rows = {r.key: r for r in await listed(ledger, PROBLEMS, size=1)}  # paged one by one
    finally:
        await ledger.close()

    assert set(rows) == {rejected.key, exhausted.key, unsure.key, bad.key}
    first = rows[rejected.key]
    assert (first.state, first.location, first.http_status, first.error_code, first.reason) == (
        "failed",
        "in.csv:2",
        400,
        20001,
        "Invalid score",
    )
    assert first.columns() == {
        "assistant_id": ASSISTANT,
        "session_id": "s1",
        "message_id": None,
        "score": 0.5,
        "text": "t",
        "key": rejected.key,
    }
    invalid = rows[bad.key]
    assert (invalid.state, invalid.location, invalid.reason) == (
        "invalid",
        "in.csv:5",
        "score: too high",
    )
    # The ledger key of an invalid row names its location: it is never exported as a key.
    assert invalid.columns()["key"] is None
    assert (invalid.columns()["session_id"], invalid.columns()["score"]) == ("s4", "7")


async def test_exact_locations_do_not_match_longer_ones(path: Path) -> None:
    ledger = await opened(path, "r1")
    try:
        for line in (3, 30, 31):
            await ledger.claim([Rejection(f"in.csv:{line}", "bad")])
        exact = await listed(ledger, RecordFilter(("invalid",), locations=("in.csv:3",)))
        prefixed = await listed(ledger, RecordFilter(("invalid",), location_prefix="in.csv:3"))
        retired = await ledger.retire(RecordFilter(("invalid",), locations=("in.csv:3",)), "x")
    finally:
        await ledger.close()
    assert [r.location for r in exact] == ["in.csv:3"]
    assert len(prefixed) == 3
    assert retired == 1


async def test_records_filter_by_key_and_location_prefix(path: Path) -> None:
    rejected, exhausted, _, bad = await fill(path)
    ledger = await opened(path, "reader", read_only=True)
    try:
        by_key = await listed(ledger, RecordFilter(("failed",), keys=(exhausted.key, "nope")))
        by_place = await listed(
            ledger, RecordFilter(("failed", "invalid"), location_prefix="in.csv:5")
        )
    finally:
        await ledger.close()
    assert [r.key for r in by_key] == [exhausted.key]
    assert [r.key for r in by_place] == [bad.key]


async def test_failed_retryable_only_leaves_permanent_rejections_out(path: Path) -> None:
    rejected, exhausted, _, _ = await fill(path)
    ledger = await opened(path, "replay")
    try:
        retryable = [a.key async for b in ledger.failed(retryable_only=True) for a in b]
        everything = [a.key async for b in ledger.failed() for a in b]
    finally:
        await ledger.close()
    assert retryable == [exhausted.key]
    assert sorted(everything) == sorted([rejected.key, exhausted.key])


async def test_retire_closes_failed_and_invalid_and_not_unknown(path: Path) -> None:
    rejected, exhausted, unsure, bad = await fill(path)
    ledger = await opened(path, "retire")
    try:
        n = await ledger.retire(
            RecordFilter(("failed", "invalid", "unknown", "sent")), "dealt with"
        )
        counts = await ledger.counts()
        retired = await listed(ledger, RecordFilter(("retired",)))
        still = [a async for b in ledger.failed() for a in b]
    finally:
        await ledger.close()
    assert n == 3
    assert counts == {"retired": 3, "unknown": 1}
    assert {(r.key, r.retired_from, r.retired_reason) for r in retired} == {
        (rejected.key, "failed", "dealt with"),
        (exhausted.key, "failed", "dealt with"),
        (bad.key, "invalid", "dealt with"),
    }
    assert still == []  # replay leaves retired records alone


async def test_a_retired_record_that_comes_again_is_sent_and_a_fixed_invalid_row_replaces_it(
    path: Path,
) -> None:
    rejected, _, _, bad = await fill(path)
    ledger = await opened(path, "retire")
    await ledger.retire(RecordFilter(("failed", "invalid")), "abandoned")
    await ledger.close()

    fixed = Accepted.of(
        "in.csv:5", FeedbackRecord(assistant_id=ASSISTANT, session_id="s4", score=0.7)
    )
    ledger = await opened(path, "r2")
    try:
        decisions = await ledger.claim([rejected, fixed])
    finally:
        await ledger.close()
    assert decisions == [Decision.SEND, Decision.SEND]
    db = sqlite3.connect(path)
    try:
        keys = {k for (k,) in db.execute("SELECT key FROM records")}
        state = db.execute(
            "SELECT state, retired_reason FROM records WHERE key = ?", (rejected.key,)
        )
        assert state.fetchone() == ("in_flight", None)
    finally:
        db.close()
    assert invalid_key("in.csv:5") not in keys  # one input record, one state


async def test_a_retired_invalid_row_that_is_still_invalid_is_invalid_again(path: Path) -> None:
    *_, bad = await fill(path)
    ledger = await opened(path, "retire")
    await ledger.retire(RecordFilter(("invalid",)), "later")
    await ledger.close()
    ledger = await opened(path, "r2")
    try:
        assert await ledger.claim([bad]) == [Decision.INVALID]
        assert (await ledger.counts())["invalid"] == 1
    finally:
        await ledger.close()


async def test_runs_newest_first_with_summaries(path: Path) -> None:
    await fill(path)
    ledger = await opened(path, "r2")
    await ledger.heartbeat()
    try:
        runs = await ledger.runs(5)
        holder = await ledger.holder()
    finally:
        await ledger.close()
    assert [r.run_id for r in runs] == ["r2", "r1"]
    assert runs[0].finished_at is None
    assert runs[0].last_seen is not None
    assert runs[1].summary == {"exit_code": 1}
    assert runs[1].finished_at is not None
    assert holder is not None
    assert holder.startswith("pid ")


async def test_holder_is_none_when_no_run_holds_the_ledger(path: Path) -> None:
    await fill(path)
    reader = await opened(path, "reader", read_only=True)
    try:
        assert await reader.holder() is None
        writer = await opened(path, "writer")
        try:
            import os

            assert await reader.holder() == f"pid {os.getpid()}"
        finally:
            await writer.close()
    finally:
        await reader.close()


# --- older ledgers -------------------------------------------------------------------------


def _v2(path: Path, version: int = 2) -> Accepted:
    old = accepted("old", 2)
    body = json.dumps(old.record.body())
    build_v2_ledger(
        path,
        failed=[(old.key, ASSISTANT, body, 400)],
        invalid=[(invalid_key("old.csv:9"), "old.csv:9", "score: bad")],
        version=version,
    )
    return old


@pytest.mark.parametrize("version", [1, 2])
async def test_an_older_ledger_reads_without_migrating(path: Path, version: int) -> None:
    old = _v2(path, version)
    reader = await opened(path, "reader", read_only=True)
    try:
        rows = await listed(reader, PROBLEMS)
        runs = await reader.runs(10)
    finally:
        await reader.close()
    assert {(r.key, r.state, r.fields) for r in rows} == {
        (old.key, "failed", None),
        (invalid_key("old.csv:9"), "invalid", None),
    }
    assert [r.summary for r in runs] == [{"exit_code": 1, "failed": 1}]
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (version,)
    finally:
        db.close()


@pytest.mark.parametrize("version", [1, 2])
async def test_an_older_ledger_is_migrated_by_a_writer_and_keeps_working(
    path: Path, version: int
) -> None:
    old = _v2(path, version)
    ledger = await opened(path, "new")
    try:
        assert await ledger.claim([old]) == [Decision.SEND]
        await ledger.record([Outcome(old.key, Status.FAILED, 1, 422, None, 1, "no")])
        bad = Rejection("new.csv:2", "session_id: missing", fields={"score": "0.1"})
        await ledger.claim([bad])
        n = await ledger.retire(RecordFilter(("failed",)), "gave up")
        rows = {r.key: r for r in await listed(ledger, RecordFilter(("invalid", "retired")))}
        await ledger.heartbeat()
        runs = await ledger.runs(5)
    finally:
        await ledger.close()
    assert n == 1
    assert rows[old.key].retired_from == "failed"
    assert rows[bad.key].fields == {"score": "0.1"}
    assert rows[invalid_key("old.csv:9")].fields is None
    assert [(r.run_id, r.last_seen is not None) for r in runs] == [("new", True), ("old", False)]
    db = sqlite3.connect(path)
    try:
        assert db.execute("PRAGMA user_version").fetchone() == (3,)
    finally:
        db.close()
