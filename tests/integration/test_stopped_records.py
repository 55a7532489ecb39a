"""Issue 23, items 4 and 8: records not sent because the run stopped (a signal, a refused
credential) are counted as stopped, not failed, in the summary, the report and the display;
the ledger holds them as "not sent" (no HTTP status), so the rerun and replay send them."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest
from conftest import (
    Cli,
    assert_counts_add_up,
    assert_exactly_once,
    make_rows,
    run_command,
    wait_for,
    write_csv,
)

from pipeline.fake import FakeServer, FakeState, Faults


def test_records_stopped_by_a_signal_are_not_failures(clean_env: None, tmp_path: Path) -> None:
    rows = make_rows(1000)
    source = str(write_csv(tmp_path / "a.csv", rows))
    ledger, report = tmp_path / "ledger.sqlite3", tmp_path / "report.json"
    state = FakeState(faults=Faults(latency_ms=50))
    with FakeServer(state) as server:
        command = run_command(server, source, ledger, "--concurrency", "4")
        proc = subprocess.Popen(
            [*command, "--report", str(report)],
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ,
        )
        wait_for(lambda: state.stored_count >= 20, proc, "the run to get going")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)

        summary = json.loads(report.read_text())
        assert proc.returncode == 3, err
        assert summary["failed"] == 0, out
        assert summary["stopped_records"] > 0, json.dumps(summary)
        assert f"stopped {summary['stopped_records']} (not sent)" in out
        assert "failed: not sent" not in out
        assert_counts_add_up(summary)

        state.update_faults({"latency_ms": 0.0})
        rerun = subprocess.run(command, capture_output=True, env=os.environ, check=False)
        assert rerun.returncode == 0
        assert_exactly_once(server, rows)


@pytest.fixture
def wrong_token(clean_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "not-the-token")


def test_a_refused_credential_stops_the_records_and_the_rerun_sends_them(
    wrong_token: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rows = make_rows(40)
    source = str(write_csv(tmp_path / "a.csv", rows))
    state = FakeState(auth_token="the-token")
    with FakeServer(state) as server:
        cli = Cli(server, tmp_path)
        # --new-ledger send: straight to the POSTs (the lookup would meet the 401 first).
        refused = cli.run(source, "--new-ledger", "send", "--report", str(tmp_path / "r.json"))

        report = cli.report("r.json")
        assert refused.exit_code == 3
        assert report["failed"] == 0
        assert report["stopped_records"] == report["read"] > 0
        assert "replay sends them" not in refused.stdout.replace("as does replay", "")
        with sqlite3.connect(cli.ledger) as db:
            statuses = {row[0] for row in db.execute("SELECT http_status FROM records")}
        assert statuses == {None}  # not a 4xx of the record: replay takes them

        replay = cli("replay", "--ledger", str(cli.ledger), "--dry-run")
        assert f"{report['read']}" in replay.stdout
        assert replay.exit_code == 0

        monkeypatch.setenv("TWILIO_AUTH_TOKEN", "the-token")
        assert cli.run(source).exit_code == 0
        assert_exactly_once(server, rows)


def test_a_refused_credential_at_the_lookup_claims_nothing(
    wrong_token: None, tmp_path: Path
) -> None:
    source = str(write_csv(tmp_path / "a.csv", make_rows(10)))
    with FakeServer(FakeState(auth_token="the-token")) as server:
        cli = Cli(server, tmp_path)
        result = cli.run(source, "--report", str(tmp_path / "r.json"))

    assert result.exit_code == 3
    assert "authentication refused" in result.stdout + result.stderr
    assert cli.report("r.json")["read"] == 0
