"""What an operator of a fleet is told, piece by piece: the shared ledger's schema version 3
(and the migration an older ledger goes through), `status` on a ledger that is not there,
its JSON, the progress line, `enqueue`'s summary, a late lease renewal, and `failures | head`.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner
from conftest import Cli, make_rows, write_csv
from pg_helpers import PgSchema, pg_schema
from redis_helpers import Stream, stream
from unit.ledger.test_lease import Clock, Ledger

from pipeline.cli import cli as cli_main
from pipeline.cli.fleet_view import judge
from pipeline.cli.history import _result, collect
from pipeline.ledger import open_ledger
from pipeline.ledger.fleet import FleetRun, FleetView, Identity
from pipeline.ledger.lease import Lease
from pipeline.ledger.postgres.ledger import PostgresLedger
from pipeline.ledger.postgres.schema import MIGRATIONS
from pipeline.observe.monitor import Monitor, progress_line
from pipeline.observe.summary import Summary
from pipeline.sources.queue_depth import Depth

__all__ = ["pg_schema", "stream"]  # fixtures, used by name


async def test_a_version_2_ledger_is_migrated_to_3_and_read_before_and_after(
    pg_schema: PgSchema,
) -> None:
    # A ledger as version 2 made it, with a run of that version that ended.
    steps = (MIGRATIONS[1] + MIGRATIONS[2]).replace("{s}", "{s}")
    await pg_schema.fetch("CREATE SCHEMA {s}")
    for statement in filter(str.strip, steps.format(s=pg_schema.name).split(";")):
        await pg_schema.fetch(statement)
    await pg_schema.fetch("CREATE TABLE {s}.ledger_version (version INT)")
    await pg_schema.fetch("INSERT INTO {s}.ledger_version VALUES (2)")
    await pg_schema.fetch(
        "INSERT INTO {s}.runs (run_id, command, host, started_at, finished_at, summary) "
        "VALUES ('old', 'run', 'h', '2026-01-01T00:00:00+00:00', '2026-01-01T00:01:00+00:00', "
        """'{{"sent": 3, "exit_code": 0}}')"""
    )
    before = await collect(pg_schema.url(), 5)  # status never migrates: reads version 2
    assert [(r["run_id"], r["state"], r["counts"]) for r in before["runs"]] == [
        ("old", "ended", {"sent": 3})
    ]
    ledger = await open_ledger(pg_schema.url(), "new", command="run")
    assert isinstance(ledger, PostgresLedger)
    try:
        await ledger.introduce(
            Identity(
                pid=4242, consumer="w1", job="j1", source="redis://127.0.0.1:1/0?stream=s&group=g"
            )
        )
        assert await ledger.beat({"read": 7, "in_flight": 2}, settled=True) is None
        after = await collect(pg_schema.url(), 5, job="j1")
    finally:
        await ledger.close()
    [version] = await pg_schema.fetch("SELECT version FROM {s}.ledger_version")
    assert version[0] == 3
    [run] = after["runs"]  # only the job's
    assert (run["run_id"], run["pid"], run["consumer"], run["job"]) == ("new", 4242, "w1", "j1")
    assert run["counts"] == {"read": 7, "in_flight": 2}
    assert run["state"] == "running"
    assert run["last_progress"] is not None
    assert "T" in run["last_seen"]
    assert after["holder"] == [{"run_id": "new", "host": run["host"], "pid": 4242}]
    # The queue it read cannot be reached: said, and the job is not known to be complete.
    assert "reading the queue" in after["queue_error"]
    assert not after["complete"]


def test_status_of_a_postgresql_ledger_that_is_not_there_is_exit_2(
    clean_env: None, pg_schema: PgSchema
) -> None:
    result = CliRunner().invoke(cli_main, ["status", "--ledger", pg_schema.url()])
    assert result.exit_code == 2, result.output
    assert "no ledger at" in result.output
    assert "Traceback" not in result.output


def test_status_says_what_in_flight_and_unsent_failed_records_are(
    clean_env: None, pg_schema: PgSchema
) -> None:
    async def make() -> None:
        ledger = await open_ledger(pg_schema.url(), "r1", command="run")
        await ledger.close()

    asyncio.run(make())
    asyncio.run(
        pg_schema.fetch(
            "INSERT INTO {s}.records (key, state, run_id, attempts, updated_at) VALUES "
            "('a', 'in_flight', 'r1', 0, 'x'), ('b', 'failed', 'r1', 0, 'x'), "
            "('c', 'failed', 'r1', 2, 'x')"
        )
    )
    result = CliRunner().invoke(cli_main, ["status", "--ledger", pg_schema.url()])
    assert "claimed, not settled" in result.output
    assert "(1 never sent: found not stored or released at a stop" in result.output
    shown = json.loads(
        CliRunner().invoke(cli_main, ["status", "--ledger", pg_schema.url(), "--json"]).output
    )
    assert (shown["failed"], shown["failed_unsent"], shown["in_flight"]) == (2, 1, 1)
    assert not shown["complete"]
    waited = CliRunner().invoke(cli_main, ["status", "--ledger", pg_schema.url(), "--wait", "0"])
    assert waited.exit_code == 1  # not complete: a record is still in flight


def test_the_progress_line_shows_duplicates_and_released_records() -> None:
    summary = Summary("run", "r1")
    summary.read, summary.sent, summary.skipped = 5004, 2752, 499
    summary.duplicate, summary.released = 1002, 751
    line = progress_line(Monitor(summary).snapshot(), 0.0)
    assert "skipped 499, duplicate 1002, released 751, " in line


def test_enqueue_says_published_and_no_ledger_counts(
    run_cli: Cli, stream: Stream, tmp_path: Path
) -> None:
    path = write_csv(tmp_path / "in.csv", make_rows(12))
    report = tmp_path / "enqueue.json"
    result = run_cli("enqueue", str(path), "--to", stream.publish_url(), "--report", str(report))
    assert result.exit_code == 0, result.output
    assert "enqueue: read 12, published 12, invalid 0" in result.output
    assert "skipped" not in result.output
    assert "sent earlier" not in result.output
    data = json.loads(report.read_text())
    assert data["published"] == 12
    assert "sent" not in data
    assert "skipped" not in data


async def test_a_late_renewal_is_said_as_it_happens() -> None:
    clock, ledger, lost = Clock(), Ledger(), list[str]()
    notices: list[str] = []
    lease = Lease(10.0, ledger.renew, on_lost=lost.append, notice=notices.append, clock=clock)
    ticks = 0

    async def tick(_: float) -> None:
        nonlocal ticks
        ticks += 1
        clock.now += 4.0 if ticks == 2 else 1.0  # one renewal comes 4 s after the one before
        if ticks == 4:
            ledger.answer = False  # then refused: the lease is lost, and keep() ends

    lease._sleep = tick
    await asyncio.wait_for(lease.keep(1.0), 5)
    late = [n for n in notices if "renewed late" in n]
    assert late == ["lease: renewed late, 4.0 s after the renewal before (every 1 s; the lease "
                    "is 10 s)"]  # fmt: skip
    assert notices[-1].startswith("lease lost: the ledger refused to renew it")


def test_failures_into_head_ends_quietly(run_cli: Cli, tmp_path: Path) -> None:
    rows = [dict(r, score="9") for r in make_rows(3000)]  # all invalid: 3,000 rows to list
    run_cli.run(str(write_csv(tmp_path / "bad.csv", rows)))
    command = [sys.executable, "-m", "pipeline", "failures", "--ledger", str(run_cli.ledger)]
    reader = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert reader.stdout is not None
    assert reader.stderr is not None
    first = reader.stdout.readline()  # `head -1`: read a line, then stop reading
    reader.stdout.close()
    errors = reader.stderr.read().decode()
    reader.stderr.close()
    assert reader.wait(60) == 0, errors
    assert first.startswith(b"assistant_id,")
    assert errors == ""


def test_the_share_done_counts_what_the_queue_still_holds() -> None:
    counts = {"sent": 600, "failed": 100, "in_flight": 50}
    view = FleetView(now=0.0, runs=[], counts=counts)
    shown = _result(view, "j", Depth("redis://q", backlog=1000, pending=250), 60.0)
    # 700 settled of 700 + 1,000 waiting + 250 pending (the 50 in flight among them).
    assert (shown["done_fraction"], shown["complete"]) == (round(700 / 1950, 4), False)
    empty = _result(view, "j", Depth("redis://q", backlog=0, pending=0), 60.0)
    assert not empty["complete"]  # 50 records still in flight
    settled = FleetView(now=0.0, runs=[], counts={"sent": 700})
    assert _result(settled, "j", Depth("redis://q", 0, 0), 60.0)["done_fraction"] == 1.0


def test_a_bad_job_label_fails_fast_naming_the_setting(run_cli: Cli, tmp_path: Path) -> None:
    path = write_csv(tmp_path / "in.csv", make_rows(2))
    result = run_cli.run(str(path), "--job", "two words")
    assert result.exit_code == 2
    assert "--job" in result.output
    assert "Traceback" not in result.output


def _fleet_run(**changes: object) -> FleetRun:
    run = FleetRun(
        run_id="r1", command="run", host="elsewhere", pid=1, consumer="w1", job="j",
        source=None, started_at="2026-12-01T00:00:00+00:00", finished_at=None,
        last_seen=1000.0, last_progress=1000.0, lease_until=1015.0, stop_requested=None,
        counts={"read": 10, "in_flight": 4}, summary=None, open_records=4,
    )  # fmt: skip
    return replace(run, **changes)  # type: ignore[arg-type]


def test_each_state_of_a_run_in_one_word_and_why() -> None:
    now = 1000.5
    assert judge(_fleet_run(), now, 60)[0] == "running"
    # Killed a moment ago: its lease still runs, but no heartbeat came. One state, not two.
    state, why = judge(_fleet_run(last_seen=995.0), 1000.0, 60)
    assert state == "stalled"
    assert "no heartbeat for 5 s" in why
    assert "runs out in 15 s" in why
    # Heartbeats go on, but nothing settles: stuck, not slow.
    moving = _fleet_run(last_seen=1100.0, last_progress=1000.0, lease_until=1115.0)
    state, why = judge(moving, 1100.5, 60)
    assert state == "stalled"
    assert "none settled for 100 s" in why
    assert judge(_fleet_run(stop_requested="asked"), now, 60)[0] == "stopping"
    state, why = judge(_fleet_run(lease_until=999.0), now, 60)
    assert state == "killed"
    assert "4 of its records await reconciliation" in why
    state, why = judge(_fleet_run(lease_until=999.0, open_records=0), now, 60)
    assert state == "killed"
    assert "none of its records is left uncertain" in why
    lost = {"aborted": "lease lost: no renewal reached the ledger for 3.1 s", "exit_code": 3}
    assert judge(_fleet_run(finished_at="x", summary=lost), now, 60)[0] == "lease lost"
    ended = {"exit_code": 0}
    assert judge(_fleet_run(finished_at="x", summary=ended), now, 60) == ("ended", "exit 0")
