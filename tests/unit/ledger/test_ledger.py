"""The SQLite ledger: claim decisions, outcomes, replay, durability and refusing bad files."""

from __future__ import annotations

import hashlib
import json
import sqlite3
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.errors import LedgerError
from pipeline.ledger import Decision, SqliteLedger
from pipeline.models import Accepted, FeedbackRecord, Outcome, Rejection, Status

ASSISTANT = "aia_asst_ledger"
SEND, SKIP, DUPLICATE, INVALID = Decision.SEND, Decision.SKIP, Decision.DUPLICATE, Decision.INVALID


class Ledgers:
    """Opens ledgers on one path and closes whatever a test left open."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._open: list[SqliteLedger] = []

    async def open(self, run_id: str, *, read_only: bool = False) -> SqliteLedger:
        ledger = await SqliteLedger.open(str(self.path), run_id, command="run", read_only=read_only)
        self._open.append(ledger)
        return ledger

    async def close(self, ledger: SqliteLedger, summary: str | None = None) -> None:
        self._open.remove(ledger)
        await ledger.close(summary)

    async def close_all(self) -> None:
        while self._open:
            await self.close(self._open[-1])

    def rows(self) -> dict[str, dict[str, Any]]:
        db = sqlite3.connect(self.path)
        try:
            db.row_factory = sqlite3.Row
            return {row["key"]: dict(row) for row in db.execute("SELECT * FROM records")}
        finally:
            db.close()


@pytest.fixture
async def ledgers(tmp_path: Path) -> AsyncIterator[Ledgers]:
    factory = Ledgers(tmp_path / "ledger.sqlite3")
    yield factory
    await factory.close_all()


def item(session: str, *, score: float | None = 0.5, line: int = 2, **extra: Any) -> Accepted:
    record = FeedbackRecord(assistant_id=ASSISTANT, session_id=session, score=score, **extra)
    return Accepted.of(f"in.csv:{line}", record)


def sent(a: Accepted, feedback_id: str = "aia_fdbk_1") -> Outcome:
    return Outcome(a.key, Status.SENT, 1, 201, feedback_id)


def failed(a: Accepted, status: int = 400) -> Outcome:
    return Outcome(a.key, Status.FAILED, 2, status, None, 20001, "bad request")


async def collect(ledger: SqliteLedger, batch_size: int = 500) -> list[list[Accepted]]:
    return [batch async for batch in ledger.failed(batch_size)]


# --- decisions ---------------------------------------------------------------------------------


async def test_new_records_are_sent_and_repeats_in_a_batch_are_duplicates(
    ledgers: Ledgers,
) -> None:
    ledger = await ledgers.open("run-1")
    a, b = item("a"), item("b")

    assert await ledger.claim([a, b, a]) == [SEND, SEND, DUPLICATE]
    assert await ledger.counts() == {"in_flight": 2}


async def test_repeat_in_a_later_batch_of_the_same_run_is_a_duplicate(ledgers: Ledgers) -> None:
    ledger = await ledgers.open("run-1")
    a = item("a")
    assert await ledger.claim([a]) == [SEND]
    await ledger.record([sent(a)])

    assert await ledger.claim([a, item("b")]) == [DUPLICATE, SEND]
    assert await ledger.counts() == {"sent": 1, "in_flight": 1}


async def test_failed_record_repeated_in_the_same_run_is_still_a_duplicate(
    ledgers: Ledgers,
) -> None:
    ledger = await ledgers.open("run-1")
    a = item("a")
    await ledger.claim([a])
    await ledger.record([failed(a)])

    assert await ledger.claim([a]) == [DUPLICATE]


async def test_rejections_are_recorded_invalid(ledgers: Ledgers) -> None:
    ledger = await ledgers.open("run-1")
    rejection = Rejection("in.csv:3", "score: Input should be a finite number (got 'nan')")

    assert await ledger.claim([rejection, item("a")]) == [INVALID, SEND]
    assert await ledger.counts() == {"invalid": 1, "in_flight": 1}
    row = ledgers.rows()[rejection.key]
    assert row["state"] == "invalid"
    assert row["location"] == "in.csv:3"
    assert row["error_message"] == rejection.reason
    assert row["body"] is None


async def test_decisions_across_runs(ledgers: Ledgers) -> None:
    done, bad, crashed, new = item("done"), item("bad"), item("crashed"), item("new")
    first = await ledgers.open("run-1")
    assert await first.claim([done, bad, crashed]) == [SEND, SEND, SEND]
    await first.record([sent(done), failed(bad)])  # "crashed" stays in flight
    await ledgers.close(first)

    second = await ledgers.open("run-2")

    # "crashed" may have reached the API: not sent again until reconciliation settles it.
    assert await second.claim([done, bad, crashed, new, done]) == [
        SKIP,
        SEND,
        Decision.UNCERTAIN,
        SEND,
        SKIP,
    ]
    assert await second.counts() == {"sent": 1, "in_flight": 3}


async def test_reclaimed_failed_row_is_reset(ledgers: Ledgers) -> None:
    a = item("a")
    first = await ledgers.open("run-1")
    await first.claim([a])
    await first.record([failed(a)])
    await ledgers.close(first)

    second = await ledgers.open("run-2")
    await second.claim([a])

    row = ledgers.rows()[a.key]
    assert row["state"] == "in_flight"
    assert row["run_id"] == "run-2"
    assert row["attempts"] == 0
    assert row["http_status"] is None
    assert row["error_code"] is None
    assert row["error_message"] is None


async def test_fixed_invalid_row_leaves_no_invalid_state_behind(ledgers: Ledgers) -> None:
    first = await ledgers.open("run-1")
    await first.claim([Rejection("in.csv:2", "session_id: Field required")])
    await ledgers.close(first)

    second = await ledgers.open("run-2")
    assert await second.claim([item("a", line=2)]) == [SEND]

    assert await second.counts() == {"in_flight": 1}


# --- outcomes ----------------------------------------------------------------------------------


async def test_outcomes_are_stored(ledgers: Ledgers) -> None:
    ledger = await ledgers.open("run-1")
    good, bad = item("good", text="thanks"), item("bad")
    await ledger.claim([good, bad])

    await ledger.record(
        [
            Outcome(good.key, Status.SENT, 3, 201, "aia_fdbk_123"),
            Outcome(bad.key, Status.FAILED, 1, 400, None, 20001, "Invalid score"),
        ]
    )

    rows = ledgers.rows()
    assert rows[good.key] | {"updated_at": None} == {
        "key": good.key,
        "state": "sent",
        "assistant_id": ASSISTANT,
        "body": None,  # not needed once the API holds it
        "location": "in.csv:2",
        "run_id": "run-1",
        "attempts": 3,
        "http_status": 201,
        "feedback_id": "aia_fdbk_123",
        "error_code": None,
        "error_message": None,
        "updated_at": None,
        "fields": None,
        "retired_from": None,
        "retired_reason": None,
    }
    assert rows[bad.key]["state"] == "failed"
    assert rows[bad.key]["attempts"] == 1
    assert rows[bad.key]["http_status"] == 400
    assert rows[bad.key]["error_code"] == 20001
    assert rows[bad.key]["error_message"] == "Invalid score"
    assert json.loads(rows[bad.key]["body"]) == bad.record.body()
    assert await ledger.counts() == {"sent": 1, "failed": 1}


async def test_body_is_kept_until_sent(ledgers: Ledgers) -> None:
    ledger = await ledgers.open("run-1")
    a = item("a", text="héllo", message_id="aia_msg_1")
    await ledger.claim([a])

    assert json.loads(ledgers.rows()[a.key]["body"]) == {
        "session_id": "a",
        "message_id": "aia_msg_1",
        "score": 0.5,
        "text": "héllo",
    }
    await ledger.record([sent(a)])
    assert ledgers.rows()[a.key]["body"] is None


async def test_claim_is_durable_before_any_outcome(ledgers: Ledgers) -> None:
    ledger = await ledgers.open("run-1")
    a, b = item("a"), item("b")

    await ledger.claim([a, b])

    # Another connection, as after a crash: the claims are committed, not just cached.
    rows = ledgers.rows()
    assert {k: r["state"] for k, r in rows.items()} == {a.key: "in_flight", b.key: "in_flight"}
    assert rows[a.key]["body"] is not None


async def test_counts_empty_ledger(ledgers: Ledgers) -> None:
    ledger = await ledgers.open("run-1")
    assert await ledger.counts() == {}


# --- replay ------------------------------------------------------------------------------------


async def test_failed_yields_stored_records_for_replay(ledgers: Ledgers) -> None:
    keyed = item("k", text="t", message_id="aia_msg_9", key="explicit-key")
    bad, good = item("bad", score=None), item("good")
    first = await ledgers.open("run-1")
    await first.claim([keyed, bad, good])
    await first.record([failed(keyed), failed(bad, 503), sent(good)])
    await ledgers.close(first)

    second = await ledgers.open("run-2")
    batches = await collect(second, batch_size=1)

    assert [len(b) for b in batches] == [1, 1]
    replayed = {a.key: a for batch in batches for a in batch}
    assert set(replayed) == {keyed.key, bad.key}
    assert replayed[keyed.key].key == "explicit-key"
    for original in (keyed, bad):
        again = replayed[original.key]
        assert again.record.body() == original.record.body()
        assert again.record.assistant_id == ASSISTANT
        assert again.location == original.location


async def test_failed_skips_rows_this_run_already_handled(ledgers: Ledgers) -> None:
    a, b = item("a"), item("b")
    first = await ledgers.open("run-1")
    await first.claim([a, b])
    await first.record([failed(a), failed(b)])
    assert await collect(first) == []  # failed in this very run
    await ledgers.close(first)

    second = await ledgers.open("run-2")
    (batch,) = await collect(second)
    assert await second.claim(batch) == [SEND, SEND]
    await second.record([failed(a), sent(b)])

    assert await collect(second) == []
    await ledgers.close(second)

    third = await ledgers.open("run-3")
    assert [[x.key for x in batch] for batch in await collect(third)] == [[a.key]]


# --- the file ----------------------------------------------------------------------------------


async def test_ledger_file_is_private(ledgers: Ledgers) -> None:
    ledger = await ledgers.open("run-1")
    await ledger.claim([item("a")])

    assert stat.S_IMODE(ledgers.path.stat().st_mode) == 0o600
    wal = ledgers.path.with_name(ledgers.path.name + "-wal")
    if wal.exists():
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600


async def test_ledger_in_a_new_directory(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "ledger.sqlite3"
    ledger = await SqliteLedger.open(str(path), "run-1", command="run")
    try:
        assert await ledger.claim([item("a")]) == [SEND]
    finally:
        await ledger.close()
    assert path.exists()


async def test_newer_schema_is_refused(ledgers: Ledgers) -> None:
    db = sqlite3.connect(ledgers.path)
    db.execute("PRAGMA user_version = 99")
    db.close()

    with pytest.raises(LedgerError, match="newer"):
        await ledgers.open("run-1")


async def test_other_sqlite_database_is_refused(ledgers: Ledgers) -> None:
    db = sqlite3.connect(ledgers.path)
    db.execute("CREATE TABLE customers (id INTEGER PRIMARY KEY)")
    db.commit()
    db.close()

    with pytest.raises(LedgerError, match="not a feedback-pipeline ledger"):
        await ledgers.open("run-1")
    db = sqlite3.connect(ledgers.path)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")]
    finally:
        db.close()
    assert tables == ["customers"]


async def test_garbage_file_is_refused(ledgers: Ledgers) -> None:
    garbage = b"this is not a database, just some text\n" * 200
    ledgers.path.write_bytes(garbage)

    with pytest.raises(LedgerError, match=str(ledgers.path)):
        await ledgers.open("run-1")
    assert ledgers.path.read_bytes() == garbage


async def test_failed_open_releases_the_lock(ledgers: Ledgers) -> None:
    ledgers.path.write_bytes(b"garbage" * 1000)
    with pytest.raises(LedgerError):
        await ledgers.open("run-1")

    ledgers.path.unlink()
    ledger = await ledgers.open("run-2")
    assert await ledger.counts() == {}


async def test_second_writer_is_refused(ledgers: Ledgers) -> None:
    first = await ledgers.open("run-1")

    with pytest.raises(LedgerError, match="in use"):
        await ledgers.open("run-2")

    await ledgers.close(first)
    second = await ledgers.open("run-3")
    assert await second.counts() == {}


async def test_read_only_reader_does_not_take_the_lock(ledgers: Ledgers) -> None:
    writer = await ledgers.open("run-1")
    await writer.claim([item("a")])

    reader = await ledgers.open("dry-1", read_only=True)

    assert await reader.counts() == {"in_flight": 1}


async def test_read_only_on_missing_path_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "none" / "ledger.sqlite3"
    a = item("a")
    ledger = await SqliteLedger.open(str(path), "dry-1", command="run", read_only=True)
    try:
        assert await ledger.claim([a, a, Rejection("in.csv:3", "bad")]) == [
            SEND,
            DUPLICATE,
            INVALID,
        ]
        await ledger.record([sent(a)])
        assert await ledger.counts() == {}
        assert await collect(ledger) == []
    finally:
        await ledger.close("dry run")

    assert list(tmp_path.iterdir()) == []  # noqa: ASYNC240 - a check, nothing else runs


async def test_read_only_writes_nothing_to_an_existing_ledger(ledgers: Ledgers) -> None:
    a, b = item("a"), item("b")
    first = await ledgers.open("run-1")
    await first.claim([a])
    await first.record([failed(a)])
    await ledgers.close(first, "first")
    before = hashlib.sha256(ledgers.path.read_bytes()).hexdigest()

    dry = await ledgers.open("dry-1", read_only=True)
    assert await dry.claim([a, b]) == [SEND, SEND]
    await dry.record([sent(a), sent(b)])
    assert [[x.key for x in batch] for batch in await collect(dry)] == [[a.key]]
    assert await dry.counts() == {"failed": 1}
    await ledgers.close(dry, "dry")

    assert hashlib.sha256(ledgers.path.read_bytes()).hexdigest() == before
    wal = ledgers.path.with_name(ledgers.path.name + "-wal")
    assert not wal.exists() or wal.stat().st_size == 0
    assert {k: r["state"] for k, r in ledgers.rows().items()} == {a.key: "failed"}
    db = sqlite3.connect(ledgers.path)
    try:
        runs = [r[0] for r in db.execute("SELECT run_id FROM runs")]
    finally:
        db.close()
    assert runs == ["run-1"]


async def test_runs_are_recorded_with_their_summary(ledgers: Ledgers) -> None:
    ledger = await ledgers.open("run-1")
    await ledgers.close(ledger, "sent 0")

    db = sqlite3.connect(ledgers.path)
    try:
        rows = db.execute("SELECT run_id, command, finished_at, summary FROM runs").fetchall()
    finally:
        db.close()
    assert len(rows) == 1
    run_id, command, finished_at, summary = rows[0]
    assert (run_id, command, summary) == ("run-1", "run", "sent 0")
    assert finished_at is not None
