"""The --report JSON (and the metrics textfile) is written however a run ends: finished,
aborted by a 401 or an outage, interrupted by a signal, cut off, the ledger unusable at the
start or failing mid-run, or an internal error."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    Cli,
    assert_counts_add_up,
    make_rows,
    run_command,
    wait_for,
    write_csv,
)

from pipeline.engine.stages import Stages
from pipeline.errors import LedgerError
from pipeline.fake import FakeServer, FakeState, Faults
from pipeline.ledger.sqlite.ledger import SqliteLedger


def _run(run_cli: Cli, tmp_path: Path, *extra: str, rows: int = 30) -> tuple[int, str]:
    source = write_csv(tmp_path / "in.csv", make_rows(rows))
    result = run_cli.run(str(source), "--report", str(tmp_path / "report.json"), *extra)
    return result.exit_code, result.output


def _report(tmp_path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((tmp_path / "report.json").read_text())
    return data


def test_an_authentication_abort_writes_the_report(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "wrong")

    code, output = _run(run_cli, tmp_path)

    assert code == 3, output
    report = _report(tmp_path)
    assert report["aborted"].startswith("authentication refused by the API")
    assert report["exit_code"] == 3
    assert report["sent"] == 0


def test_an_outage_writes_the_report(run_cli: Cli, tmp_path: Path) -> None:
    run_cli.server.state.update_faults({"fail_rate": 1.0})

    code, output = _run(run_cli, tmp_path, "--max-outage", "0.2", "--max-attempts", "100")

    assert code == 3, output
    report = _report(tmp_path)
    assert "the API has failed every request" in report["aborted"], report["aborted"]
    assert report["exit_code"] == 3


def test_an_unusable_ledger_writes_the_report(run_cli: Cli, tmp_path: Path) -> None:
    run_cli.ledger.write_bytes(b"this is not a SQLite database" * 200)

    code, output = _run(run_cli, tmp_path)

    assert code == 3, output
    report = _report(tmp_path)
    assert "file is not a database" in report["aborted"]
    assert report["exit_code"] == 3
    assert report["read"] == 0
    assert run_cli.server.state.posts_received == 0


def test_a_ledger_failing_mid_run_writes_the_report(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(self: SqliteLedger, outcomes: object) -> None:
        raise LedgerError("ledger: disk I/O error")

    monkeypatch.setattr(SqliteLedger, "record", broken)

    code, output = _run(run_cli, tmp_path)

    assert code == 3, output
    assert _report(tmp_path)["aborted"] == "ledger: disk I/O error"


def test_an_internal_error_writes_the_report(
    run_cli: Cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def bug(self: Stages, batches: object) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(Stages, "run", bug)

    code, output = _run(run_cli, tmp_path)

    assert code == 3
    assert "internal error: RuntimeError: a bug" in output
    report = _report(tmp_path)
    assert report["aborted"] == "internal error: RuntimeError: a bug"
    assert report["exit_code"] == 3


@pytest.mark.parametrize("grace", ["60", "0"])
def test_a_signal_writes_the_report_also_when_requests_are_cut_off(
    clean_env: None, tmp_path: Path, grace: str
) -> None:
    rows = make_rows(2000)
    source = str(write_csv(tmp_path / "a.csv", rows))
    ledger, report = tmp_path / "ledger.sqlite3", tmp_path / "report.json"
    state = FakeState(faults=Faults(latency_ms=300))
    with FakeServer(state) as server:
        command = run_command(server, source, ledger, "--concurrency", "8", "--grace", grace)
        proc = subprocess.Popen(
            [*command, "--report", str(report)],
            text=True,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=os.environ,
        )
        wait_for(lambda: state.stored_count >= 8, proc, "the run to get going")
        assert proc.poll() is None, "the run ended before it could be interrupted"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)

    assert proc.returncode == 3, err
    summary = json.loads(report.read_text())
    assert summary["aborted"].startswith("interrupted by SIGTERM")
    assert summary["exit_code"] == 3
    if grace == "0":  # cut off at once: what was on the wire stays in flight
        assert "cut off" in summary["aborted"]
        assert summary["in_flight"] > 0
    else:
        assert_counts_add_up(summary)
