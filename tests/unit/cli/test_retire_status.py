"""``retire`` closes what was dealt with; ``status`` shows it, the last runs and live ones."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli, make_rows, run_command, wait_for, write_csv

from pipeline.cli.history import collect
from pipeline.fake import FakeServer, FakeState, Faults
from pipeline.ledger import SqliteLedger

KNOWN = "aia_asst_test"


@pytest.fixture
def strict_cli(clean_env: None, tmp_path: Path) -> Iterator[Cli]:
    with FakeServer(FakeState(known_assistants={KNOWN}, faults=Faults(seed=5))) as server:
        yield Cli(server, tmp_path)


def status(cli: Cli) -> dict[str, Any]:
    result = cli("status", "--ledger", str(cli.ledger), "--json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.stdout)
    return data


def problems(cli: Cli, tmp_path: Path) -> Path:
    rows = make_rows(3) + make_rows(2, assistant="aia_asst_gone", prefix="g")
    rows += [
        dict(make_rows(1, prefix="x")[0], score="9"),
        dict(make_rows(1, prefix="y")[0], score="-1"),
    ]
    path = write_csv(tmp_path / "night.csv", rows)
    assert cli.run(str(path)).exit_code == 1
    return path


def retire(cli: Cli, *args: str) -> Any:
    return cli("retire", "--ledger", str(cli.ledger), *args)


def test_retire_is_safe_by_default_and_dry_run_changes_nothing(
    strict_cli: Cli, tmp_path: Path
) -> None:
    problems(strict_cli, tmp_path)
    before = strict_cli.ledger_rows()

    nothing = retire(strict_cli, "--reason", "oops")
    dry = retire(strict_cli, "--state", "invalid", "--reason", "known bad", "--dry-run")

    assert nothing.exit_code == 2
    assert "say what to retire" in nothing.stderr
    assert dry.exit_code == 0
    assert "would retire 2 records" in dry.stdout
    assert dry.stdout.count("night.csv:") == 2
    assert "score:" in dry.stdout
    assert strict_cli.ledger_rows() == before


def test_retired_records_leave_the_counts_replay_and_the_exit_code(
    strict_cli: Cli, tmp_path: Path
) -> None:
    problems(strict_cli, tmp_path)
    assert strict_cli.replay().exit_code == 0  # the 404s are left out: nothing to replay

    by_state = retire(strict_cli, "--state", "invalid", "--reason", "known bad rows")
    forced = strict_cli.replay("--include-rejected")
    by_prefix = retire(strict_cli, "--all", "--location-prefix", str(tmp_path), "--reason", "gone")

    assert by_state.exit_code == 0
    assert "retired 2 records (known bad rows)" in by_state.stdout
    assert forced.exit_code == 1  # the assistant is still gone
    assert by_prefix.exit_code == 0
    assert "retired 2 records" in by_prefix.stdout
    counts = status(strict_cli)
    assert (counts["sent"], counts["failed"], counts["invalid"], counts["retired"]) == (3, 0, 0, 4)
    assert counts["runs"][0]["command"] == "retire"
    replay = strict_cli.replay("--include-rejected")
    assert replay.exit_code == 0
    assert "read 0" in replay.stdout
    text = strict_cli("status", "--ledger", str(strict_cli.ledger))
    assert "retired" in text.stdout
    assert "retire" in text.stdout
    assert "exit 0" in text.stdout
    assert strict_cli.server.state.duplicates() == {}


def test_a_retired_record_that_comes_again_is_handled_anew(strict_cli: Cli, tmp_path: Path) -> None:
    path = problems(strict_cli, tmp_path)
    retire(strict_cli, "--all", "--reason", "later")
    text = path.read_text().replace(",9,", ",0.9,")  # one invalid row fixed in place
    path.write_text(text)

    again = strict_cli.run(str(path))

    assert again.exit_code == 1  # still one invalid row and two 404s in the file
    counts = status(strict_cli)
    assert (counts["sent"], counts["invalid"], counts["failed"], counts["retired"]) == (4, 1, 2, 0)
    assert strict_cli.server.state.stored_count == 4
    assert strict_cli.server.state.duplicates() == {}


async def test_status_tells_a_live_run_from_one_whose_heartbeat_stopped(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    ledger = await SqliteLedger.open(str(path), "live", command="run")
    try:
        await ledger.heartbeat()
        live = (await collect(str(path), 5))["runs"][0]
        db = sqlite3.connect(path)
        db.execute("UPDATE runs SET last_seen = 1000 WHERE run_id = 'live'")
        db.commit()
        db.close()
        stale = (await collect(str(path), 5))["runs"][0]
    finally:
        await ledger.close()
    finished = (await collect(str(path), 5))["runs"][0]
    assert (live["state"], live["alive"], live["pid"]) == ("running", True, os.getpid())
    assert (stale["state"], stale["alive"]) == ("killed", False)
    assert finished["state"] == "ended"


def test_status_of_a_real_run_while_it_runs_and_after_kill_9(
    clean_env: None, tmp_path: Path
) -> None:
    state = FakeState(faults=Faults(latency_ms=100, seed=2))
    with FakeServer(state) as server:
        ledger = tmp_path / "ledger.sqlite3"
        source = write_csv(tmp_path / "a.csv", make_rows(400))
        cli = Cli(server, tmp_path)
        proc = subprocess.Popen(
            run_command(server, str(source), ledger, "--concurrency", "1"),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: server.state.stored_count > 0, proc, "the first record stored")
            running = status(cli)["runs"][0]
            proc.kill()
            proc.wait()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        killed = status(cli)["runs"][0]
    assert (running["state"], running["pid"]) == ("running", proc.pid)
    assert running["exit_code"] is None
    assert (killed["state"], killed["alive"]) == ("killed", False)


def test_retire_is_refused_while_a_run_holds_the_ledger(strict_cli: Cli, tmp_path: Path) -> None:
    import fcntl

    problems(strict_cli, tmp_path)
    before = strict_cli.ledger_rows()
    with open(strict_cli.ledger, "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        result = retire(strict_cli, "--all", "--reason", "x")
        # Reading is never refused: failures and status take no lock.
        listed = strict_cli("failures", "--ledger", str(strict_cli.ledger))
    assert result.exit_code == 3
    assert "in use by another run" in result.stderr
    assert listed.exit_code == 0
    assert listed.stdout.count("\n") == 5
    assert strict_cli.ledger_rows() == before


def test_status_finds_the_queue_the_runs_read_on_every_broker() -> None:
    from types import SimpleNamespace

    from pipeline.cli.history import _queue_of

    def view(*sources: str) -> Any:
        return SimpleNamespace(runs=[SimpleNamespace(source=s) for s in sources])

    redis = "redis://127.0.0.1:6379/0?stream=s&group=g&consumer=w1"
    nats = "nats://127.0.0.1:4222?stream=s&consumer=senders"  # the durable all workers share
    sqs = "sqs://q?region=us-east-1"
    assert _queue_of(view(redis)) == "redis://127.0.0.1:6379/0?stream=s&group=g"
    assert _queue_of(view(nats)) == nats
    assert _queue_of(view(sqs)) == sqs
    assert _queue_of(view("in.csv", "amqp://u:***@h/v?queue=q")) is None  # masked: --queue
    assert _queue_of(view("kafka://h/t")) is None  # no such broker here
