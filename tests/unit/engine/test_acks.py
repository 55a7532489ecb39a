"""Acknowledgement points, end to end: an in-memory queue source, the real CLI, a real SQLite
ledger and the fake API over a socket. Each ack is checked against the ledger state it saw."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import memory_source
import pytest
from click.testing import CliRunner
from conftest import Cli, assert_counts_add_up, make_rows
from memory_source import MemorySource

import pipeline.sources
from pipeline.cli import cli as cli_main
from pipeline.engine.validate import Validator
from pipeline.errors import LedgerError
from pipeline.fake import FakeServer, FakeState, Faults
from pipeline.ledger import SqliteLedger
from pipeline.models import RawRecord

OK = "aia_asst_test"


@pytest.fixture(autouse=True)
def _mem_scheme(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # Registered like a broker module: one registry line.
    monkeypatch.setitem(pipeline.sources._BROKERS, "mem", "memory_source")
    monkeypatch.setenv("FEEDBACK_PIPELINE_SETTLE", "0.05")
    memory_source.SOURCES.clear()
    memory_source.OPENED.clear()
    yield
    memory_source.SOURCES.clear()


def _cli(tmp_path: Path, state: FakeState) -> Iterator[Cli]:
    with FakeServer(state) as server:
        yield Cli(server, tmp_path)


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Cli]:
    yield from _cli(tmp_path, FakeState(faults=Faults(seed=7), known_assistants=[OK]))


def _source(cli: Cli, rows: list[dict[str, Any]], **kwargs: Any) -> MemorySource:
    source = MemorySource(rows, cli.ledger, **kwargs)
    memory_source.SOURCES["q"] = source
    return source


def _row(session: str, assistant: str = OK, score: str = "0.5") -> dict[str, Any]:
    return {"assistant_id": assistant, "session_id": session, "score": score}


def test_each_record_is_acked_once_the_ledger_holds_its_final_state(
    cli: Cli, tmp_path: Path
) -> None:
    earlier = tmp_path / "earlier.jsonl"
    earlier.write_text(json.dumps(_row("s1")) + "\n")
    assert cli.run(str(earlier)).exit_code == 0
    rows = [
        _row("s0"),  # 0 sent
        _row("s1"),  # 1 skipped: sent by the earlier run
        _row("s0"),  # 2 duplicate of 0
        _row("s3", score="2"),  # 3 invalid
        _row("s4", assistant="aia_asst_missing"),  # 4 failed for good (HTTP 404)
        _row("s5"),  # 5 sent
    ]
    source = _source(cli, rows)

    result = cli.run("mem://q", "--drain", "--report", str(tmp_path / "report.json"))

    assert result.exit_code == 1, result.output
    acks = source.acks_by_handle()
    assert sorted(acks) == [0, 1, 2, 3, 4, 5]
    # Sent: acked after the outcome commit (the ledger already says sent), plainly.
    assert (acks[0].state, acks[0].dead_letter) == ("sent", None)
    assert (acks[5].state, acks[5].dead_letter) == ("sent", None)
    # Skipped and duplicate: right after the claim commit, which holds the key.
    assert (acks[1].state, acks[1].dead_letter) == ("sent", None)
    assert acks[2].state is not None
    assert acks[2].dead_letter is None
    # Invalid and permanently failed: dead-lettered with their reason, after their commit.
    assert acks[3].state == "invalid"
    assert acks[3].dead_letter is not None
    assert acks[3].dead_letter.startswith("invalid: score")
    assert acks[4].state == "failed"
    assert acks[4].dead_letter is not None
    assert "HTTP 404" in acks[4].dead_letter
    assert source.closed
    # Options reach the source as built from the settings.
    [(url, options)] = memory_source.OPENED
    assert url == "mem://q"
    assert options.drain
    assert options.claim_idle == 60.0
    # The API holds exactly the sent records, once each.
    counts = cli.server.state.content_counts()
    assert sorted(key[1] for key in counts) == ["s0", "s1", "s5"]
    assert cli.server.state.duplicates() == {}
    assert_counts_add_up(cli.report())


def test_unknown_outcomes_are_acked_only_once_reconcile_finds_them(cli: Cli) -> None:
    # Every request is stored and then answered with a reset: each outcome is unknown.
    cli.server.state.update_faults({"reset_rate": 1.0})
    source = _source(cli, [_row(f"s{i}") for i in range(4)])

    result = cli.run("mem://q", "--drain")

    assert result.exit_code == 0, result.output
    assert cli.server.state.resets == 4
    acks = source.acks_by_handle()
    assert sorted(acks) == [0, 1, 2, 3]
    # Never while unknown: each ack came once reconciliation had recorded it as sent.
    assert {a.state for a in acks.values()} == {"sent"}
    assert {r["state"] for r in cli.ledger_rows().values()} == {"sent"}


def test_unknown_outcomes_not_stored_are_not_acked(cli: Cli) -> None:
    # A 500 may or may not have stored the record; here it did not, and reconcile says so.
    cli.server.state.update_faults({"error_status": 500})
    source = _source(cli, [_row(f"s{i}") for i in range(3)])

    result = cli.run("mem://q", "--drain")

    assert result.exit_code == 1, result.output
    assert source.acked == []  # the queue delivers them again; the ledger lets them through
    assert {r["state"] for r in cli.ledger_rows().values()} == {"failed"}
    assert cli.server.state.stored_count == 0


def test_records_cut_off_in_flight_are_never_acked(tmp_path: Path) -> None:
    state = FakeState(faults=Faults(latency_ms=2000))
    for cli in _cli(tmp_path, state):

        async def interrupt_twice(stop: asyncio.Event) -> None:
            deadline = time.monotonic() + 30
            while state.posts_received < 3:
                assert time.monotonic() < deadline, "the requests never went out"
                await asyncio.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)  # stop taking records, let requests finish
            await stop.wait()
            os.kill(os.getpid(), signal.SIGINT)  # ... no: cut them off now

        source = _source(cli, [_row(f"s{i}") for i in range(6)], after_first=interrupt_twice)

        result = cli.run("mem://q", "--grace", "60")

        assert result.exit_code == 3, result.output
        assert "interrupted by SIGINT" in result.output
        assert "cut off" in result.output
        assert source.acked == []
        assert {r["state"] for r in cli.ledger_rows().values()} == {"in_flight"}
        assert len(cli.ledger_rows()) == 3


def test_an_ack_that_fails_ends_the_run_with_its_summary(cli: Cli, tmp_path: Path) -> None:
    _source(cli, [_row(f"s{i}") for i in range(6)], fail_ack=True)

    result = cli.run("mem://q", "--drain", "--report", str(tmp_path / "report.json"))

    assert result.exit_code == 3, result.output
    assert "run: read" in result.output  # the summary
    assert "aborted: ack to mem failed: ConnectionError: broker connection lost" in result.output
    assert "internal error" not in result.output
    report = cli.report()
    assert_counts_add_up(report)
    # Whatever was sent is in the ledger as sent: the entries not acked are redelivered.
    sent = [r for r in cli.ledger_rows().values() if r["state"] == "sent"]
    assert len(sent) == report["sent"] == cli.server.state.stored_count


def test_a_heartbeat_that_fails_ends_the_run_with_its_summary(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: SqliteLedger) -> None:
        raise LedgerError("disk I/O error")

    monkeypatch.setattr(SqliteLedger, "heartbeat", broken)
    rows = make_rows(20)
    _source(cli, rows)

    result = cli.run("mem://q", "--drain", "--report", str(tmp_path / "report.json"))

    assert result.exit_code == 3, result.output
    assert "run: read" in result.output
    assert "aborted: heartbeat failed: LedgerError: disk I/O error" in result.output
    assert "internal error" not in result.output
    assert_counts_add_up(cli.report())


@pytest.mark.parametrize(
    ("mode", "exit_code"),
    [
        # Following (a service): the signal is its normal end; what it had not sent yet is
        # no failure of the run, it stays on the queue.
        ((), 0),
        # Draining (a job): a signal still interrupts it.
        (("--drain",), 3),
    ],
)
def test_records_not_sent_because_the_run_stopped_are_not_acked(
    tmp_path: Path, mode: tuple[str, ...], exit_code: int
) -> None:
    state = FakeState(faults=Faults(latency_ms=300))
    for cli in _cli(tmp_path, state):

        async def interrupt(stop: asyncio.Event) -> None:
            deadline = time.monotonic() + 30
            while state.posts_received < 1:
                assert time.monotonic() < deadline, "no request went out"
                await asyncio.sleep(0.01)
            os.kill(os.getpid(), signal.SIGINT)  # the request on the wire may finish
            await stop.wait()

        rows = [_row(f"s{i}") for i in range(6)]
        source = _source(cli, rows, batch_size=6, after_first=interrupt)
        report = str(tmp_path / "report.json")

        result = cli.run(
            "mem://q", *mode, "--concurrency", "1", "--grace", "60", "--report", report
        )

        assert result.exit_code == exit_code, result.output
        states = {h: cli.ledger_rows()[source.key(h)]["state"] for h in range(6)}
        sent = {h for h, s in states.items() if s == "sent"}
        assert sent
        assert len(sent) < 6
        # The ledger holds the rest as failed "not sent": a later run sends them.
        assert set(states.values()) == {"sent", "failed"}
        # Only the final states were acked; "not sent" entries come again from the queue.
        assert set(source.acks_by_handle()) == sent
        assert state.stored_count == len(sent)
        summary = cli.report()
        assert_counts_add_up(summary)
        if exit_code == 0:
            assert "stopped by SIGINT (the normal end of a following run)" in result.output
            assert (summary["released"], summary["failed"]) == (6 - len(sent), 0)
            assert summary["aborted"] is None
        else:
            assert "aborted: interrupted by SIGINT" in result.output
            # Not sent because the run stopped: counted as stopped, no failure (issue 23).
            assert (summary["released"], summary["stopped_records"]) == (0, 6 - len(sent))
            assert summary["failed"] == 0


def test_a_following_run_settles_its_unknowns_and_logs_as_it_goes(cli: Cli) -> None:
    cli.server.state.update_faults({"reset_rate": 1.0})
    rows = [_row(f"s{i}") for i in range(4)]

    async def stop_once_all_acked(stop: asyncio.Event) -> None:
        # Only the periodic reconcile can ack these while the run goes on.
        deadline = time.monotonic() + 30
        while len(source.acked) < len(rows):
            assert time.monotonic() < deadline, "the unknown outcomes were never settled"
            await asyncio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)

    source = _source(cli, rows, batch_size=4, follow=True, after_first=stop_once_all_acked)

    result = cli.run("mem://q", "--reconcile-every", "0.05", "--log-every", "0.05")

    assert result.exit_code == 0, result.output  # a signal is a following run's normal end
    assert "stopped by SIGINT" in result.output
    assert {a.state for a in source.acks_by_handle().values()} == {"sent"}
    assert "INFO    progress: read 4, " in result.output  # the periodic progress line
    assert cli.server.state.stored_count == 4
    assert cli.server.state.duplicates() == {}


def test_enqueue_publishes_valid_records_with_their_key(tmp_path: Path) -> None:
    memory_source.PUBLISHERS.clear()
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(_row("s1")) + "\n" + json.dumps(_row("s2", score="9")) + "\n")

    result = CliRunner().invoke(cli_main, ["enqueue", str(path), "--to", "mem://out"])

    assert result.exit_code == 1, result.output  # one invalid record
    assert f"{path}:2: invalid: score" in result.output
    publisher = memory_source.PUBLISHERS["out"]
    [[entry]] = publisher.published
    expected = Validator(default_assistant_id=None)(RawRecord("x", _row("s1")))
    assert entry == {"assistant_id": OK, "session_id": "s1", "score": 0.5, "key": expected.key}
    assert publisher.closed


def test_a_source_that_fails_ends_the_run_with_its_summary(
    cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def lost(self: MemorySource, stop: asyncio.Event) -> None:
        raise ConnectionError("connection to the broker lost")

    source = _source(cli, [_row(f"s{i}") for i in range(7)], after_first=None)
    monkeypatch.setattr(source, "after_first", lambda stop: lost(source, stop))

    result = cli.run("mem://q", "--drain", "--report", str(tmp_path / "report.json"))

    assert result.exit_code == 3, result.output
    assert "aborted: source mem failed: ConnectionError: connection to the broker lost" in (
        result.output
    )
    assert "internal error" not in result.output
    report = cli.report()
    assert_counts_add_up(report)
    # The batch read before the failure was claimed, then not sent as the run stopped: those
    # entries are not acked (the queue delivers them again) and the ledger lets them through.
    assert (report["read"], report["stopped_records"], cli.server.state.stored_count) == (3, 3, 0)
    assert source.acked == []
